"""Statistics for every report: confidence intervals and paired tests, all on scipy.stats.

Every effect physteer reports carries its sample size and a 95% interval; comparisons between
conditions are paired by seed (McNemar for binary outcomes, Wilcoxon for continuous ones).

- `wilson`: a rate with its Wilson score interval (`scipy.stats.binomtest(...).proportion_ci`).
- `bootstrap_mean`, `paired_difference`: a mean (of paired differences) with a percentile
  bootstrap interval (`scipy.stats.bootstrap`).
- `bootstrap_ci`: the percentile interval of any statistic of one or more independent samples;
  `cluster_bootstrap`: of a metric over rows, resampling whole groups (episodes), because rows
  of one episode are correlated.
- `mcnemar` (exact), `wilcoxon` (signed rank): paired tests.
- `layer_profile_differs` (a within-seed permutation test: does an effect's profile over
  layers differ between two interventions?) and `flat_within` (an equivalence test: does an
  effect stay within ±margin of its own mean at every layer?), for claims about layers.

The steering report, the SARM summary (`studies.sarm.summary`) and the world-model probe all
use these functions, so one interval means the same everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

NAN = float("nan")


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


def _count(name: str, value: object) -> int:
    """`value` as an int when it is a whole number >= 0; ValueError otherwise."""
    try:
        as_int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or as_int != value or as_int < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return as_int


def _check_level(confidence_level: float) -> None:
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")


def _check_n_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")


def wilson(successes: int, n: int, confidence_level: float = 0.95) -> Estimate:
    """Rate successes/n with its Wilson score interval (well-behaved at 0% and 100%).

    Args:
        successes: number of successes, 0 <= successes <= n.
        n: number of trials; n == 0 gives NaNs (nothing to estimate).
        confidence_level: coverage of the interval (default 0.95).

    Raises:
        ValueError: counts that are not whole numbers with 0 <= successes <= n.
    """
    k, n = _count("successes", successes), _count("n", n)
    if k > n:
        raise ValueError(f"wilson needs 0 <= successes <= n, got successes={k}, n={n}")
    _check_level(confidence_level)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence_level, method="wilson")
    return Estimate(k / n, float(ci.low), float(ci.high), n)


def bootstrap_ci(
    statistic: Callable[..., float],
    samples: Sequence[np.ndarray],
    n_boot: int = 2000,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(*samples)` (scipy.stats.bootstrap).

    Each sample is resampled with replacement, independently of the others (for two samples,
    e.g. negative and positive episodes, a stratified bootstrap). A sample of one observation
    is held fixed (its resamples are all equal to it). Resamples whose statistic is not finite
    (an AUROC of a resample holding one class) are left out; (nan, nan) when none is finite or
    a sample is empty.

    Args:
        statistic: called with one 1-D array per sample, returns a float.
        samples: 1-D arrays (often indices into the caller's data).
        n_boot: number of resamples.
        seed: seeds `numpy.random.default_rng`, so the interval is reproducible.
        confidence_level: coverage of the interval (default 0.95).
    """
    _check_n_boot(n_boot)
    _check_level(confidence_level)
    samples = [np.asarray(s) for s in samples]
    if not samples or any(s.ndim != 1 or len(s) == 0 for s in samples):
        return NAN, NAN
    free = [i for i, s in enumerate(samples) if len(s) >= 2]
    if not free:
        v = float(statistic(*samples))
        return (v, v) if math.isfinite(v) else (NAN, NAN)

    def stat(*resampled: np.ndarray) -> float:
        args = list(samples)
        for i, r in zip(free, resampled, strict=True):
            args[i] = r.astype(samples[i].dtype, copy=False)
        return float(statistic(*args))

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", stats.DegenerateDataWarning
        )  # non-finite resamples, handled below
        res = stats.bootstrap(
            [samples[i] for i in free], stat, n_resamples=n_boot, vectorized=False, paired=False,
            method="percentile", confidence_level=confidence_level, rng=np.random.default_rng(seed),
        )  # fmt: skip
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        return NAN, NAN
    if finite.size == dist.size:
        return float(res.confidence_interval.low), float(res.confidence_interval.high)
    alpha = (1 - confidence_level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def cluster_bootstrap(
    metric: Callable[..., float],
    groups: np.ndarray,
    *arrays: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of `metric(*arrays)` resampling whole groups (e.g. episodes).

    A resample draws len(unique groups) groups with replacement and passes every row of each
    drawn group (duplicated as drawn) to `metric`. Non-finite resamples are left out, as in
    `bootstrap_ci`.

    Args:
        metric: called with the resampled rows of each array, returns a float.
        groups: the group of each row.
        *arrays: row-aligned arrays (same first dimension as `groups`).
        n_boot, seed, confidence_level: as in `bootstrap_ci`.

    Raises:
        ValueError: an array's row count differs from len(groups).
    """
    groups = np.asarray(groups)
    bad = [np.shape(a)[0] for a in arrays if np.shape(a)[0] != len(groups)]
    if bad:
        raise ValueError(
            f"arrays must have one row per group label ({len(groups)} rows), got {bad[0]} rows"
        )
    _, inverse = np.unique(groups, return_inverse=True)
    rows_of = (
        [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(groups) else []
    )

    def stat(picked: np.ndarray) -> float:
        rows = np.concatenate([rows_of[g] for g in picked])
        return metric(*(a[rows] for a in arrays))

    return bootstrap_ci(
        stat, [np.arange(len(rows_of))], n_boot=n_boot, seed=seed, confidence_level=confidence_level
    )


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean of the finite values with a 95% percentile bootstrap interval.

    No finite value gives NaNs with n = 0; one value, or values all equal, give the value as
    its own interval (every resample has that mean).
    """
    _check_n_boot(n_boot)
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    if np.all(values == values[0]):
        v = float(values[0])
        return Estimate(v, v, v, n)
    res = stats.bootstrap(
        (values,), np.mean, n_resamples=n_boot, method="percentile", confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return Estimate(
        float(values.mean()),
        float(res.confidence_interval.low),
        float(res.confidence_interval.high),
        n,
    )


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean of (b − a) over pairs, with a bootstrap interval over pairs (`bootstrap_mean`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    return bootstrap_mean(b - a, n_boot=n_boot, seed=seed)


def mcnemar(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value for paired binary outcomes (a, b); 1.0 without discordant pairs.

    Args:
        a, b: paired booleans.
        alternative: "two-sided", "greater" (b is true more often than a) or "less".
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(
            f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}"
        )
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5, alternative=alternative).pvalue)


def wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value for paired continuous outcomes (1.0 if all equal)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)


def _seeds_by_layers(effects: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(effects, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or not np.isfinite(x).all():
        raise ValueError(f"{name} of shape {x.shape}: expected finite (seeds >= 2) × (layers >= 2)")
    return x


def layer_profile_differs(a: np.ndarray, b: np.ndarray, n_perm: int = 9999, seed: int = 0) -> float:
    """p-value of the layer × intervention interaction on paired seeds.

    a, b: (seeds × layers) effects of two interventions (e.g. adding a feature and suppressing
    it) on the same seeds. Their per-seed difference d = a − b has one mean per layer; with no
    interaction that mean is the same at every layer, so the layers of one seed are
    exchangeable. The statistic is the variance over layers of d's layer means; the null
    permutes layers within each seed (scipy.stats.permutation_test, paired samples).
    """
    a, b = _seeds_by_layers(a, "a"), _seeds_by_layers(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired effects differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    if np.allclose(d, d[:, :1]):  # every seed the same at every layer: no profile at all
        return 1.0
    res = stats.permutation_test(
        tuple(d.T), lambda *cols: np.var([np.mean(c) for c in cols]), permutation_type="samples",
        n_resamples=n_perm, alternative="greater", rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(res.pvalue)


def flat_within(effects: np.ndarray, margin: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Equivalence test of "flat over layers": the largest deviation of a layer's mean effect
    from the mean over layers, with its one-sided 95% upper bound (the 90% two-sided percentile
    bootstrap over seeds, as in two one-sided tests); flat when that bound is below `margin`.

    effects: (seeds × layers) paired effects; margin: the largest deviation that counts as
    flat, in the effect's units, fixed before looking (e.g. a fraction of another effect).
    """
    x = _seeds_by_layers(effects, "effects")
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin={margin!r}: an equivalence margin must be > 0")

    def max_deviation(rows: np.ndarray) -> float:
        m = x[rows].mean(0)
        return float(np.abs(m - m.mean()).max())

    value = max_deviation(np.arange(len(x)))
    _, upper = bootstrap_ci(max_deviation, [np.arange(len(x))], n_boot, seed, confidence_level=0.90)
    return {"max_deviation": value, "upper": upper, "margin": float(margin), "n": len(x),
            "flat": bool(upper < margin)}  # fmt: skip
