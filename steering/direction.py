"""The shared base of methods that add one direction at one layer (DiffMean, PCA, LAT, probe).

A direction method learns a unit direction r̂, turns it to point toward fragile (r̂ · dom > 0)
and stores `vector` = r̂ · ‖μ_fragile − μ_rigid‖, so strength s adds s · vector at the image
tokens: on every such method s = −1 moves a token by the class-mean distance toward rigid, and
their dose curves share a scale. `fit_info["cos_dom"]` says how far the direction is from the
difference of means.
"""

from __future__ import annotations

from typing import Any

import torch

from steering.base import FitData, SteeringMethod


class DirectionMethod(SteeringMethod):
    """h ← h + s · vector at the image tokens of the method's layer (agents.interventions.AddVector)."""

    def _direction(self, data: FitData) -> torch.Tensor:
        """The learned direction at data.layer (any scale, any sign)."""
        raise NotImplementedError

    def _fit(self, data: FitData, backend: Any) -> None:
        dom = data.dom()
        direction = self._direction(data).float()
        if not bool(torch.isfinite(direction).all()) or float(direction.norm()) == 0.0:
            raise ValueError(
                f"steering method {self.name!r} found no direction on this data (zero or not finite)"
            )
        unit = direction / direction.norm()
        cos = float(unit @ dom / dom.norm())
        if cos < 0:
            unit, cos = -unit, -cos
        self.state["vector"] = unit * dom.norm()
        self.fit_info["cos_dom"] = round(cos, 4)

    def _intervention(self, strength: float, seed: int) -> Any:
        from agents.interventions import AddVector

        return AddVector(self.state["vector"], strength, layer=self.layer, positions=self.positions)


def pooled(data: FitData, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-frame mean rows, 1 for fragile frames) at `layer`: one sample per frame, as the
    direction methods' papers fit on one vector per prompt."""
    import numpy as np

    a = data.acts[data.layer if layer is None else layer].float()
    groups, inverse = np.unique(data.group, return_inverse=True)
    index = torch.as_tensor(inverse)
    sums = torch.zeros(len(groups), a.shape[1]).index_add_(0, index, a)
    counts = torch.bincount(index, minlength=len(groups)).float().unsqueeze(1)
    fragile = np.zeros(len(groups))
    fragile[inverse] = data.material == "fragile"
    return sums / counts, torch.as_tensor(fragile)
