"""Thresholds from clean scores, and the provenance check of saved monitors.

    cal = calibrate(clean_scores, method="sigma", k=2.0)      # mean + 2·std (the reference)
    cal = calibrate(clean_scores, method="quantile", fpr=0.05)  # 95th percentile of clean scores
    cal = calibrate(clean_scores, method="conformal-decision", alpha=0.1)  # split conformal
    cal = calibrate_episodes(per_episode_scores, method="conformal-episode", alpha=0.1)
    cal.threshold

Split conformal (`conformal_threshold`): with n clean calibration scores, the threshold is the
ceil((n + 1)(1 − alpha))-th smallest of them. If a new clean score is exchangeable with the n
calibration scores, P(new score > threshold) <= alpha (and >= alpha − 1/(n + 1) without ties),
over the draw of calibration and test data together. "conformal-decision" calibrates on the clean
decisions' scores: the guarantee is per decision (approximate, as decisions of one episode are
correlated and not exchangeable with each other). "conformal-episode" calibrates on each clean
calibration episode's largest decision score: a clean episode (i.i.d. with the calibration
episodes, same settings) has any decision over the threshold, i.e. a false alarm anywhere in it,
with probability <= alpha; this guarantee is exact for independent episodes. The calibration
data must be disjoint from the data the scorer was fitted on and from the evaluation data.

A calibration is only meaningful for the activations it was computed on, so it is saved with
the scorer (see `monitors.scorers.Scorer.save`) together with the model id, layer and width d;
`check_provenance` refuses a file made for another model, layer or d.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

CALIBRATION_METHODS = ("sigma", "quantile", "conformal-decision", "conformal-episode")
#: What one calibration score is, per method ("episode": an episode's largest decision score).
UNITS = {"sigma": "decision", "quantile": "decision", "conformal-decision": "decision",
         "conformal-episode": "episode"}  # fmt: skip
#: The reference protocol: threshold = mean + 2·std of clean scores.
REFERENCE_K = 2.0


@dataclass(frozen=True)
class Calibration:
    """A veto threshold and how it was obtained.

    Attributes:
        method: "sigma" (mean + k·std), "quantile" (the (1 − fpr) quantile),
            "conformal-decision" or "conformal-episode" (split conformal at level alpha).
        threshold: scores strictly above it are anomalous.
        n: number of clean scores it was computed from (decisions, or episodes for
            "conformal-episode").
        mean, std: of the clean scores (std with ddof=1 when n > 1).
        k: the multiplier of std ("sigma"), else None.
        fpr: the target false-positive rate ("quantile"), else None.
        alpha: the promised false-alarm bound (conformal methods), else None.
        unit: what one score is: "decision", or "episode" (its largest decision score); the
            unit the promised alpha applies to.
        seeds: env seeds of the clean calibration episodes, when known (disjoint from the
            seeds the scorer was fitted on and from the evaluation seeds).
    """

    method: str
    threshold: float
    n: int
    mean: float
    std: float
    k: float | None = None
    fpr: float | None = None
    alpha: float | None = None
    unit: str = "decision"
    seeds: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """Inverse of `to_dict`; ValueError naming unknown or missing keys."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown calibration keys {unknown}; allowed: {sorted(known)}")
        missing = sorted({"method", "threshold", "n", "mean", "std"} - set(d))
        if missing:
            raise ValueError(f"calibration lacks {missing}")
        if d["method"] not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration method {d['method']!r}: expected one of {CALIBRATION_METHODS}"
            )
        return cls(**d)


def check_alpha(alpha: Any) -> float:
    """`alpha` as a float in (0, 1); ValueError otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}: must be in (0, 1)")
    return float(alpha)


def conformal_rank(n: int, alpha: float) -> int:
    """ceil((n + 1)(1 − alpha)): the 1-based rank of the split-conformal threshold among n
    sorted calibration scores (a rank > n means n is too small for this alpha)."""
    return math.ceil((n + 1) * (1 - _exact(alpha)))


def _exact(alpha: float) -> Fraction:
    """alpha as the decimal it prints as (0.3, not the binary float just below it), so that
    (n + 1)(1 − alpha) lands on whole numbers exactly."""
    return Fraction(repr(check_alpha(alpha)))


def conformal_min_n(alpha: float) -> int:
    """The fewest calibration scores for which split conformal at `alpha` gives a finite
    threshold (9 for alpha = 0.1, 19 for 0.05)."""
    a = _exact(alpha)
    return max(1, math.ceil((1 - a) / a))


def conformal_threshold(scores: Any, alpha: float) -> float:
    """The split-conformal threshold: the ceil((n + 1)(1 − alpha))-th smallest clean score.

    A new score exchangeable with these n exceeds it with probability <= alpha (module
    docstring).

    Raises:
        ValueError: bad alpha, non-finite scores, or fewer than `conformal_min_n(alpha)` scores
            (the rank would exceed n: no finite threshold keeps the guarantee).
    """
    arr = _clean_scores(scores, 1)
    rank = conformal_rank(arr.size, alpha)
    if rank > arr.size:
        raise ValueError(
            f"alpha={alpha}: split conformal needs at least {conformal_min_n(alpha)} clean "
            f"calibration scores, got {arr.size} (calibrate on more clean episodes or raise alpha)"
        )
    return float(np.sort(arr)[rank - 1])


def _clean_scores(scores: Any, at_least: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size < at_least:
        raise ValueError(f"calibration needs at least {at_least} clean scores, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{bad} of {arr.size} clean scores are NaN or inf")
    return arr


def calibrate(
    scores: Any,
    method: str = "sigma",
    k: float = REFERENCE_K,
    fpr: float = 0.05,
    alpha: float = 0.1,
    seeds: list[int] | None = None,
) -> Calibration:
    """Threshold from clean scores.

    Args:
        scores: 1-D array-like of finite clean scores (at least 2): decision scores, or for
            "conformal-episode" one score per clean episode, its largest decision score (see
            `calibrate_episodes`).
        method: "sigma" ⇒ mean + k·std; "quantile" ⇒ the smallest clean score with at most a
            fraction `fpr` of clean scores above it (numpy's "higher" quantile at 1 − fpr);
            "conformal-decision" / "conformal-episode" ⇒ `conformal_threshold(scores, alpha)`.
        k: std multiplier for "sigma" (reference 2).
        fpr: target false-positive rate for "quantile", in (0, 1).
        alpha: promised false-alarm bound for the conformal methods, in (0, 1).
        seeds: env seeds of the calibration episodes, recorded with the threshold.

    Raises:
        ValueError: unknown method, bad k, fpr or alpha, fewer than 2 scores (or too few for
            alpha), or non-finite scores.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method={method!r}: expected one of {CALIBRATION_METHODS}")
    arr = _clean_scores(scores, 2)
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    common = {"n": int(arr.size), "mean": mean, "std": std, "unit": UNITS[method],
              "seeds": None if seeds is None else [int(s) for s in seeds]}  # fmt: skip
    if method == "sigma":
        if isinstance(k, bool) or not math.isfinite(float(k)) or float(k) < 0:
            raise ValueError(f"k={k!r}: must be a finite number >= 0")
        return Calibration("sigma", mean + float(k) * std, k=float(k), **common)
    if method == "quantile":
        if isinstance(fpr, bool) or not 0.0 < float(fpr) < 1.0:
            raise ValueError(f"fpr={fpr!r}: must be in (0, 1)")
        threshold = float(np.quantile(arr, 1.0 - float(fpr), method="higher"))
        return Calibration("quantile", threshold, fpr=float(fpr), **common)
    return Calibration(method, conformal_threshold(arr, alpha), alpha=check_alpha(alpha), **common)


def calibrate_episodes(episode_scores: Any, method: str = "sigma", **kwargs: Any) -> Calibration:
    """Threshold from the decision scores of clean calibration episodes, kept per episode.

    "conformal-episode" calibrates on each episode's largest score (the per-episode
    guarantee); every other method on all decisions pooled.

    Args:
        episode_scores: one 1-D array-like of decision scores per clean episode (an episode
            without decisions is left out).
        method, **kwargs: as in `calibrate` (k, fpr, alpha, seeds).
    """
    episodes = [np.asarray(e, dtype=np.float64).reshape(-1) for e in episode_scores]
    episodes = [e for e in episodes if e.size]
    if method == "conformal-episode":
        scores = np.array([e.max() for e in episodes])
    else:
        scores = np.concatenate(episodes) if episodes else np.zeros(0)
    return calibrate(scores, method, **kwargs)


def calibration_table(episode_scores: Any, methods: Any = CALIBRATION_METHODS,
                      **kwargs: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every method's calibration of the same clean episodes, side by side (for reports).

    Args:
        episode_scores, **kwargs: as in `calibrate_episodes` (seeds are left out of the rows).
        methods: the methods to compute.

    Returns:
        method → `Calibration.to_dict()` without seeds, or {"method", "unit", "error"} where the
        method cannot calibrate these scores (e.g. too few for split conformal at alpha).
    """
    kwargs.pop("seeds", None)
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(methods):
        try:
            row = calibrate_episodes(episode_scores, method, **kwargs).to_dict()
        except ValueError as exc:
            row = {"method": method, "unit": UNITS.get(method), "error": str(exc)}
        row.pop("seeds", None)
        out[method] = row
    return out


#: Provenance fields a saved scorer records and a loader may check.
PROVENANCE_KEYS = ("model", "layer", "d")


def check_provenance(found: dict[str, Any], source: str, **expected: Any) -> None:
    """Raise ValueError if a saved scorer's provenance differs from what the caller runs.

    Args:
        found: the saved {"model", "layer", "d"} (values may be None when unknown).
        source: the file, named in the message.
        **expected: model=..., layer=..., d=...; None (or absent) means "do not check".
    """
    unknown = sorted(set(expected) - set(PROVENANCE_KEYS))
    if unknown:
        raise ValueError(f"unknown provenance keys {unknown}; allowed: {list(PROVENANCE_KEYS)}")
    problems = []
    for key in PROVENANCE_KEYS:
        want = expected.get(key)
        if want is None:
            continue
        have = found.get(key)
        if have is None or str(have) != str(want):
            problems.append(f"{key}: file has {have!r}, expected {want!r}")
    if problems:
        raise ValueError(
            f"threshold file {source} was made for other activations ({'; '.join(problems)}): "
            "recalibrate the monitor on this model/layer (physteer sarm-eval) instead"
        )
