"""AUSteer: steer a few atomic units (single activation dimensions) chosen by how consistently
the two classes differ on them, multiplicatively.

"Atomic-unit steering" (AUSteer, ICLR 2026; code: zijian678/AUSteer, module "layer": the
decoder block's output). For each (layer, dimension) unit j and paired samples i,
Δ_ij = fragile_ij − rigid_ij; β_j = ±max(n₊, n₋) / N, negative when n₋ > n₊ (a signed
sign-agreement fraction). The k units of largest |β| over every layer are kept; steering scales
them, a_j ← a_j (1 + α β_j), at the image tokens, as the paper's code does. The strength is α
(0 = identity); α > 0 grows the magnitude of the units where fragile rows are mostly higher
(β > 0) and shrinks the others, which moves a positive activation toward fragile and a negative
one away from it: the rule scales, it does not add a direction.
Pairs: fragile and rigid frames matched in order within each color (the frames are balanced).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from steering.base import FitData, SteeringMethod
from steering.direction import pooled
from steering.registry import register_method


@register_method
class AUSteer(SteeringMethod):
    """a_j ← a_j (1 + α β_j) on the top-k atomic units (layer, dimension) by |β|."""

    name = "austeer"
    paper = "AUSteer (ICLR 2026): atomic-unit steering by activation agreement"
    strength_range = (-100.0, 100.0)
    dose = (1.0, 2.0, 5.0, 10.0, 20.0)

    def __init__(self, k: int = 10, **params: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r}: the number of units must be an int >= 1")
        super().__init__(k=k, **params)

    def _fit(self, data: FitData, backend: Any) -> None:
        first = data.layers[0]
        _, fragile = pooled(data, first)
        colors = {}
        for g, c in zip(data.group, data.color, strict=True):
            colors.setdefault(g, c)
        color = np.array([colors[g] for g in np.unique(data.group)])
        f_idx, r_idx = [], []
        for c in np.unique(color):  # pair the i-th fragile frame with the i-th rigid of a color
            f = np.flatnonzero((color == c) & (fragile.numpy() == 1))
            r = np.flatnonzero((color == c) & (fragile.numpy() == 0))
            n = min(len(f), len(r))
            f_idx += f[:n].tolist()
            r_idx += r[:n].tolist()
        scores = []
        for layer in data.layers:
            x, _ = pooled(data, layer)
            delta = x[f_idx] - x[r_idx]
            pos, neg = (delta > 0).sum(0).float(), (delta < 0).sum(0).float()
            beta = torch.maximum(pos, neg) / len(f_idx)
            scores.append(torch.where(neg > pos, -beta, beta))
        beta = torch.stack(scores)  # layers × d
        k = min(int(self.params["k"]), beta.numel())
        top = beta.abs().flatten().argsort(descending=True)[:k]
        rows, dims = top // beta.shape[1], top % beta.shape[1]
        self.state.update(layers=torch.tensor([data.layers[int(r)] for r in rows]), dims=dims.clone(),
                          beta=beta.flatten()[top].clone())  # fmt: skip
        self.fit_info.update(
            units=k,
            n_pairs=len(f_idx),
            min_abs_beta=round(float(beta.flatten()[top].abs().min()), 4),
        )

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import EditStack, ResidualMap

        edits = []
        layers, dims, beta = self.state["layers"], self.state["dims"], self.state["beta"]
        for layer in sorted(set(layers.tolist())):
            on = layers == layer
            d_idx, factor = dims[on], 1.0 + strength * beta[on]

            def multiply(h, d_idx=d_idx, factor=factor):
                h = h.clone()
                h[:, d_idx] = h[:, d_idx] * factor.to(h.device)
                return h

            edits.append(ResidualMap(multiply, int(layer), self.positions))
        return EditStack(edits)
