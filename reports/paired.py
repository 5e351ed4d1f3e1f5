"""Paired effects of episode rows against unsteered, by seed: what the closed-loop studies
table (a condition's change of one outcome column on the seeds it shares with unsteered),
with the 95% bootstrap interval of reports.stats as a plain dict."""

from __future__ import annotations

from typing import Any

import numpy as np


def values(rows: list[dict[str, Any]], condition: str, metric: str) -> dict[int, float]:
    """seed → `metric` of `condition`'s episodes (an episode without a value left out: the
    closing command of one whose fingers never closed)."""
    return {
        r["seed"]: r[metric] for r in rows if r["condition"] == condition and r[metric] is not None
    }


def mean_of(by_seed: dict[int, float]) -> float:
    """The mean of the values (NaN for none)."""
    return float(np.mean(list(by_seed.values()))) if by_seed else float("nan")


def paired_by_seed(rows: list[dict[str, Any]], condition: str, metric: str) -> dict[int, float]:
    """seed → (condition − unsteered), over the seeds both have a value for."""
    base, steered = values(rows, "unsteered", metric), values(rows, condition, metric)
    return {s: steered[s] - base[s] for s in sorted(set(base) & set(steered))}


def paired(rows: list[dict[str, Any]], condition: str, metric: str) -> np.ndarray:
    """(condition − unsteered) per seed, over the seeds both have a value for, in seed order."""
    return np.array(list(paired_by_seed(rows, condition, metric).values()), dtype=float)


def estimate(x: np.ndarray) -> dict[str, float]:
    """Mean with its 95% bootstrap CI (reports.stats) as a plain dict."""
    from reports.stats import bootstrap_mean

    e = bootstrap_mean(x)
    return {"mean": e.value, "low": e.low, "high": e.high, "n": e.n}
