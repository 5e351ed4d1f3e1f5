"""Selective Steering: a norm-preserving rotation in the plane of the concept direction, at the
layers where the two classes sit on opposite sides of it.

Dang & Ngo 2026, "Selective Steering: Norm-Preserving Control Through Discriminative Layer
Selection" (code: knoveleng/steering). Candidate directions are the per-layer unit differences
of means; b1 is the candidate closest on average (cosine) to the others, b2 the first principal
component of the stacked candidates made orthogonal to b1. With P = b1b1ᵀ + b2b2ᵀ and
V_θ = cos θ · P + sin θ · (b2b1ᵀ − b1b2ᵀ), h ← h − Ph + V_θ h rotates h's in-plane part by θ
and keeps ‖h‖ exactly. A layer is selected when the class means of the unit-normalised rows
project onto b1 with opposite signs. Strength is θ in degrees (0 = identity; 180 turns the b1
component around, which is what moves a fragile token toward rigid and a rigid one toward
fragile, so the strength has no material sign). Adapted to physteer: the rotation acts on the
decoder layers' outputs (the residual stream) at the image tokens, where the paper rotates the
normalisation modules' outputs at every token; and since the residual stream carries a
rotation into the next layer (a normalisation output is not carried), the angle is split
evenly over the k selected layers, θ/k at each, so that θ is about the total rotation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from steering.base import FitData, SteeringMethod
from steering.registry import register_method


def rotation(b1: torch.Tensor, b2: torch.Tensor, degrees: float) -> torch.Tensor:
    """The (d × d) map h ↦ h − Ph + V_θ h of the plane (b1, b2) (orthonormal), θ in degrees."""
    theta = math.radians(degrees)
    p = torch.outer(b1, b1) + torch.outer(b2, b2)
    v = math.cos(theta) * p + math.sin(theta) * (torch.outer(b2, b1) - torch.outer(b1, b2))
    return torch.eye(len(b1)) - p + v


@register_method
class SelectiveSteering(SteeringMethod):
    """Rotate the image tokens' residual stream by θ in the (b1, b2) plane at the selected layers."""

    name = "selective"
    paper = "Dang & Ngo 2026, Selective Steering: Norm-Preserving Control Through Discriminative Layer Selection"
    signed = False
    strength_range = (-360.0, 360.0)
    dose = (30.0, 60.0, 90.0, 135.0, 180.0)

    def _fit(self, data: FitData, backend: Any) -> None:
        layers = data.layers
        candidates = torch.stack(
            [torch.nn.functional.normalize(data.dom(layer), dim=0) for layer in layers]
        )
        cos = candidates @ candidates.T
        b1 = candidates[int(((cos.sum(1) - 1) / max(1, len(layers) - 1)).argmax())]
        centred = candidates - candidates.mean(0)
        pc = torch.linalg.svd(centred, full_matrices=False).Vh[0] if len(layers) > 1 else b1
        b2 = pc - (pc @ b1) * b1
        if float(b2.norm()) < 1e-6:  # one layer, or the candidates agree: any unit ⟂ b1 (seeded)
            b2 = torch.randn(len(b1), generator=torch.Generator().manual_seed(0))
            b2 = b2 - (b2 @ b1) * b1
        b2 = b2 / b2.norm()
        selected = []
        for layer in layers:
            fragile, rigid = data.split(layer)
            pf = float((torch.nn.functional.normalize(fragile, dim=1) @ b1).mean())
            pr = float((torch.nn.functional.normalize(rigid, dim=1) @ b1).mean())
            if pf * pr < 0:
                selected.append(layer)
        fallback = not selected  # no layer separates by sign: the method's own layer, and say so
        selected = selected or [data.layer]
        self.state.update(b1=b1, b2=b2, layers=torch.tensor(selected))
        self.fit_info.update(
            units=2, selected_layers=selected, layers_searched=layers, no_layer_by_sign=fallback
        )

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import EditStack, ResidualMap

        layers = self.state["layers"].tolist()
        # the residual stream carries each layer's rotation forward: θ/k at each of k layers
        m = rotation(self.state["b1"], self.state["b2"], strength / len(layers))

        def rotate(h):
            return h @ m.T.to(h.device)

        return EditStack([ResidualMap(rotate, int(layer), self.positions) for layer in layers])
