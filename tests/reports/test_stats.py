"""Statistics used in every report behave as textbooks say."""

import numpy as np

from reports.stats import bootstrap_mean, mcnemar, paired_difference, wilcoxon, wilson


def test_wilson_bounds():
    e = wilson(0, 20)
    assert e.value == 0 and e.low == 0 and 0.1 < e.high < 0.2
    e = wilson(20, 20)
    assert e.high == 1 and 0.8 < e.low < 0.9
    e = wilson(10, 20)
    assert e.low < 0.5 < e.high


def test_bootstrap_covers_mean():
    x = np.random.default_rng(0).normal(3.0, 1.0, 200)
    e = bootstrap_mean(x)
    assert e.low < 3.0 < e.high and e.n == 200


def test_paired_tests_detect_shift_and_not_noise():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 40)
    assert wilcoxon(a, a + 1.0) < 0.001
    assert wilcoxon(a, a) == 1.0
    assert wilcoxon(a, a + rng.normal(0, 1, 40)) > 0.001
    yes = np.ones(20, bool)
    no = np.zeros(20, bool)
    assert mcnemar(no, yes) < 0.001
    assert mcnemar(yes, yes) == 1.0
    d = paired_difference(no.astype(float), yes.astype(float))
    assert d.value == 1.0
