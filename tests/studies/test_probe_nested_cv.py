"""The probe's ridge penalty is chosen inside each outer fold (nested grouped CV)."""

from __future__ import annotations

import numpy as np

from studies.world_model import (
    ALPHAS,
    _auc,
    _r2,
    nested_ridge_oof,
    regularisation_path,
    ridge_predictions,
)


def _data(seed: int, n_eps: int = 30, d: int = 24, signal: float = 1.0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_eps), 2)
    X = rng.normal(size=(2 * n_eps, d))
    y = signal * X[:, :3].sum(1) + rng.normal(size=2 * n_eps)
    return X, y, groups


def _outer_folds(X, y, groups, n_splits=5):
    from sklearn.model_selection import GroupKFold

    return list(GroupKFold(n_splits=n_splits).split(X, y, groups))


def _choose_on_all_folds(X, y, groups, n_splits=5):
    """The biased way: one alpha for every fold, chosen on the folds that report R²."""
    alpha = float(ALPHAS[int(np.nanargmax(regularisation_path(X, y, groups, n_splits)))])
    oof = np.zeros(y.shape)
    for train, test in _outer_folds(X, y, groups, n_splits):
        oof[test] = ridge_predictions(X[train], y[train], X[test], [alpha])[0]
    return oof, alpha


def test_the_outer_test_fold_never_influences_its_own_prediction():
    X, y, groups = _data(0)
    oof, alphas = nested_ridge_oof(X, y, groups, 5)
    assert len(alphas) == 5 and set(alphas) <= set(ALPHAS.tolist())
    biased_changed = False
    for i, (_, test) in enumerate(_outer_folds(X, y, groups)):
        y2 = y.copy()
        y2[test] = np.random.default_rng(i).normal(0, 50, len(test))  # wreck this fold's targets
        oof2, alphas2 = nested_ridge_oof(X, y2, groups, 5)
        assert alphas2[i] == alphas[i]  # chosen without the test fold's targets
        np.testing.assert_array_equal(oof2[test], oof[test])
        # the check has teeth: choosing on all folds does let the test fold move its own prediction
        old, _ = _choose_on_all_folds(X, y, groups)
        new, _ = _choose_on_all_folds(X, y2, groups)
        biased_changed |= not np.array_equal(old[test], new[test])
    assert biased_changed


def test_choosing_alpha_on_the_reported_folds_inflates_r2():
    """No signal: picking the best of 13 penalties on the reported folds reports a higher R²
    than the nested choice does, for every seed (the selection bias the nested CV removes)."""
    gaps = []
    for seed in range(6):
        X, y, groups = _data(100 + seed, signal=0.0)
        biased, _ = _choose_on_all_folds(X, y, groups)
        nested, _ = nested_ridge_oof(X, y, groups, 5)
        gaps.append(_r2(y, biased) - _r2(y, nested))
    # never lower; where the two choices differ (not both at the strongest penalty) clearly higher
    assert min(gaps) >= 0 and sum(g > 0.05 for g in gaps) >= 2, gaps


def test_nested_cv_still_finds_a_real_signal():
    X, y, groups = _data(7, signal=2.0)
    oof, _ = nested_ridge_oof(X, y, groups, 5)
    assert _r2(y, oof) > 0.7


def test_closed_form_ridge_equals_scikit_learn():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    for n, d, outputs in ((40, 8, ()), (30, 50, (3,))):  # more rows than features, and fewer
        X, Xt = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d), rng.normal(size=(7, d))
        X[:, 0] = 2.5  # a constant feature
        y = rng.normal(size=(n, *outputs))
        ours = ridge_predictions(X, y, Xt, [0.01, 1.0, 1e4])
        for a, pred in zip((0.01, 1.0, 1e4), ours, strict=True):
            ref = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(X, y).predict(Xt)
            np.testing.assert_allclose(pred, ref, rtol=1e-7, atol=1e-9)


def test_rank_auroc_equals_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    y = rng.random(50) < 0.3
    score = np.round(rng.normal(size=50) + y, 1)  # with ties
    assert _auc(y, score) == np.float64(roc_auc_score(y, score))
    assert np.isnan(_auc(np.ones(5, bool), np.arange(5.0)))
