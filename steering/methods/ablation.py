"""Directional ablation: remove the concept direction's component from the residual stream.

Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single Direction": h ← h −
(h · r̂) r̂ with r̂ the unit difference of means. Strength s ∈ [0, 1] is the fraction removed
(1: the paper's full ablation); it has no sign: it removes whatever the material put there.
"""

from __future__ import annotations

from typing import Any

from steering.base import FitData, SteeringMethod
from steering.registry import register_method


@register_method
class DirectionalAblation(SteeringMethod):
    """h ← h − s · (h · r̂) r̂ at the image tokens, r̂ = unit(μ_fragile − μ_rigid)."""

    name = "ablation"
    paper = "Arditi et al. 2024, Refusal in Language Models Is Mediated by a Single Direction"
    signed = False
    strength_range = (0.0, 1.0)
    dose = (0.25, 0.5, 0.75, 1.0)

    def _fit(self, data: FitData, backend: Any) -> None:
        dom = data.dom()
        self.state["unit"] = dom / dom.norm()

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import ResidualMap

        unit = self.state["unit"]

        def ablate(h):
            r = unit.to(h.device)
            return h - strength * (h @ r).unsqueeze(1) * r

        return ResidualMap(ablate, self.layer, self.positions)
