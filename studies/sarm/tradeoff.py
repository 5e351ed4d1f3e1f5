"""The combined scorer's trade-off curve: how detection of one attack kind is bought with another's.

The combined scorer (monitors.combined) takes the max of two calibrated parts' normalised scores,
a = score_A / threshold_A and b = score_B / threshold_B (by default the SAE reconstruction error
and Mahalanobis). Weighting them traces a family between the two parts:

    s_w = max(w · a, (1 − w) · b)        w = 1: part A alone, w = 0: part B alone, 0.5: combined

Each s_w is recalibrated on the same clean calibration episodes with the run's calibration
method (so every point of the curve promises the same clean false-alarm rate), and its
detection of each attack is read from the unmonitored eval episodes' shadow scores: an episode
is detected when its first alarm comes at or after the attack's onset, as an enforcing monitor's
first veto would (before the veto an enforced episode is the unmonitored one, step for step).
At w = 1 and w = 0 the curve therefore reproduces the parts' own detection rates.

    rows = tradeoff_curve(records, calib_scores, ("sae-mean", "mahalanobis-mean"), thresholds,
                          "conformal-episode", seeds=calibration_seeds, alpha=0.1)
    plot_tradeoff(rows, "runs/sarm-eval/tradeoff.png")

No env and no model: records are sarm-eval's episode records (studies.sarm.summary), the
calibration scores are the parts' decision scores on the clean calibration episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studies.sarm.summary import wilson
from studies.sarm.sweep import sweep_kind

#: Perturbations of the frame (the others act on activations or the prompt).
FRAME_KINDS = ("noise", "occlusion", "color")
DEFAULT_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def weighted(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """s_w = max(w·a, (1 − w)·b) of normalised part scores (same shape)."""
    return np.maximum(
        w * np.asarray(a, dtype=np.float64), (1.0 - w) * np.asarray(b, dtype=np.float64)
    )


def _first_alarm(record: dict[str, Any], parts: tuple[str, str], scale: tuple[float, float], w: float,
                 threshold: float) -> int | None:  # fmt: skip
    for d in record["decisions"]:
        a, b = (d["scores"].get(p) for p in parts)
        if a is None or b is None or not np.isfinite(a) or not np.isfinite(b):
            return d["step"]  # fails closed, as the monitor does
        if weighted(a / scale[0], b / scale[1], w) > threshold:
            return d["step"]
    return None


def tradeoff_curve(
    records: Sequence[dict[str, Any]],
    calib_scores: dict[str, Sequence[Sequence[float]]],
    parts: tuple[str, str],
    part_thresholds: dict[str, float],
    method: str,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Detection per attack condition and the clean false-alarm rate at each weight.

    Args:
        records: sarm-eval episode records; the unmonitored ones (monitor None) are read.
        calib_scores: part name → one sequence of decision scores per clean calibration episode
            (the same episodes, in the same order, for both parts).
        parts: the two scorer names (A, B) as in the records' decision scores.
        part_thresholds: each part's own calibrated threshold (the normalisation).
        method, **settings: the calibration (monitors.calibration.calibrate_episodes: method,
            k, fpr, alpha, seeds).
        weights: values of w in [0, 1].

    Returns:
        One row per w: {"w", "threshold", "clean_alarm": wilson, "detection": {condition:
        wilson}, "kinds": {attack kind: wilson pooled over its magnitudes}} (clean_alarm:
        unmonitored clean eval episodes with any alarm).

    Raises:
        ValueError: a part missing from calib_scores or part_thresholds, calibration episodes
            that differ in number, or a weight outside [0, 1].
    """
    from monitors.calibration import calibrate_episodes

    for p in parts:
        if p not in calib_scores or p not in part_thresholds:
            raise ValueError(
                f"part {p!r}: expected calibration scores and a threshold for it; have {sorted(calib_scores)}"
            )
    a_eps, b_eps = ([np.asarray(e, dtype=np.float64) for e in calib_scores[p]] for p in parts)
    if len(a_eps) != len(b_eps) or any(
        x.shape != y.shape for x, y in zip(a_eps, b_eps, strict=True)
    ):
        raise ValueError(
            f"parts {list(parts)}: calibration scores must cover the same episodes and decisions"
        )
    bad = [w for w in weights if not 0.0 <= float(w) <= 1.0]
    if bad:
        raise ValueError(f"weights {bad}: each must be in [0, 1]")
    scale = tuple(float(part_thresholds[p]) for p in parts)
    off = [r for r in records if r.get("monitor") is None]
    clean = [r for r in off if r["condition"] == "clean"]
    attacked: dict[str, list[dict[str, Any]]] = {}
    for r in off:
        if r["condition"] != "clean":
            attacked.setdefault(r["condition"], []).append(r)
    rows = []
    for w in map(float, weights):
        per_episode = [
            weighted(x / scale[0], y / scale[1], w) for x, y in zip(a_eps, b_eps, strict=True)
        ]
        thr = float(calibrate_episodes(per_episode, method, **settings).threshold)
        alarms = [_first_alarm(r, parts, scale, w, thr) for r in clean]
        detection, pooled = {}, {}
        for cond, recs in sorted(attacked.items()):
            hits = [
                (s := _first_alarm(r, parts, scale, w, thr)) is not None and s >= (r["onset"] or 0)
                for r in recs
            ]
            detection[cond] = wilson(sum(hits), len(hits))
            pooled.setdefault(sweep_kind(cond)[0], []).extend(hits)
        rows.append({"w": w, "threshold": thr, "clean_alarm": wilson(sum(a is not None for a in alarms), len(alarms)),
                     "detection": detection, "kinds": {k: wilson(sum(h), len(h)) for k, h in pooled.items()}})  # fmt: skip
    return rows


def combined_tradeoff(cfg: Any, fit_dir: Path, records: Sequence[dict[str, Any]], thresholds: dict[str, float],
                      combined: dict[str, Any], weights: Sequence[float] = DEFAULT_WEIGHTS) -> dict[str, Any]:  # fmt: skip
    """sarm-eval's trade-off section: `tradeoff_curve` of the combined scorer's first two parts,
    calibrated as the run's scorers were, on the run's clean calibration episodes.

    Args:
        cfg: the SarmEvalConfig; fit_dir: its fit run; records, thresholds: its eval records
        and the enforced thresholds; combined: scorers/fit.json's "combined" entry (its parts).

    Returns:
        {"parts": [A, B], "method", "rows": tradeoff_curve's rows}.
    """
    from monitors.scorers import load_scorer
    from studies.sarm.data import decision_activations

    parts = tuple(combined["parts"][:2])
    split = cfg.seed_split()
    calib = {}
    for p in parts:
        scorer = load_scorer(Path(cfg.out) / "scorers" / p)
        calib[p] = [
            scorer.score_many(decision_activations(fit_dir, "unsteered", s, cfg.tokens))
            for s in split["calibration"]
        ]
    settings = {
        "k": cfg.k,
        "fpr": cfg.fpr or 0.05,
        "alpha": cfg.alpha,
        "seeds": split["calibration"],
    }
    rows = tradeoff_curve(
        records, calib, parts, thresholds, cfg.calibration_method, weights, **settings
    )
    return {"parts": list(parts), "method": cfg.calibration_method, "rows": rows}


def plot_tradeoff(
    rows: Sequence[dict[str, Any]], path: str | Path, x: str | None = None, y: str | None = None
) -> Path:
    """Detection of attack kind `y` against kind `x` along the curve, pooled over magnitudes
    (95% Wilson CIs as bars, each point labelled with its w); defaults: a frame corruption
    (noise, occlusion, color) on x and an activation attack on y. Returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage import write_png

    kinds = list(rows[0]["kinds"])
    if x is None or y is None:
        frame = [k for k in kinds if k in FRAME_KINDS]
        rest = [k for k in kinds if k not in frame]
        order = [*rest[:1], *frame, *rest[1:]]
        if len(order) < 2:
            raise ValueError(f"a trade-off plot needs two attack kinds, have {kinds}")
        y, x = y or order[0], x or next(k for k in order if k != (y or order[0]))
    for k in (x, y):
        if k not in kinds:
            raise ValueError(f"attack kind {k!r} is not in the curve; kinds: {kinds}")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        xs = [r["kinds"][x] for r in rows]
        ys = [r["kinds"][y] for r in rows]
        for r, dx, dy in zip(rows, xs, ys, strict=True):
            ax.errorbar(dx["rate"], dy["rate"], xerr=[[dx["rate"] - dx["lo"]], [dx["hi"] - dx["rate"]]],
                        yerr=[[dy["rate"] - dy["lo"]], [dy["hi"] - dy["rate"]]], fmt="o", color="C0", alpha=0.6)  # fmt: skip
            ax.annotate(
                f"w={r['w']:g}",
                (dx["rate"], dy["rate"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        ax.plot([d["rate"] for d in xs], [d["rate"] for d in ys], color="C0", lw=1)
        n = xs[0]["n"], ys[0]["n"]
        ax.set_xlabel(f"detection of {x} (n={n[0]})")
        ax.set_ylabel(f"detection of {y} (n={n[1]})")
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("combined scorer: max(w·A, (1−w)·B), recalibrated per w", fontsize=10)
        fig.tight_layout()
        return write_png(path, fig)
    finally:
        plt.close(fig)
