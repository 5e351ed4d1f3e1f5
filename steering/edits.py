"""The edits steering methods return: residual maps, weight edits, and stacks of both.

Each is attached to a VLMBackend (or a bare model) with `attach(target)` and undone with
`remove()` (or as a context manager), leaving the model bit-identical:

- ResidualMap: h ← f(h) at chosen positions of one decoder layer's output (a hook, like
  agents.interventions.AddVector, which methods that only add a vector use directly).
- WeightEdit: W ← W + ΔW on one parameter of one decoder layer, in place; `remove` copies the
  saved original back, so the weights are restored bit for bit (not W + ΔW − ΔW).
- EditStack: several edits attached together and removed together (in reverse order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from agents.hooks import ModelView, PositionSpec, check_layer
from agents.interventions import ResidualIntervention


class ResidualMap(ResidualIntervention):
    """h ← fn(h) for the (n × d) residual rows at `positions` of decoder layer `layer`'s output."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        layer: int,
        positions: PositionSpec = "image",
    ) -> None:
        """Args:
        fn: maps (n × d) float32 rows to (n × d) rows (pure: no state between calls).
        layer: decoder layer index whose output is edited.
        positions: as in agents.interventions.AddVector.
        """
        super().__init__(layer, positions)
        self.fn = fn

    @torch.no_grad()
    def _edit(self, selected: torch.Tensor) -> torch.Tensor:
        return self.fn(selected.float()).to(selected.dtype)


class WeightEdit:
    """W ← W + delta for the parameter at `path` (e.g. "mlp.down_proj.weight") of layer `layer`."""

    def __init__(self, layer: int, path: str, delta: torch.Tensor) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer={layer!r}: expected an int")
        self.layer, self.path, self.delta = layer, path, delta.detach()
        self._param: torch.nn.Parameter | None = None
        self._original: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        """True while the edit is applied."""
        return self._param is not None

    def parameter(self, target: Any) -> torch.nn.Parameter:
        """The edited parameter of `target`; ValueError naming the layer and path otherwise."""
        view = ModelView(target)
        module: Any = view.layers[check_layer(self.layer, len(view.layers))]
        for part in self.path.split("."):
            module = getattr(module, part, None)
            if module is None:
                raise ValueError(f"decoder layer {self.layer} has no {self.path!r} to edit")
        if tuple(module.shape) != tuple(self.delta.shape):
            raise ValueError(f"{self.path} of layer {self.layer} has shape {tuple(module.shape)}; "
                             f"the edit has {tuple(self.delta.shape)}")  # fmt: skip
        return module

    def attach(self, target: Any) -> WeightEdit:
        """Apply the edit (keeping a copy of the original weights); returns self."""
        if self._param is not None:
            raise ValueError("WeightEdit is already applied; remove() it first")
        param = self.parameter(target)
        with torch.no_grad():
            self._original = param.detach().clone()
            param.add_(self.delta.to(device=param.device, dtype=param.dtype))
        self._param = param
        return self

    def remove(self) -> None:
        """Restore the original weights bit for bit; safe to call twice."""
        if self._param is not None:
            with torch.no_grad():
                self._param.copy_(self._original)
        self._param, self._original = None, None

    def __enter__(self) -> WeightEdit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class EditStack:
    """Edits attached together and removed together; an empty stack is the exact no-op."""

    def __init__(self, edits: list[Any]) -> None:
        self.edits = list(edits)
        self._attached: list[Any] = []

    def attach(self, target: Any) -> EditStack:
        """Attach every edit in order (on failure the ones attached are removed); returns self."""
        try:
            for edit in self.edits:
                self._attached.append(edit.attach(target))
        except Exception:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every attached edit, last first; safe to call twice."""
        while self._attached:
            self._attached.pop().remove()

    def __enter__(self) -> EditStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
