"""Difference of means (CAA): add the mean fragile − mean rigid activation.

Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition" (ACL); AxBench's
DiffMean (Wu et al. 2025). The vector is the class-mean difference itself, so `dom:<s>`
conditions and this method at strength s are the same edit.
"""

from __future__ import annotations

import torch

from steering.base import FitData
from steering.direction import DirectionMethod
from steering.registry import register_method


@register_method
class DiffMean(DirectionMethod):
    """h ← h + s · (μ_fragile − μ_rigid) at the image tokens."""

    name = "dom"
    paper = "Rimsky et al. 2024, Steering Llama 2 via Contrastive Activation Addition (CAA)"

    def _fit(self, data: FitData, backend: object) -> None:
        self.state["vector"] = data.dom()
        self.fit_info["cos_dom"] = 1.0

    @classmethod
    def from_vector(cls, vector: torch.Tensor, layer: int) -> DiffMean:
        """The method with a given difference-of-means vector (a `--vector` file) at `layer`."""
        method = cls()
        method.state["vector"], method.layer = torch.as_tensor(vector), layer
        method.fit_info = {"cos_dom": 1.0, "source": "vector file"}
        return method
