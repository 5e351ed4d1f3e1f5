"""Interventions on decoder layers: removable hooks that leave no trace once removed.

Each intervention is built from its parameters, then attached to a VLMBackend (or a bare
model); `attach` returns the intervention itself, which is a context manager and has `remove()`:

    with AddVector(direction, scale=4.0, layer=2, positions="image").attach(backend):
        p = backend.prob_yes([frame])
    # hooks removed: the model computes exactly what it computed before

- AddVector: h ← h + scale · vector at the chosen positions (difference-of-means steering,
  TA2-style attacks). Scale 0 is an exact no-op.
- SAEFeatureSteering: encode h with an SAE, set one latent to `magnitude`, decode through a
  Matryoshka prefix; mode "delta" adds decode(z') − decode(z) (keeps the SAE's error term),
  mode "replace" sets h ← decode(z') as the reference protocol does.
- NeuronOverride (agents/neurons.py): clamps inputs of `mlp.down_proj` (Häon et al. 2025).

Residual-stream hooks are registered with `prepend=True`, so they run before transformers'
own output-recording hooks (the change shows in `output_hidden_states`) and before taps.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from agents.hooks import (
    HookHandle,
    ModelView,
    PositionSpec,
    check_layer,
    check_positions,
    output_tensor,
    position_mask,
    replace_output,
)


class ResidualIntervention(HookHandle):
    """An intervention that edits the output of one decoder layer at chosen positions."""

    def __init__(self, layer: int, positions: PositionSpec) -> None:
        super().__init__()
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r}: expected an int")
        self.layer = layer
        self.positions = check_positions(positions)

    def _validate(self, view: ModelView) -> None:
        check_layer(self.layer, len(view.layers))

    def _install(self, view: ModelView) -> list[torch.utils.hooks.RemovableHandle]:
        return [view.layers[self.layer].register_forward_hook(self._hook, prepend=True)]

    def _hook(self, module: torch.nn.Module, args: tuple, output: Any) -> Any:
        hidden = output_tensor(output)
        mask = position_mask(self.positions, self._input_ids, self.view.image_token_id,
                             tuple(hidden.shape[:2]), self.view.groups).to(hidden.device)  # fmt: skip
        if not bool(mask.any()):
            return None
        selected = hidden[mask]
        edited = self._edit(selected)
        if edited is None:
            return None
        hidden = hidden.clone()
        hidden[mask] = edited.to(hidden.dtype)
        return replace_output(output, hidden)

    def _edit(self, selected: torch.Tensor) -> torch.Tensor | None:
        """Return the new (n × d) values for the selected positions, or None for no change."""
        raise NotImplementedError

    @torch.no_grad()
    def edit(self, hidden: torch.Tensor) -> torch.Tensor:
        """What this intervention makes of residual vectors `hidden` (n × d) at its layer, with
        no model attached: for offline analysis, e.g. how far a steering moves activations."""
        if hidden.ndim != 2:
            raise ValueError(f"hidden must be (n, d), got shape {tuple(hidden.shape)}")
        edited = self._edit(hidden)
        return hidden.clone() if edited is None else edited


class AddVector(ResidualIntervention):
    """h ← h + scale · vector at `positions` of decoder layer `layer`'s output."""

    def __init__(
        self,
        vector: torch.Tensor,
        scale: float = 1.0,
        layer: int = 0,
        positions: PositionSpec = "image",
    ) -> None:
        """Args:
        vector: (d,) direction in the residual stream (e.g. mean(fragile) − mean(rigid)).
        scale: multiplier; 0 makes the intervention an exact no-op.
        layer: decoder layer index whose output is edited.
        positions: "image" | "last" | "image+last" | "all" | indices | (B×T or T) bool mask.
        """
        super().__init__(layer, positions)
        vector = torch.as_tensor(vector).detach()
        if vector.dim() != 1:
            raise ValueError(f"vector of shape {tuple(vector.shape)}: expected a 1-D (d,) vector")
        if not math.isfinite(float(scale)):
            raise ValueError(f"scale={scale!r}: must be finite")
        self.vector = vector
        self.scale = float(scale)

    def _validate(self, view: ModelView) -> None:
        super()._validate(view)
        if self.vector.numel() != view.hidden_size:
            raise ValueError(
                f"vector has {self.vector.numel()} elements but the residual stream of layer "
                f"{self.layer} has {view.hidden_size}"
            )

    def _edit(self, selected: torch.Tensor) -> torch.Tensor | None:
        if self.scale == 0.0:
            return None
        delta = self.scale * self.vector.to(device=selected.device, dtype=torch.float32)
        return (selected.float() + delta).to(selected.dtype)


class SAELike(Protocol):
    """What SAEFeatureSteering needs from a sparse autoencoder (e.g. sae.MatryoshkaSAE)."""

    n_latents: int
    d_in: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n × d_in) activations → (n × n_latents) latents."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n × n_latents) latents → (n × d_in) reconstruction with every latent."""

    def decode_prefix(self, z: torch.Tensor, m: int) -> torch.Tensor:
        """Reconstruction from the first `m` latents only (a Matryoshka prefix)."""


SAE_MODES = ("delta", "replace")


class SAEFeatureSteering(ResidualIntervention):
    """Steer one SAE feature: set latent `feature` to `magnitude` and decode.

    mode "delta" (default): h ← h + decode_prefix(z', m) − decode_prefix(z, m), i.e. only the
    decoded change is added and the SAE's reconstruction error stays in the stream.
    mode "replace": h ← decode_prefix(z', m), the reference protocol (the coarse-prefix
    reconstruction with the feature set replaces the hidden state).
    With `prefix=None` the full dictionary (`decode`) is used.
    """

    def __init__(
        self,
        sae: SAELike,
        feature: int,
        magnitude: float,
        prefix: int | None = None,
        mode: str = "delta",
        layer: int = 0,
        positions: PositionSpec = "image",
    ) -> None:
        """Args:
        sae: object with encode(x), decode(z), decode_prefix(z, m), n_latents, d_in.
        feature: latent index, 0 <= feature < prefix (or n_latents without a prefix).
        magnitude: value the latent is set to.
        prefix: Matryoshka prefix size m (decode through the first m latents), or None.
        mode: "delta" | "replace".
        layer: decoder layer index whose output is edited.
        positions: as in AddVector.
        """
        super().__init__(layer, positions)
        for attr in ("encode", "decode", "decode_prefix", "n_latents", "d_in"):
            if not hasattr(sae, attr):
                raise ValueError(f"sae of type {type(sae).__name__} has no {attr!r}")
        n = int(sae.n_latents)
        if prefix is not None and (isinstance(prefix, bool) or not 1 <= int(prefix) <= n):
            raise ValueError(f"prefix={prefix!r}: valid prefixes are 1..{n} (or None)")
        limit = n if prefix is None else int(prefix)
        if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < limit:
            where = f"prefix {prefix}" if prefix is not None else f"{n} latents"
            raise ValueError(f"feature={feature!r}: valid features are 0..{limit - 1} ({where})")
        if mode not in SAE_MODES:
            raise ValueError(f"mode={mode!r}: expected one of {SAE_MODES}")
        if not math.isfinite(float(magnitude)):
            raise ValueError(f"magnitude={magnitude!r}: must be finite")
        self.sae = sae
        self.feature = feature
        self.magnitude = float(magnitude)
        self.prefix = None if prefix is None else int(prefix)
        self.mode = mode

    def _validate(self, view: ModelView) -> None:
        super()._validate(view)
        if int(self.sae.d_in) != view.hidden_size:
            raise ValueError(
                f"sae.d_in={self.sae.d_in} but the residual stream of layer {self.layer} "
                f"has {view.hidden_size} dimensions"
            )

    def _sae_place(self) -> tuple[torch.device | None, torch.dtype]:
        params = getattr(self.sae, "parameters", None)
        if callable(params):
            first = next(iter(params()), None)
            if first is not None:
                return first.device, first.dtype
        return None, torch.float32

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.prefix is None:
            return self.sae.decode(z)
        return self.sae.decode_prefix(z, self.prefix)

    @torch.no_grad()
    def _edit(self, selected: torch.Tensor) -> torch.Tensor:
        device, dtype = self._sae_place()
        x = selected.to(device=device or selected.device, dtype=dtype)
        z = self.sae.encode(x)
        z_new = z.clone()
        z_new[:, self.feature] = self.magnitude
        steered = self._decode(z_new)
        if self.mode == "replace":
            out = steered
        else:
            out = x + (steered - self._decode(z))
        return out.to(device=selected.device, dtype=selected.dtype)


class NeuronOverride(HookHandle):
    """Clamp FFN neurons: inputs of layer `layer`'s `mlp.down_proj` at `neuron_ids` ← `value`.

    A forward pre-hook on `down_proj` (Häon et al. 2025): the override adds a residual shift
    sum_i (value − a_i) · v_i along the neurons' value vectors. An empty cluster is an exact
    no-op.
    """

    def __init__(
        self,
        layer: int,
        neuron_ids: list[int] | torch.Tensor,
        value: float,
        positions: PositionSpec = "all",
    ) -> None:
        """Args:
        layer: decoder layer index.
        neuron_ids: FFN neuron indices (0 <= id < intermediate size); may be empty.
        value: the activation the neurons are clamped to.
        positions: token positions where the clamp applies (default all).
        """
        super().__init__()
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r}: expected an int")
        ids = torch.as_tensor(neuron_ids, dtype=torch.long).flatten()
        if not math.isfinite(float(value)):
            raise ValueError(f"value={value!r}: must be finite")
        self.layer = layer
        self.neuron_ids = ids
        self.value = float(value)
        self.positions = check_positions(positions)

    def _down_proj(self, view: ModelView) -> torch.nn.Module:
        layer = view.layer(self.layer)
        down = getattr(getattr(layer, "mlp", None), "down_proj", None)
        if down is None:
            raise ValueError(f"decoder layer {self.layer} has no mlp.down_proj to override")
        return down

    def _validate(self, view: ModelView) -> None:
        n = int(self._down_proj(view).in_features)
        if self.neuron_ids.numel() and not (
            0 <= int(self.neuron_ids.min()) and int(self.neuron_ids.max()) < n
        ):
            bad = [i for i in self.neuron_ids.tolist() if not 0 <= i < n]
            raise ValueError(
                f"neuron ids {bad[:10]}: valid neurons of layer {self.layer} are 0..{n - 1}"
            )

    def _install(self, view: ModelView) -> list[torch.utils.hooks.RemovableHandle]:
        return [self._down_proj(view).register_forward_pre_hook(self._hook, prepend=True)]

    def _hook(self, module: torch.nn.Module, args: tuple) -> tuple | None:
        if self.neuron_ids.numel() == 0:
            return None
        x = args[0]
        mask = position_mask(self.positions, self._input_ids, self.view.image_token_id,
                             tuple(x.shape[:2]), self.view.groups).to(x.device)  # fmt: skip
        if not bool(mask.any()):
            return None
        x = x.clone()
        ids = self.neuron_ids.to(x.device)
        rows = x[mask]
        rows[:, ids] = self.value
        x[mask] = rows
        return (x, *args[1:])
