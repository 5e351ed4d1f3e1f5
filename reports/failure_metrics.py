"""Failure-prediction metrics of one scorer over scored episodes (no env, no model): what
`physteer monitor-bench` reports per scorer.

An episode here is a dict:

    {"seed", "condition", "kind" (shift kind or "none"), "failed": bool,
     "failure_step": int or None (the break, or the last step of a timeout; None: success),
     "steps": [decision step, ...], "scores": [score, ...]}   # one score per decision, in order

A scorer "alarms" at the first decision whose score is above its threshold. Only decisions
before the failure step count (an alarm after the break cannot prevent it), so a failed episode
is caught when it alarms before failing, and its lead time is failure step − alarm step.

`episode_metrics` gives, with n and 95% intervals: episode ROC-AUC (each episode's largest
score before its failure, failed vs successful; bootstrap over episodes), the time-matched
ROC-AUC (each failed episode against each successful one over the same window: the successful
episode's decisions before the failed one's failure step; measured: a successful episode's
later phases (carrying, releasing) score differently from its grasp, so the plain AUROC, which
sets a failure's short window beside a success's whole episode, ranks a scorer that rises late
in successes as if it predicted success: the VLA's action-token entropy reads 0.28 plain and
0.48 time-matched on held-out shifts, the SAE scorer 0.55 and 0.61), average precision
(the threshold-free precision/recall summary), and at the calibrated threshold: the share of
failures caught in time, the false-alarm rate on successful episodes, balanced accuracy and the
median lead time (steps), beside the failures a control with the same alarms dealt to other
episodes of the same kind would catch (`shuffled_alarms`: measured, the enforced fallback
rescues nearly every failure it takes over before, so enforcing any monitor that alarms often
lowers failures; this control says how much of a scorer's catch its timing earns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from reports import stats


def usable_scores(episode: dict[str, Any]) -> list[tuple[int, float]]:
    """(step, score) of the decisions before the failure step (all of them for a success)."""
    end = episode["failure_step"]
    return [(s, x) for s, x in zip(episode["steps"], episode["scores"], strict=True)
            if (end is None or s < end) and x is not None and math.isfinite(x)]  # fmt: skip


def episode_score(episode: dict[str, Any]) -> float:
    """The episode's largest usable score (−inf without one)."""
    xs = [x for _, x in usable_scores(episode)]
    return max(xs) if xs else -math.inf


def matched_wins(failed: Sequence[dict[str, Any]], ok: Sequence[dict[str, Any]]) -> np.ndarray:
    """(failed × successful): 1 where the failed episode's largest score before its failure step
    exceeds the successful one's largest score before that same step, 0.5 on a tie, else 0."""
    ends = sorted({e["failure_step"] for e in failed})
    # each successful episode's running maximum, read at every failure step
    ok_max = np.full((len(ok), len(ends)), -np.inf)
    for i, e in enumerate(ok):
        pairs = usable_scores(e)
        for j, end in enumerate(ends):
            xs = [x for s, x in pairs if s < end]
            ok_max[i, j] = max(xs) if xs else -np.inf
    column = {end: j for j, end in enumerate(ends)}
    wins = np.empty((len(failed), len(ok)))
    for i, e in enumerate(failed):
        a, b = episode_score(e), ok_max[:, column[e["failure_step"]]]
        wins[i] = (a > b) + 0.5 * (a == b)
    return wins


def matched_auc(failed: Sequence[dict[str, Any]], ok: Sequence[dict[str, Any]]) -> float:
    """P(a failed episode's largest score before its failure step > a successful episode's
    largest score before that same step), ties counted half, over every (failed, successful)
    pair: ROC-AUC with both windows of equal length (NaN without both kinds)."""
    return float(matched_wins(failed, ok).mean()) if failed and ok else math.nan


def first_alarm(episode: dict[str, Any], threshold: float) -> int | None:
    """The step of the first usable decision scoring above the threshold."""
    return next((s for s, x in usable_scores(episode) if x > threshold), None)


def shuffled_alarms(
    episodes: Sequence[dict[str, Any]], threshold: float, n_perm: int = 500, seed: int = 0
) -> dict[str, Any]:
    """The failures caught in time against a control monitor with the same alarms dealt to other
    episodes: each episode's first alarm step (or none; a failed episode's only before its
    failure, the decisions it scores) shuffled among the episodes of its `kind`, n_perm times.
    The control alarms as often and as early as the scorer, but at random with respect to
    which episode fails; where the enforced fallback rescues whatever it takes
    over before a failure, it is what enforcing an uninformative monitor would prevent.
    Returns the observed count, the control's mean and 95% range, and the one-sided permutation
    p-value of catching at least as many."""
    rng = np.random.default_rng(seed)
    alarms = [first_alarm(e, threshold) for e in episodes]
    ends = [e["failure_step"] if e["failed"] else None for e in episodes]

    def caught(order: Sequence[int]) -> int:
        return sum(end is not None and (a := alarms[j]) is not None and a < end
                   for end, j in zip(ends, order, strict=True))  # fmt: skip

    observed = caught(range(len(episodes)))
    kinds: dict[Any, list[int]] = {}
    for i, e in enumerate(episodes):
        kinds.setdefault(e.get("kind"), []).append(i)
    null = np.empty(n_perm)
    for r in range(n_perm):
        order = list(range(len(episodes)))
        for members in kinds.values():
            for i, j in zip(members, rng.permutation(members), strict=True):
                order[i] = int(j)
        null[r] = caught(order)
    return {"observed": observed, "mean": float(null.mean()) if n_perm else math.nan,
            "low": float(np.percentile(null, 2.5)) if n_perm else math.nan,
            "high": float(np.percentile(null, 97.5)) if n_perm else math.nan,
            "p_more": float((1 + np.sum(null >= observed)) / (1 + n_perm)), "n_perm": n_perm}  # fmt: skip


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(neg) == 0 or len(pos) == 0:
        return math.nan
    finite = np.nan_to_num(np.r_[neg, pos], neginf=-1e300)
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], finite))


def episode_metrics(
    episodes: Sequence[dict[str, Any]], threshold: float, n_boot: int = 500
) -> dict[str, Any]:
    """The module docstring's figures for one scorer on these episodes."""
    from sklearn.metrics import average_precision_score

    failed = [e for e in episodes if e["failed"]]
    ok = [e for e in episodes if not e["failed"]]
    neg = np.array([episode_score(e) for e in ok])
    pos = np.array([episode_score(e) for e in failed])
    auc = _auc(neg, pos)
    lo, hi = stats.bootstrap_ci(lambda a, b: _auc(neg[a], pos[b]), [np.arange(len(neg)), np.arange(len(pos))],
                                n_boot=n_boot)  # fmt: skip
    # the pairwise wins once; a resample of episodes picks rows and columns of them
    wins = matched_wins(failed, ok) if failed and ok else np.zeros((0, 0))
    matched = float(wins.mean()) if wins.size else math.nan
    mlo, mhi = stats.bootstrap_ci(lambda a, b: float(wins[np.ix_(b, a)].mean()),
                                  [np.arange(len(ok)), np.arange(len(failed))], n_boot=n_boot)  # fmt: skip
    ap = (
        float(average_precision_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.nan_to_num(np.r_[neg, pos], neginf=-1e300)))
        if len(neg) and len(pos) else math.nan
    )  # fmt: skip
    alarms_ok = [first_alarm(e, threshold) is not None for e in ok]
    leads = [e["failure_step"] - a for e in failed if (a := first_alarm(e, threshold)) is not None]
    caught = len(leads)
    tpr = stats.wilson(caught, len(failed))
    fpr = stats.wilson(sum(alarms_ok), len(ok))
    bal = 0.5 * (tpr.value + 1 - fpr.value) if len(failed) and len(ok) else math.nan
    lead = (
        stats.bootstrap_ci(lambda a: float(np.median(np.asarray(leads)[a])), [np.arange(len(leads))], n_boot=n_boot)
        if leads else (math.nan, math.nan)
    )  # fmt: skip
    return {
        "n_failed": len(failed), "n_success": len(ok),
        "auroc": {"value": auc, "low": lo, "high": hi},
        "auroc_matched": {"value": matched, "low": mlo, "high": mhi},
        "average_precision": ap, "base_rate": len(failed) / max(len(episodes), 1),
        "caught": tpr.to_dict() | {"k": caught}, "false_alarm": fpr.to_dict() | {"k": sum(alarms_ok)},
        "caught_shuffled": shuffled_alarms(episodes, threshold, n_perm=n_boot),
        "balanced_accuracy": bal,
        "lead_steps": {"median": float(np.median(leads)) if leads else math.nan, "low": lead[0], "high": lead[1],
                       "n": len(leads)},
    }  # fmt: skip
