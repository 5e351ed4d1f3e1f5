"""Shared machinery of taps and interventions: finding layers, tracking token positions, handles.

A hook on a decoder layer does not see `input_ids`, so every tap or intervention also puts a
forward pre-hook on the top-level model that records the `input_ids` of the forward in flight;
token positions ("image", "last", "all", explicit indices) are resolved from them.

Named groups of a VLA prompt ("text", "state", "slots") are read from the tokenizer: "state" is
the state tokens (`<st_...>`), "slots" the output slots (`<slot_...>`), "text" every ordinary
token of the prompt (the instruction or question and the chat template's words: neither image,
special, padding, nor a VLA token). A model without a tokenizer has no groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from agents.backend import VLMBackend, find_decoder_layers, image_token_id
from agents.token_groups import GROUP_PREFIXES, token_groups

#: Accepted position specs: a name, explicit indices (negative counts from the end), or a mask.
PositionSpec = str | Sequence[int] | torch.Tensor
POSITION_NAMES = ("image", "last", "image+last", "all", "text", "state", "slots")


class ModelView:
    """The parts of a VLM that hooks need: top-level model, decoder layers, image token id.

    A backend that is not a VLMBackend offers them through `hook_view()` → (the module whose
    forward receives `input_ids`, its decoder layers), as agents.pi0_model.PI0Backend does."""

    def __init__(self, target: VLMBackend | torch.nn.Module, processor: Any = None) -> None:
        if isinstance(target, VLMBackend):
            self.model = target.model
            self.layers = target.layers
            self.image_token_id = target.image_token_id
            self.groups = target.token_groups()
        elif hasattr(target, "hook_view"):  # a backend that is not a VLM (agents.pi0_model)
            self.model, self.layers = target.hook_view()
            self.image_token_id = target.image_token_id
            self.groups = target.token_groups()
        elif isinstance(target, torch.nn.Module):
            self.model = target
            self.layers = find_decoder_layers(target)
            self.image_token_id = image_token_id(target, processor)
            tok = getattr(processor, "tokenizer", processor)
            self.groups = token_groups(tok) if hasattr(tok, "get_vocab") else {}
        else:
            raise ValueError(
                f"target of type {type(target).__name__}: expected a VLMBackend or a torch model"
            )
        cfg = getattr(self.model.config, "text_config", self.model.config)
        self.hidden_size = int(cfg.hidden_size)

    def layer(self, index: int) -> torch.nn.Module:
        """Decoder layer `index`; ValueError naming the valid range otherwise."""
        return self.layers[check_layer(index, len(self.layers))]


def check_layer(index: int, n_layers: int) -> int:
    """Validate a decoder layer index against 0..n_layers-1."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_layers:
        raise ValueError(
            f"layer={index!r}: valid layers are 0..{n_layers - 1} ({n_layers} decoder layers)"
        )
    return index


def check_positions(spec: PositionSpec) -> PositionSpec:
    """Validate a position spec early (names and index types), returning it unchanged."""
    if isinstance(spec, str):
        if spec not in POSITION_NAMES:
            raise ValueError(f"positions={spec!r}: expected one of {POSITION_NAMES} or indices")
        return spec
    if torch.is_tensor(spec):
        if spec.dtype not in (torch.bool, torch.long, torch.int32, torch.int64):
            raise ValueError(f"positions tensor of dtype {spec.dtype}: expected bool or integer")
        return spec
    try:
        values = [int(p) for p in spec]
    except TypeError as exc:
        raise ValueError(f"positions={spec!r}: expected a name, indices or a mask") from exc
    if any(int(p) != p for p in spec):
        raise ValueError(f"positions={spec!r}: indices must be integers")
    return values


def group_mask(
    spec: str, input_ids: torch.Tensor | None, image_token: int, groups: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mask of a named group ("text", "state", "slots") of the tokens in `input_ids`."""
    if input_ids is None:
        raise ValueError(f"positions={spec!r} needs input_ids; this forward got inputs_embeds only")
    if not groups:
        raise ValueError(f"positions={spec!r} needs the model's tokenizer: attach to a VLMBackend")
    ids = input_ids.cpu()
    if spec == "text":
        return ~torch.isin(ids, groups["not_text"]) & (ids != image_token)
    found = torch.isin(ids, groups[spec])
    if not bool(found.any()):
        raise ValueError(
            f"positions={spec!r}: this prompt has no {spec} tokens ({GROUP_PREFIXES[spec]}...): "
            "only a VLA prompt has them"
        )
    return found


def position_mask(
    spec: PositionSpec,
    input_ids: torch.Tensor | None,
    image_token: int,
    shape: tuple[int, int],
    groups: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Boolean mask (B × T) of the positions `spec` selects in a forward of `shape` (B, T);
    `groups`: token_groups of the model's tokenizer, for "text", "state" and "slots"."""
    batch, length = shape
    if isinstance(spec, str) and spec in ("text", "state", "slots"):
        return group_mask(spec, input_ids, image_token, groups or {})
    if isinstance(spec, str):
        if spec == "all":
            return torch.ones(batch, length, dtype=torch.bool)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        if spec in ("last", "image+last"):
            mask[:, -1] = True
        if spec in ("image", "image+last"):
            if input_ids is None:
                raise ValueError(
                    f"positions={spec!r} needs input_ids; this forward got inputs_embeds only"
                )
            mask |= (input_ids == image_token).cpu()
        return mask
    if torch.is_tensor(spec) and spec.dtype == torch.bool:
        mask = spec.cpu()
        if mask.dim() == 1:
            mask = mask.unsqueeze(0).expand(batch, -1)
        if tuple(mask.shape) != (batch, length):
            raise ValueError(f"position mask of shape {tuple(mask.shape)}: forward is {shape}")
        return mask
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for p in [int(p) for p in spec]:
        if not -length <= p < length:
            raise ValueError(f"position {p}: sequence length is {length}")
        mask[:, p] = True
    return mask


def replace_output(output: Any, hidden: torch.Tensor) -> Any:
    """Put a modified hidden-state tensor back where a layer returned it (tensor or tuple)."""
    if torch.is_tensor(output):
        return hidden
    return (hidden, *output[1:])


def output_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder layer's output (tensor or tuple)."""
    return output if torch.is_tensor(output) else output[0]


class HookHandle:
    """Base of taps and interventions: attach(target) -> self, remove(), a context manager.

    Subclasses implement `_install(view)` returning a list of torch hook handles. Removing
    detaches every hook, so the model is exactly as before.
    """

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._input_ids: torch.Tensor | None = None
        self.view: ModelView | None = None

    @property
    def active(self) -> bool:
        """True while attached to a model."""
        return bool(self._handles)

    def attach(self, target: VLMBackend | torch.nn.Module) -> HookHandle:
        """Install the hooks on `target` (a VLMBackend or a model); returns self."""
        if self._handles:
            raise ValueError(f"{type(self).__name__} is already attached; remove() it first")
        view = ModelView(target)
        self._validate(view)
        self.view = view
        self._handles.append(
            view.model.register_forward_pre_hook(self._record_ids, with_kwargs=True)
        )
        try:
            self._handles.extend(self._install(view))
        except Exception:
            self.remove()  # nothing of a failed attach stays on the model
            raise
        return self

    def remove(self) -> None:
        """Remove every hook; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._input_ids = None

    def __enter__(self) -> HookHandle:
        if not self._handles:
            raise ValueError(f"{type(self).__name__}: call attach(model) before `with`")
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _record_ids(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args and torch.is_tensor(args[0]) and not args[0].is_floating_point():
            ids = args[0]
        self._input_ids = ids

    def _validate(self, view: ModelView) -> None:
        """Check parameters against the model before anything is installed."""

    def _install(self, view: ModelView) -> list[torch.utils.hooks.RemovableHandle]:
        raise NotImplementedError
