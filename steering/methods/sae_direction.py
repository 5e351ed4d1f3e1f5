"""SAE feature direction: the discovered fragility latents' decoder rows as one direction.

The Matryoshka SAE's fragility features (the decorrelated discovery's top latents) written as
an additive direction rather than clamped (steering.methods.sae_clamp): Σ_f (fragile mean_f −
rigid mean_f) · W_dec[f], the part of the class-mean difference the features reconstruct. As a
direction method (steering.direction) it is scaled to ‖μ_fragile − μ_rigid‖ and turned toward
fragile, so its strengths share units with DiffMean, the random control and the Joint SAE rows
("jsae-*"): the comparison at equal displacement norm that cross-modal steering needs.
"""

from __future__ import annotations

import torch

from steering.base import FitData
from steering.direction import DirectionMethod
from steering.registry import register_method


@register_method
class SAEFeatureDirection(DirectionMethod):
    """h ← h + s · ‖dom‖ · unit(Σ_f (fragile_f − rigid_f) · W_dec[f]) at the image tokens."""

    name = "sae-direction"
    paper = "Matryoshka SAE (Bussmann et al. 2025) fragility features as one additive direction"
    needs = ("labelled", "sae")

    def _direction(self, data: FitData) -> torch.Tensor:
        features = data.fragility_features or []
        if not features:
            raise ValueError(
                f"steering method {self.name!r}: the discovery found no fragility feature"
            )
        w = data.sae.W_dec.detach().float()
        self.fit_info["units"] = len(features)
        return sum((fragile - rigid) * w[int(f)] for f, rigid, fragile in features)
