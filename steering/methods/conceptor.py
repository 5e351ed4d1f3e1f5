"""Conceptor steering: a soft projection onto the subspace the target material's activations
occupy.

Postmus & Abreu 2024, "Steering Large Language Models using Conceptors" (after Jaeger 2014):
the conceptor of a set of activations with correlation matrix R = XᵀX / n is
C = R (R + α⁻² I)⁻¹, a soft projection whose aperture α sets how much of the subspace passes;
steering maps h ← β · C h. Here the target is the other material's activations (fragile for
s > 0, rigid for s < 0) and the strength interpolates, h ← (1 − |s|) h + |s| β C h, so 0 is
unsteered and |s| = 1 the paper's map. α is given relative to the activations' scale
(α⁻² = aperture_scale · tr R / d) because the paper's absolute α assumes its models' norms.
"""

from __future__ import annotations

from typing import Any

import torch

from steering.base import FitData, SteeringMethod
from steering.registry import register_method


def conceptor(x: torch.Tensor, inv_aperture_sq: float) -> torch.Tensor:
    """C = R (R + α⁻² I)⁻¹ of rows `x` (n × d), R = xᵀx / n."""
    r = (x.T @ x / len(x)).double()
    eye = torch.eye(r.shape[0], dtype=r.dtype)
    return (r @ torch.linalg.inv(r + inv_aperture_sq * eye)).float()


@register_method
class ConceptorSteering(SteeringMethod):
    """h ← (1 − |s|) h + |s| β C_target h at the image tokens."""

    name = "conceptor"
    paper = "Postmus & Abreu 2024, Steering Large Language Models using Conceptors"
    strength_range = (-1.0, 1.0)
    dose = (0.1, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, aperture_scale: float = 0.1, beta: float = 1.0, **params: Any) -> None:
        if not aperture_scale > 0 or not beta > 0:
            raise ValueError(f"aperture_scale={aperture_scale!r}, beta={beta!r}: both must be > 0")
        super().__init__(aperture_scale=aperture_scale, beta=beta, **params)

    def _fit(self, data: FitData, backend: Any) -> None:
        fragile, rigid = data.split()
        for side, x in (("fragile", fragile), ("rigid", rigid)):
            scale = float(self.params["aperture_scale"]) * float((x * x).sum(1).mean()) / x.shape[1]
            self.state[side] = conceptor(x.float(), scale)
        self.fit_info["units"] = int(fragile.shape[1])

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import ResidualMap

        c = self.state["fragile" if strength > 0 else "rigid"] * float(self.params["beta"])
        s = abs(strength)

        def project(h):
            return (1 - s) * h + s * (h @ c.T.to(h.device))

        return ResidualMap(project, self.layer, self.positions)
