"""Split-conformal thresholds: the exact quantile index, too few scores, and the promised
false-alarm rate on large exchangeable synthetic samples (per decision and per episode)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitors.calibration import (
    Calibration,
    calibrate,
    calibrate_episodes,
    calibration_table,
    conformal_min_n,
    conformal_rank,
    conformal_threshold,
)


@pytest.mark.parametrize("n, alpha, rank", [
    (9, 0.1, 9), (19, 0.1, 18), (20, 0.1, 19), (99, 0.05, 95), (9, 0.3, 7), (10, 0.5, 6), (19, 0.05, 19),
])  # fmt: skip
def test_threshold_is_the_ceil_n_plus_1_times_1_minus_alpha_th_smallest(n, alpha, rank):
    assert conformal_rank(n, alpha) == rank == math.ceil(round((n + 1) * (1 - alpha), 9))
    scores = np.random.default_rng(n).permutation(np.arange(1.0, n + 1))  # k-th smallest is k
    assert conformal_threshold(scores, alpha) == float(rank)


def test_too_few_scores_for_alpha_name_the_minimum():
    assert (conformal_min_n(0.1), conformal_min_n(0.05), conformal_min_n(0.3)) == (9, 19, 3)
    conformal_threshold(np.arange(9.0), 0.1)  # 9 is enough
    with pytest.raises(ValueError, match="at least 9 clean calibration scores, got 8"):
        conformal_threshold(np.arange(8.0), 0.1)
    with pytest.raises(ValueError, match="alpha=1.5"):
        conformal_threshold(np.arange(20.0), 1.5)
    with pytest.raises(ValueError, match="1 of 3 clean scores are NaN"):
        calibrate([1.0, math.nan, 2.0], "conformal-decision", alpha=0.5)


@pytest.mark.parametrize("n, alpha", [(19, 0.1), (50, 0.1), (30, 0.2)])
def test_per_decision_coverage_on_exchangeable_scores(n, alpha):
    """20,000 draws of n calibration scores and one new score from the same distribution: the
    new score exceeds the threshold with probability in [alpha − 1/(n+1), alpha]."""
    rng = np.random.default_rng(0)
    trials = 20_000
    cal = rng.gamma(2.0, size=(trials, n))
    new = rng.gamma(2.0, size=trials)
    rank = conformal_rank(n, alpha)
    thresholds = np.sort(cal, axis=1)[:, rank - 1]
    rate = float(np.mean(new > thresholds))
    se = math.sqrt(alpha * (1 - alpha) / trials)
    assert alpha - 1 / (n + 1) - 4 * se <= rate <= alpha + 4 * se
    assert conformal_threshold(cal[0], alpha) == thresholds[0]


def test_per_episode_coverage_on_correlated_decisions():
    """Episodes of 3..12 correlated decisions: calibrated on 30 clean episodes' largest scores,
    a new clean episode has any decision over the threshold with probability <= alpha, while
    pooling its decisions ("conformal-decision") bounds single decisions, not episodes."""
    rng = np.random.default_rng(1)

    def episode() -> np.ndarray:
        level = rng.normal()  # shared by the episode's decisions
        return level + 0.5 * rng.normal(size=rng.integers(3, 13))

    alpha, trials, hits, hits_dec, dec_hits, dec_n = 0.1, 3000, 0, 0, 0, 0
    for _ in range(trials):
        cal = [episode() for _ in range(30)]
        per_ep = calibrate_episodes(cal, "conformal-episode", alpha=alpha)
        per_dec = calibrate_episodes(cal, "conformal-decision", alpha=alpha)
        new = episode()
        hits += bool(np.any(new > per_ep.threshold))
        hits_dec += bool(np.any(new > per_dec.threshold))
        dec_hits += int(np.sum(new > per_dec.threshold))
        dec_n += new.size
    se = math.sqrt(alpha * (1 - alpha) / trials)
    assert alpha - 1 / 31 - 4 * se <= hits / trials <= alpha + 4 * se
    assert dec_hits / dec_n <= alpha + 0.02  # per decision: approximately (decisions correlate)
    assert hits_dec / trials > alpha + 0.05  # and far from a per-episode guarantee


def test_calibration_records_method_alpha_unit_and_seeds():
    per_episode = [[1.0, 5.0], [2.0], [3.0, 0.5, 4.0]]
    cal = calibrate_episodes(per_episode, "conformal-episode", alpha=0.5, seeds=[7, 8, 9])
    assert (cal.method, cal.unit, cal.alpha, cal.n, cal.seeds) == (
        "conformal-episode",
        "episode",
        0.5,
        3,
        [7, 8, 9],
    )
    assert cal.threshold == 4.0  # maxima 5, 2, 4: rank ceil(4 · 0.5) = 2 → 4
    dec = calibrate_episodes(per_episode, "conformal-decision", alpha=0.5)
    assert (dec.unit, dec.n, dec.threshold) == ("decision", 6, 3.0)  # rank ceil(7 · 0.5) = 4
    assert Calibration.from_dict(cal.to_dict()) == cal
    old = {
        "method": "sigma",
        "threshold": 1.0,
        "n": 4,
        "mean": 0.5,
        "std": 0.2,
        "k": 2.0,
        "fpr": None,
    }
    assert Calibration.from_dict(old).unit == "decision"  # files saved before alpha/unit/seeds
    table = calibration_table(per_episode, ("sigma", "conformal-episode"), alpha=0.1, seeds=[1])
    assert table["sigma"]["threshold"] == calibrate([1.0, 5.0, 2.0, 3.0, 0.5, 4.0]).threshold
    assert "at least 9" in table["conformal-episode"]["error"] and "seeds" not in table["sigma"]
