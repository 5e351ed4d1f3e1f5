"""reports.stats against hand-computed values and on degenerate samples (no warnings)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from reports.stats import (
    bootstrap_ci,
    bootstrap_mean,
    cluster_bootstrap,
    mcnemar,
    paired_difference,
    wilson,
)

Z = 1.959963984540054  # the 97.5% point of the standard normal


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.277533), (5, 10, 0.236593, 0.763407), (10, 10, 0.722467, 1.0),
    (8, 10, 0.490162, 0.943318), (1, 3, 0.061492, 0.792340),
])  # fmt: skip
def test_wilson_matches_the_formula(k, n, low, high):
    e = wilson(k, n)
    assert e.value == k / n and e.n == n
    assert (e.low, e.high) == pytest.approx((low, high), abs=1e-6)
    assert (e.low, e.high) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)


def test_wilson_edges_and_bad_counts():
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == 1.0
    e = wilson(0, 0)
    assert e.n == 0 and all(math.isnan(v) for v in (e.value, e.low, e.high))
    for bad, match in (((3, 2), "successes=3, n=2"), ((-1, 4), "got -1"), ((1.5, 4), "got 1.5")):
        with pytest.raises(ValueError, match=match):
            wilson(*bad)


def test_bootstrap_mean_degenerate_samples_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_mean([]).n == 0 and math.isnan(bootstrap_mean([np.nan]).value)
        assert bootstrap_mean([2.5]).to_dict() == {"value": 2.5, "low": 2.5, "high": 2.5, "n": 1}
        assert bootstrap_mean([0.1] * 7).to_dict() == {
            "value": 0.1,
            "low": 0.1,
            "high": 0.1,
            "n": 7,
        }
        d = paired_difference(np.zeros(5), np.ones(5))
        assert (d.value, d.low, d.high) == (1.0, 1.0, 1.0)
        with pytest.raises(ValueError, match="differ in size"):
            paired_difference(np.zeros(3), np.zeros(4))


def test_bootstrap_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(3).exponential(2.0, 80)
    a, b, c = bootstrap_mean(x, seed=1), bootstrap_mean(x, seed=1), bootstrap_mean(x, seed=2)
    assert a == b and a != c and a.low < x.mean() < a.high
    # the percentile interval of the mean: about ±1.96 standard errors
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert a.high - a.low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_ci_drops_undefined_resamples_and_fixes_single_observations():
    both = lambda a: np.nan if a.min() == a.max() else float(a.mean())  # noqa: E731
    low, high = bootstrap_ci(both, [np.array([0.0, 1.0])], n_boot=400)
    assert (low, high) == (0.5, 0.5)  # only the resamples holding both values count
    assert bootstrap_ci(
        lambda a, b: float(a.mean() - b.mean()), [np.array([3.0]), np.array([1.0])]
    ) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci(np.mean, [np.array([])]))
    with pytest.raises(ValueError, match="n_boot must be a positive int"):
        bootstrap_ci(np.mean, [np.arange(3.0)], n_boot=0)


def test_cluster_bootstrap_resamples_whole_groups():
    # each group's two rows are identical, so resampling groups can never split a pair: the
    # interval of the share of rows equal to their group partner is exactly 1
    groups = np.repeat(np.arange(12), 2)
    x = np.repeat(np.arange(12.0), 2)
    same = lambda v: float(np.mean(np.sort(v)[0::2] == np.sort(v)[1::2]))  # noqa: E731
    assert cluster_bootstrap(same, groups, x, n_boot=300) == (1.0, 1.0)
    # a grouped interval is wider than a row-wise one when rows of a group are equal
    row_wise = bootstrap_ci(np.mean, [x], n_boot=2000)
    grouped = cluster_bootstrap(np.mean, groups, x, n_boot=2000)
    assert grouped[1] - grouped[0] > 1.2 * (row_wise[1] - row_wise[0])
    with pytest.raises(ValueError, match="one row per group label"):
        cluster_bootstrap(np.mean, groups, x[:5])


def test_mcnemar_one_sided():
    a = np.array([True] * 6 + [False] * 4)
    b = np.zeros(10, bool)
    assert mcnemar(b, a, alternative="greater") == pytest.approx(0.5**6)
    assert mcnemar(b, a, alternative="less") == 1.0
    with pytest.raises(ValueError, match="alternative must be"):
        mcnemar(a, b, alternative="both")
