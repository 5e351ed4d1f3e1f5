"""LinEAS: per-dimension affine maps trained with a 1-D Wasserstein loss between the steered
source activations and the target's.

Rodriguez et al. 2025, "LinEAS: End-to-end Learning of Activation Steering with a
Distributional Loss" (NeurIPS 2025; after Lin-AcT, apple/ml-act). A map T(x) = ω ⊙ x + b
(initialised to the identity) is trained so that, dimension by dimension, the sorted values of
the transported source rows match the sorted values of the target rows (W₂² of the two
empirical 1-D distributions: quantile matching), with an optional L1 penalty on (ω − 1, b)
that makes the map sparse. At inference h ← |s| T(h) + (1 − |s|) h (s = 0 is the identity),
with the map toward fragile for s > 0 and toward rigid for s < 0.
Adapted to physteer: one map at the method's layer trained on the stored activations (frame
means of the image tokens, as Lin-AcT pools), not maps at every layer trained end to end
through the model; the map is applied at the image tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from steering.base import FitData, SteeringMethod
from steering.direction import pooled
from steering.registry import register_method


def fit_affine(source: torch.Tensor, target: torch.Tensor, steps: int, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(ω, b) minimising Σ_d W₂²(ω_d · source_d + b_d, target_d) + sparsity · ‖(ω − 1, b)‖₁."""
    omega = torch.ones(source.shape[1], requires_grad=True)
    bias = torch.zeros(source.shape[1], requires_grad=True)
    n = min(len(source), len(target))
    quantiles = torch.linspace(0, 1, n)
    tgt = torch.quantile(target, quantiles, dim=0)
    opt = torch.optim.Adam([omega, bias], lr=0.05)
    for _ in range(steps):
        moved = torch.quantile(source * omega + bias, quantiles, dim=0)
        loss = ((moved - tgt) ** 2).mean(0).sum() + sparsity * (
            (omega - 1).abs().sum() + bias.abs().sum()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return omega.detach(), bias.detach()


@register_method
class LinEAS(SteeringMethod):
    """h ← |s| (ω ⊙ h + b) + (1 − |s|) h at the image tokens, (ω, b) toward the sign's material."""

    name = "lineas"
    paper = "Rodriguez et al. 2025, LinEAS: End-to-end Learning of Activation Steering with a Distributional Loss"
    strength_range = (-1.5, 1.5)
    dose = (0.1, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, steps: int = 300, sparsity: float = 0.0, **params: Any) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r}: must be an int >= 1")
        if not sparsity >= 0:
            raise ValueError(f"sparsity={sparsity!r}: must be >= 0")
        super().__init__(steps=steps, sparsity=sparsity, **params)

    def _fit(self, data: FitData, backend: Any) -> None:
        x, fragile = pooled(data)
        f, r = x[fragile == 1], x[fragile == 0]
        steps, sparsity = int(self.params["steps"]), float(self.params["sparsity"])
        for name, source, target in (("to_fragile", r, f), ("to_rigid", f, r)):
            omega, bias = fit_affine(source, target, steps, sparsity)
            self.state[f"{name}_omega"], self.state[f"{name}_bias"] = omega, bias
        moved = ((self.state["to_rigid_omega"] - 1).abs() > 1e-3) | (
            self.state["to_rigid_bias"].abs() > 1e-3
        )
        self.fit_info.update(units=int(moved.sum()))

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import ResidualMap

        side = "to_fragile" if strength > 0 else "to_rigid"
        omega, bias, s = self.state[f"{side}_omega"], self.state[f"{side}_bias"], abs(strength)

        def transport(h):
            return s * (h * omega.to(h.device) + bias.to(h.device)) + (1 - s) * h

        return ResidualMap(transport, self.layer, self.positions)
