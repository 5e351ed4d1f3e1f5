"""Activation taps: the residual stream leaving decoder layer L at image tokens and the last token.

    tap = ResidualTap(layer=2).attach(backend)
    backend.prob_yes([frame])
    tap.latest       # (n_tokens × d): 81 image tokens then the last token
    tap.positions    # (n_tokens,) their positions in the sequence

The captured tensor equals `output_hidden_states[L + 1]` at those positions for L < n_layers - 1
(transformers replaces the last entry of `hidden_states` by the final-norm output). The tap's
hook is appended after interventions (which are prepended), so it records the stream as
interventions on layer L left it. Forwards without image tokens (cached decoding steps of
`generate`) are not recorded: `latest` keeps the prompt's forward.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.hooks import HookHandle, ModelView, check_layer, output_tensor


class ResidualTap(HookHandle):
    """Records layer L's output at the image-token positions (and the last token).

    Attributes after a forward (None before the first one):
        latest: (n_tokens × d) tensor of the last batch row (detached, on the model's device).
        positions: (n_tokens,) LongTensor, positions of `latest` in that row's sequence.
        latest_batch: (B × n_tokens × d) for every row of the last forward.
        positions_batch: (B × n_tokens) LongTensor.
        n_image_tokens: number of image tokens per row (81 per 384×384 image for SmolVLM).
        calls: number of recorded forwards.
    """

    def __init__(self, layer: int, include_last: bool = True, to_float32: bool = True) -> None:
        """Args:
        layer: decoder layer index L (0-based; output of layer L = hidden_states[L + 1]).
        include_last: also record the last token (the next-token position).
        to_float32: store float32 copies regardless of the model's dtype.
        """
        super().__init__()
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r}: expected an int")
        self.layer = layer
        self.include_last = include_last
        self.to_float32 = to_float32
        self.clear()

    def clear(self) -> None:
        """Forget the recorded activations."""
        self.latest: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.latest_batch: torch.Tensor | None = None
        self.positions_batch: torch.Tensor | None = None
        self.n_image_tokens = 0
        self.calls = 0

    def _validate(self, view: ModelView) -> None:
        check_layer(self.layer, len(view.layers))

    def _install(self, view: ModelView) -> list[torch.utils.hooks.RemovableHandle]:
        return [view.layers[self.layer].register_forward_hook(self._hook)]

    def _hook(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        ids = self._input_ids
        if ids is None:
            return
        image = ids == self.view.image_token_id
        counts = image.sum(dim=1)
        if int(counts.max()) == 0:
            return
        if int(counts.min()) != int(counts.max()):
            raise ValueError(
                f"rows of this batch hold different numbers of image tokens ({counts.tolist()}): "
                "the tap needs the same number in every row"
            )
        batch, length = ids.shape
        n_img = int(counts[0])
        pos = image.nonzero()[:, 1].view(batch, n_img)
        if self.include_last:
            last = torch.full((batch, 1), length - 1, dtype=pos.dtype, device=pos.device)
            pos = torch.cat([pos, last], dim=1)
        hidden = output_tensor(output).detach()
        rows = torch.arange(batch, device=hidden.device).unsqueeze(1)
        acts = hidden[rows, pos.to(hidden.device)]
        if self.to_float32:
            acts = acts.float()
        self.latest_batch = acts
        self.positions_batch = pos
        self.latest = acts[-1]
        self.positions = pos[-1]
        self.n_image_tokens = n_img
        self.calls += 1

    @property
    def image_activations(self) -> torch.Tensor | None:
        """(n_image_tokens × d) of the last row: `latest` without the last token."""
        return None if self.latest is None else self.latest[: self.n_image_tokens]

    def pooled(self) -> torch.Tensor | None:
        """(B × d) mean over image tokens of every row of the last forward."""
        if self.latest_batch is None:
            return None
        return self.latest_batch[:, : self.n_image_tokens].mean(dim=1)
