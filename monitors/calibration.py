"""Thresholds from clean scores, and the provenance check of saved monitors.

    cal = calibrate(clean_scores, method="sigma", k=2.0)      # mean + 2·std (the reference)
    cal = calibrate(clean_scores, method="quantile", fpr=0.05)  # 95th percentile of clean scores
    cal.threshold

A calibration is only meaningful for the activations it was computed on, so it is saved with
the scorer (see `monitors.scorers.Scorer.save`) together with the model id, layer and width d;
`check_provenance` refuses a file made for another model, layer or d.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CALIBRATION_METHODS = ("sigma", "quantile")
#: The reference protocol: threshold = mean + 2·std of clean scores.
REFERENCE_K = 2.0


@dataclass(frozen=True)
class Calibration:
    """A veto threshold and how it was obtained.

    Attributes:
        method: "sigma" (mean + k·std) or "quantile" (the (1 − fpr) quantile).
        threshold: scores strictly above it are anomalous.
        n: number of clean scores it was computed from.
        mean, std: of the clean scores (std with ddof=1 when n > 1).
        k: the multiplier of std ("sigma"), else None.
        fpr: the target false-positive rate ("quantile"), else None.
    """

    method: str
    threshold: float
    n: int
    mean: float
    std: float
    k: float | None = None
    fpr: float | None = None

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


def calibrate(
    scores: Any, method: str = "sigma", k: float = REFERENCE_K, fpr: float = 0.05
) -> Calibration:
    """Threshold from clean scores.

    Args:
        scores: 1-D array-like of finite clean scores (at least 2).
        method: "sigma" ⇒ mean + k·std; "quantile" ⇒ the smallest clean score with at most a
            fraction `fpr` of clean scores above it (numpy's "higher" quantile at 1 − fpr).
        k: std multiplier for "sigma" (reference 2).
        fpr: target false-positive rate for "quantile", in (0, 1).

    Raises:
        ValueError: unknown method, bad k or fpr, fewer than 2 scores, or non-finite scores.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method={method!r}: expected one of {CALIBRATION_METHODS}")
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        raise ValueError(f"calibration needs at least 2 clean scores, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{bad} of {arr.size} clean scores are NaN or inf")
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    if method == "sigma":
        if isinstance(k, bool) or not math.isfinite(float(k)) or float(k) < 0:
            raise ValueError(f"k={k!r}: must be a finite number >= 0")
        return Calibration("sigma", mean + float(k) * std, int(arr.size), mean, std, k=float(k))
    if isinstance(fpr, bool) or not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr={fpr!r}: must be in (0, 1)")
    threshold = float(np.quantile(arr, 1.0 - float(fpr), method="higher"))
    return Calibration("quantile", threshold, int(arr.size), mean, std, fpr=float(fpr))


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
