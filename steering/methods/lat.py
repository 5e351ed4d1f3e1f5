"""RepE's Linear Artificial Tomography (LAT): PCA of differences of random contrast pairs.

Zou et al. 2023, "Representation Engineering: A Top-Down Approach to AI Transparency": pair
stimuli of the two classes at random, take the differences of their representations, and read
the concept direction as the first principal component of those differences. On paired data
(FitData.pair: one scene with each material, everything else equal) the pairs are the true
contrast pairs, as RepE builds them from one stimulus in two versions; otherwise they are drawn
at random across scenes.
"""

from __future__ import annotations

import numpy as np
import torch

from steering.base import FitData
from steering.direction import DirectionMethod, pooled
from steering.registry import register_method


def paired_frames(data: FitData, x: torch.Tensor, fragile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(fragile rows, rigid rows) of `pooled` frame means, row i of each from the same pair."""
    groups, first = np.unique(data.group, return_index=True)  # pooled's frame order
    pair_of = np.asarray(data.pair)[first]
    by_pair: dict = {}
    for i, p in enumerate(pair_of.tolist()):
        by_pair.setdefault(p, {})[int(fragile[i])] = i
    both = [v for v in by_pair.values() if len(v) == 2]
    if not both:
        raise ValueError("the data's pairs hold no scene with both materials")
    return x[[v[1] for v in both]], x[[v[0] for v in both]]


@register_method
class LATDirection(DirectionMethod):
    """h ← h + s · ‖dom‖ · PC1 of (fragile − rigid) random pair differences."""

    name = "lat"
    paper = "Zou et al. 2023, Representation Engineering (LAT)"

    def _direction(self, data: FitData) -> torch.Tensor:
        x, fragile = pooled(data)
        rng = np.random.default_rng(int(self.params.get("seed", 0)))
        if data.pair is not None:
            f, r = paired_frames(data, x, fragile)
            diffs = f - r
        else:
            f, r = x[fragile == 1], x[fragile == 0]
            n = min(len(f), len(r))
            diffs = f[rng.permutation(len(f))[:n]] - r[rng.permutation(len(r))[:n]]
        n = len(diffs)
        # random signs, as RepE shuffles pair order: PCA then finds the axis, not the mean
        diffs = diffs * torch.as_tensor(rng.choice([-1.0, 1.0], size=(n, 1)), dtype=diffs.dtype)
        diffs = diffs - diffs.mean(0)
        return torch.linalg.svd(diffs, full_matrices=False).Vh[0]
