"""Statistics used in every report behave as textbooks say."""

import numpy as np
import pytest

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


def test_a_layer_interaction_is_found_where_profiles_differ_and_not_where_they_are_parallel():
    from reports.stats import layer_profile_differs

    rng = np.random.default_rng(0)
    seeds, layers = 20, 5
    add = np.linspace(0, 4, layers) + rng.normal(0, 1, (seeds, layers))  # rises with depth
    flat = 1.0 + rng.normal(0, 1, (seeds, layers))
    parallel = add + 2.0 + rng.normal(0, 1, (seeds, layers))  # the same profile, shifted
    assert layer_profile_differs(add, flat, n_perm=999) < 0.01
    assert layer_profile_differs(add, parallel, n_perm=999) > 0.05
    assert layer_profile_differs(add, add) == 1.0
    with pytest.raises(ValueError, match=r"differ in shape"):
        layer_profile_differs(add, flat[:, :3])
    with pytest.raises(ValueError, match=r"seeds >= 2"):
        layer_profile_differs(add[:1], flat[:1])


def test_flatness_is_an_equivalence_test_with_a_margin():
    from reports.stats import flat_within

    rng = np.random.default_rng(1)
    flat = 1.0 + rng.normal(0, 0.3, (30, 5))
    rising = np.linspace(0, 4, 5) + rng.normal(0, 0.3, (30, 5))
    assert flat_within(flat, margin=0.5)["flat"] and not flat_within(rising, margin=0.5)["flat"]
    noisy = 1.0 + rng.normal(0, 3, (6, 5))  # flat on average, but too few seeds to show it
    assert not flat_within(noisy, margin=0.5)["flat"]
    with pytest.raises(ValueError, match=r"margin=0"):
        flat_within(flat, margin=0)
