"""PCA: the first principal component of the frames' mean activations.

AxBench's PCA baseline (Wu et al. 2025, "AxBench: Steering LLMs? Even Simple Baselines
Outperform Sparse Autoencoders"): the top principal component of the centred representations
of a balanced concept set, its sign chosen to point toward the concept (here: fragile).
"""

from __future__ import annotations

import torch

from steering.base import FitData
from steering.direction import DirectionMethod, pooled
from steering.registry import register_method


@register_method
class PCADirection(DirectionMethod):
    """h ← h + s · ‖dom‖ · PC1 (sign toward fragile) at the image tokens."""

    name = "pca"
    paper = "Wu et al. 2025, AxBench (PCA baseline)"

    def _direction(self, data: FitData) -> torch.Tensor:
        x, _ = pooled(data)
        x = x - x.mean(0)
        return torch.linalg.svd(x, full_matrices=False).Vh[0]
