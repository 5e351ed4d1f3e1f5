"""Statistics for reports: confidence intervals and paired tests.

Every effect physteer reports carries its sample size and a 95% interval; comparisons between
conditions are paired by seed (McNemar for binary outcomes, Wilcoxon for continuous ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and sample size."""

    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}] (n={self.n})"

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def wilson(successes: int, n: int, z: float = 1.96) -> Estimate:
    """Rate with a Wilson score interval (well-behaved at 0% and 100%)."""
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean with a percentile bootstrap interval."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, n, (n_boot, n))].mean(axis=1)
    return Estimate(float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)), n)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean of (b − a) over pairs, with a bootstrap interval over pairs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    return bootstrap_mean(b - a, n_boot=n_boot, seed=seed)


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar p-value for paired binary outcomes (a, b)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)


def wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value for paired continuous outcomes (1.0 if all equal)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)
