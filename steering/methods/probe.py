"""Linear-probe direction: the weight vector of a logistic regression fragile vs rigid.

A baseline of AxBench (Wu et al. 2025) and of Im & Li 2025 ("A Unified Understanding and
Evaluation of Steering Methods"): steer along the normal of the probe's decision boundary.
"""

from __future__ import annotations

import torch

from steering.base import FitData
from steering.direction import DirectionMethod, pooled
from steering.registry import register_method


@register_method
class ProbeDirection(DirectionMethod):
    """h ← h + s · ‖dom‖ · ŵ, ŵ the L2-regularised logistic probe's normal (toward fragile)."""

    name = "probe"
    paper = "Wu et al. 2025, AxBench (linear probe baseline)"

    def _direction(self, data: FitData) -> torch.Tensor:
        from sklearn.linear_model import LogisticRegression

        x, fragile = pooled(data)
        probe = LogisticRegression(C=float(self.params.get("C", 1.0)), max_iter=2000)
        probe.fit(x.numpy(), fragile.numpy().astype(int))
        self.fit_info["train_accuracy"] = round(
            float(probe.score(x.numpy(), fragile.numpy().astype(int))), 4
        )
        return torch.as_tensor(probe.coef_[0], dtype=torch.float32)
