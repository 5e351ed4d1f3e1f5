"""RepE's Linear Artificial Tomography (LAT): PCA of differences of random contrast pairs.

Zou et al. 2023, "Representation Engineering: A Top-Down Approach to AI Transparency": pair
stimuli of the two classes at random, take the differences of their representations, and read
the concept direction as the first principal component of those differences.
"""

from __future__ import annotations

import numpy as np
import torch

from steering.base import FitData
from steering.direction import DirectionMethod, pooled
from steering.registry import register_method


@register_method
class LATDirection(DirectionMethod):
    """h ← h + s · ‖dom‖ · PC1 of (fragile − rigid) random pair differences."""

    name = "lat"
    paper = "Zou et al. 2023, Representation Engineering (LAT)"

    def _direction(self, data: FitData) -> torch.Tensor:
        x, fragile = pooled(data)
        f, r = x[fragile == 1], x[fragile == 0]
        rng = np.random.default_rng(int(self.params.get("seed", 0)))
        n = min(len(f), len(r))
        diffs = f[rng.permutation(len(f))[:n]] - r[rng.permutation(len(r))[:n]]
        # random signs, as RepE shuffles pair order: PCA then finds the axis, not the mean
        diffs = diffs * torch.as_tensor(rng.choice([-1.0, 1.0], size=(n, 1)), dtype=diffs.dtype)
        diffs = diffs - diffs.mean(0)
        return torch.linalg.svd(diffs, full_matrices=False).Vh[0]
