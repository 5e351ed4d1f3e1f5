"""LoReFT: a low-rank representation intervention trained on demonstrations of the handling.

Wu et al. 2024, "ReFT: Representation Finetuning for Language Models" (NeurIPS 2024; AxBench
ranks its rank-1 form, ReFT-r1). LoReFT edits hidden states in an r-dimensional subspace:

    Φ(h) = h + Rᵀ (W h + b − R h),   R ∈ ℝ^{r×d} with orthonormal rows,

and trains (R, W, b) with the model frozen so that the edited model reproduces demonstrations.
Here the demonstrations are behaviour, not labels: for the VLA, the scripted expert's action
chunks of the other material's handling (the firm grip on fragile objects trains the edit
toward rigid, the gentle one on rigid objects the edit toward fragile: steering.behaviour); for
the planner, the fragility answer that picks that handling. It is the benchmark's only method
supervised by behaviour (`supervision = "behaviour"`): compare it with the label-fitted ones
knowing it saw what the robot should do.

Strength: h ← h + s · Rᵀ(W h + b − R h) with the edit trained toward the sign's material
(s = ±1 is the trained intervention, 0 the exact identity). Departures from the paper: the edit
acts at the method's positions (image tokens by default) of one layer, where the paper edits a
few prefix and suffix tokens at chosen layers; R stays orthonormal by a QR retraction of a free
matrix at each step rather than a parametrisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.interventions import ResidualIntervention
from steering.base import FitData, SteeringMethod
from steering.registry import register_method


def orthonormal_rows(free: torch.Tensor) -> torch.Tensor:
    """(r × d) rows spanning `free`'s rows, orthonormal (QR of its transpose; signs fixed)."""
    q, r = torch.linalg.qr(free.T)
    return (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)).T


class LowRankEdit(ResidualIntervention):
    """h ← h + scale · Rᵀ(W h + b − R h) at `positions` of decoder layer `layer`'s output.

    Differentiable in (R, W, b) when they require grad (training); the hook otherwise runs
    without building a graph."""

    def __init__(self, rot: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: float,
                 layer: int, positions: str = "image") -> None:  # fmt: skip
        super().__init__(layer, positions)
        self.rot, self.weight, self.bias, self.scale = rot, weight, bias, float(scale)

    def _edit(self, selected: torch.Tensor) -> torch.Tensor:
        h = selected.float()
        rot, weight = self.rot.to(h.device), self.weight.to(h.device)
        delta = (h @ weight.T + self.bias.to(h.device) - h @ rot.T) @ rot
        return (h + self.scale * delta).to(selected.dtype)


def train_edit(backend: Any, demos: Any, rows: np.ndarray, layer: int, positions: str, rank: int,
               steps: int, batch: int, lr: float, seed: int) -> tuple[dict[str, torch.Tensor], list[float]]:  # fmt: skip
    """(R, W, b) trained on `rows` of `demos` with the model frozen; returns them and the loss
    of every step. The model's parameters and their requires_grad flags are left as found."""
    d = int(backend.model.config.get_text_config().hidden_size)
    gen = torch.Generator().manual_seed(seed)
    free = torch.nn.Parameter(torch.randn(rank, d, generator=gen) / d**0.5)
    weight = torch.nn.Parameter(torch.zeros(rank, d))
    bias = torch.nn.Parameter(torch.zeros(rank))
    opt = torch.optim.AdamW([free, weight, bias], lr=lr, weight_decay=0.0)
    flags = [(p, p.requires_grad) for p in backend.model.parameters()]
    draw = np.random.default_rng(seed)
    losses = []
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for _ in range(steps):
            edit = LowRankEdit(orthonormal_rows(free), weight, bias, 1.0, layer, positions)
            with torch.enable_grad(), edit.attach(backend):
                loss = demos.loss(
                    backend, rows[draw.integers(len(rows), size=min(batch, len(rows)))]
                )
                opt.zero_grad()
                loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    state = {
        "rot": orthonormal_rows(free).detach(),
        "weight": weight.detach(),
        "bias": bias.detach(),
    }
    return state, losses


@register_method
class LoReFT(SteeringMethod):
    """A rank-r LoReFT edit per direction, trained on demonstrations; scaled by |s|."""

    name = "loreft"
    paper = "Wu et al. 2024, ReFT: Representation Finetuning for Language Models (LoReFT)"
    needs = ("demonstrations",)
    needs_backend = True
    supervision = "behaviour"
    strength_range = (-2.0, 2.0)
    dose = (0.25, 0.5, 0.75, 1.0, 1.5)

    def __init__(self, rank: int = 4, steps: int = 150, batch: int = 8, lr: float = 0.01, seed: int = 0, **params: Any) -> None:  # fmt: skip
        for key, value in (("rank", rank), ("steps", steps), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r}: must be an int >= 1")
        if not lr > 0:
            raise ValueError(f"lr={lr!r}: must be > 0")
        super().__init__(rank=rank, steps=steps, batch=batch, lr=lr, seed=seed, **params)

    def _fit(self, data: FitData, backend: Any) -> None:
        demos, p = data.demos, self.params
        losses = {}
        for side in ("fragile", "rigid"):
            rows = np.flatnonzero(demos.toward == side)
            if len(rows) == 0:
                raise ValueError(f"steering method 'loreft': the demonstrations hold no rows toward {side!r}")  # fmt: skip
            state, trace = train_edit(backend, demos, rows, self.layer, self.positions, p["rank"], p["steps"],
                                      p["batch"], p["lr"], p["seed"])  # fmt: skip
            self.state.update({f"to_{side}_{k}": v for k, v in state.items()})
            losses[side] = (
                round(float(np.mean(trace[:10])), 4),
                round(float(np.mean(trace[-10:])), 4),
            )
        # it fits on the demonstrations, not on the labelled rows: the cost columns say so
        self.fit_info.update(units=int(p["rank"]), n_rows=len(demos), n_frames=len(demos), source=demos.source,
                             loss_first_last={k: list(v) for k, v in losses.items()})  # fmt: skip

    def _intervention(self, strength: float, seed: int) -> Any:
        side = "to_fragile" if strength > 0 else "to_rigid"
        s = self.state
        return LowRankEdit(s[f"{side}_rot"], s[f"{side}_weight"], s[f"{side}_bias"], abs(strength),
                           self.layer, self.positions)  # fmt: skip
