"""Scorers: separation of clean and shifted activations, persistence, provenance, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import D, synthetic
from sklearn.metrics import roc_auc_score

from monitors.baselines import MahalanobisScorer, PCAReconstructionScorer
from monitors.sae_scorer import SAEReconstructionScorer
from monitors.scorers import load_scorer, make_scorer

KINDS = {"sae": {"steps": 300}, "mahalanobis": {}, "pca": {}}


@pytest.fixture(scope="module")
def fitted():
    clean = synthetic(3000, seed=0)
    out = {}
    for kind, kw in KINDS.items():
        s = make_scorer(kind, model="toy", layer=1, **kw).fit(clean)
        s.calibrate(s.score_many([synthetic(20, seed=100 + i) for i in range(40)]))
        out[kind] = s
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_separates_clean_from_shifted(fitted, kind):
    s = fitted[kind]
    clean = s.score_many([synthetic(20, seed=1000 + i) for i in range(30)])
    shifted = s.score_many([synthetic(20, shift=1.0, seed=2000 + i) for i in range(30)])
    auc = roc_auc_score(np.r_[np.zeros(30), np.ones(30)], np.r_[clean, shifted])
    assert auc > 0.99, (kind, auc)
    assert np.mean(shifted > s.threshold) >= 0.9
    assert np.mean(clean > s.threshold) <= 0.2


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_roundtrip(fitted, kind, tmp_path):
    s = fitted[kind]
    s.save(tmp_path / kind)
    t = load_scorer(tmp_path / kind, model="toy", layer=1, d=D)
    x = synthetic(20, shift=0.5, seed=5)
    assert t.score(x) == pytest.approx(s.score(x), rel=1e-5)
    assert t.calibration == s.calibration and t.name == s.name


@pytest.mark.parametrize(
    "expected, named",
    [({"model": "SmolVLM"}, "model"), ({"layer": 3}, "layer"), ({"d": 2048}, "d")],
)
def test_threshold_file_for_other_model_layer_or_d(fitted, tmp_path, expected, named):
    fitted["pca"].save(tmp_path)
    with pytest.raises(ValueError, match=f"{named}: file has") as err:
        load_scorer(tmp_path, **expected)
    assert str(list(expected.values())[0]) in str(err.value)


def test_max_aggregate_is_at_least_mean():
    clean = synthetic(2000)
    mean = MahalanobisScorer(aggregate="mean").fit(clean)
    mx = MahalanobisScorer(aggregate="max").fit(clean)
    x = synthetic(10, seed=3)
    assert mx.score(x) >= mean.score(x)
    assert mx.name == "mahalanobis/max"


def test_fit_accepts_a_list_of_decisions():
    decisions = [synthetic(20, seed=i) for i in range(50)]
    a = PCAReconstructionScorer(n_components=4).fit(decisions)
    b = PCAReconstructionScorer(n_components=4).fit(torch.cat(decisions))
    x = synthetic(5, seed=99)
    assert a.score(x) == pytest.approx(b.score(x), rel=1e-5)


def test_pretrained_sae_is_used_as_is():
    trained = SAEReconstructionScorer(steps=50).fit(synthetic(1000))
    s = SAEReconstructionScorer(sae=trained.sae)
    assert s.fitted and s.d == D
    x = synthetic(4, seed=2)
    assert s.score(x) == pytest.approx(trained.score(x))
    with pytest.raises(ValueError, match="d=8"):
        s.fit(torch.randn(10, 8))


def test_bad_input(fitted):
    s = fitted["mahalanobis"]
    with pytest.raises(ValueError, match="d=5 but the scorer was fitted on d=16"):
        s.score(torch.randn(3, 5))
    bad = synthetic(4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/inf"):
        s.score(bad)
    with pytest.raises(ValueError, match="None"):
        s.score(None)
    with pytest.raises(ValueError, match="shape"):
        s.score(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="not fitted"):
        MahalanobisScorer().score(torch.randn(3, D))
    with pytest.raises(ValueError, match="aggregate='median'"):
        MahalanobisScorer(aggregate="median")
    with pytest.raises(ValueError, match="scorer kind 'knn'"):
        make_scorer("knn")
    with pytest.raises(ValueError, match="n_components=0"):
        PCAReconstructionScorer(n_components=0)
    with pytest.raises(ValueError, match="steps=0"):
        SAEReconstructionScorer(steps=0)


def test_load_missing_or_corrupt(tmp_path, fitted):
    with pytest.raises(FileNotFoundError, match="scorer.json"):
        load_scorer(tmp_path)
    fitted["pca"].save(tmp_path)
    (tmp_path / "scorer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_scorer(tmp_path)
