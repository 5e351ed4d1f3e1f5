"""Evaluation metrics of an SAE: FVE (total and per prefix), L0, dead latents, error quantiles.

Everything streams over minibatches with float64 accumulators, so evaluating on a large
store needs no more memory than one batch plus the per-sample errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sae.matryoshka import MatryoshkaSAE
from sae.store import ActivationStore

QUANTILES = (0.5, 0.9, 0.95, 0.99)


def fve(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance explained: 1 - ||x - x_hat||^2 / ||x - mean(x)||^2 over the batch."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but x_hat has {tuple(x_hat.shape)}")
    x, x_hat = x.double(), x_hat.double()
    sst = ((x - x.mean(0)) ** 2).sum()
    return float(1.0 - ((x - x_hat) ** 2).sum() / sst) if sst > 0 else float("nan")


def l0(z: torch.Tensor) -> float:
    """Mean number of nonzero latents per sample."""
    return float((z != 0).sum()) / max(1, z.shape[0])


@dataclass
class EvalResult:
    """Metrics of one evaluation pass.

    fve / fve_prefix: fraction of variance explained by the full dictionary / by each prefix.
    l0: mean active latents per sample. dead: latents that never fired on the evaluation set.
    error_quantiles: quantiles of the per-sample normalised error (`reconstruction_error`).
    """

    n: int
    fve: float
    fve_prefix: dict[int, float]
    l0: float
    n_dead: int
    dead_fraction: float
    error_mean: float
    error_std: float
    error_quantiles: dict[float, float]
    dead_latents: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (keys become strings)."""
        d = asdict(self)
        d["fve_prefix"] = {str(k): v for k, v in self.fve_prefix.items()}
        d["error_quantiles"] = {str(k): v for k, v in self.error_quantiles.items()}
        return d


def _batches(data: Any, batch_size: int, max_rows: int | None) -> Iterable[torch.Tensor]:
    if isinstance(data, ActivationStore):
        it = data.iter_minibatches(batch_size, shuffle=False)
    else:
        x = torch.as_tensor(data).float()
        it = (x[i : i + batch_size] for i in range(0, x.shape[0], batch_size))
    seen = 0
    for xb in it:
        if max_rows is not None and seen >= max_rows:
            return
        xb = xb if max_rows is None else xb[: max_rows - seen]
        seen += xb.shape[0]
        yield xb


@torch.no_grad()
def evaluate(
    sae: MatryoshkaSAE,
    data: ActivationStore | torch.Tensor | np.ndarray,
    batch_size: int = 4096,
    max_rows: int | None = None,
) -> EvalResult:
    """Evaluate `sae` on a store or an (n, d) tensor (at most `max_rows` rows)."""
    was_training = sae.training
    sae.eval()
    prefixes = sae.config.prefixes
    n, sum_x, sum_sq = 0, None, 0.0
    sse = np.zeros(len(prefixes))
    fired = torch.zeros(sae.config.n_latents, dtype=torch.bool)
    active, errors = 0, []
    for xb in _batches(data, batch_size, max_rows):
        xn = sae._normalize(sae._check_input(xb)).double()
        code = sae.encode_sparse(xb)
        recons = sae._decode_prefixes(code)
        # Accumulate in normalised space: FVE is invariant to the store's shift and scale.
        sum_x = xn.sum(0) if sum_x is None else sum_x + xn.sum(0)
        sum_sq += float((xn**2).sum())
        for i, r in enumerate(recons):
            sse[i] += float(((xn - r.double()) ** 2).sum())
        fired |= torch.bincount(code.cols[code.vals > 0], minlength=sae.config.n_latents) > 0
        active += int((code.vals > 0).sum())
        errors.append(((xn - recons[-1].double()) ** 2).sum(1) / sae.config.d_in)
        n += xb.shape[0]
    sae.train(was_training)
    if n == 0:
        raise ValueError("evaluation data is empty")
    sst = sum_sq - float((sum_x**2).sum()) / n
    err = torch.cat(errors).numpy()
    dead = (~fired).nonzero().flatten().tolist()
    return EvalResult(
        n=n,
        fve=1.0 - sse[-1] / sst,
        fve_prefix={m: 1.0 - float(s) / sst for m, s in zip(prefixes, sse, strict=True)},
        l0=active / n,
        n_dead=len(dead),
        dead_fraction=len(dead) / sae.config.n_latents,
        error_mean=float(err.mean()),
        error_std=float(err.std()),
        error_quantiles={q: float(np.quantile(err, q)) for q in QUANTILES}
        | {1.0: float(err.max())},
        dead_latents=dead,
    )
