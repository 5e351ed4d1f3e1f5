"""CombinedScorer: max of threshold-normalised parts; recalibrated to the parts' false-alarm
target; fires whenever a part is beyond its threshold (times the combined threshold); saves
and loads with its parts; refuses parts it cannot combine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import D, synthetic

from monitors.baselines import MahalanobisScorer
from monitors.combined import CombinedScorer
from monitors.probe import LinearProbeScorer
from monitors.sae_scorer import SAEReconstructionScorer
from monitors.scorers import load_scorer, make_scorer

ALPHA = 0.1


def decisions(n: int, seed: int, shift: float = 0.0) -> list[torch.Tensor]:
    return [synthetic(12, shift=shift, seed=seed + i) for i in range(n)]


@pytest.fixture(scope="module")
def calib():
    return decisions(300, seed=10_000)


@pytest.fixture(scope="module")
def parts(calib):
    clean = synthetic(3000, seed=0)
    sae = SAEReconstructionScorer(steps=150, model="toy", layer=1).fit(clean)
    maha = MahalanobisScorer(model="toy", layer=1).fit(clean)
    for s in (sae, maha):
        s.calibrate(s.score_many(calib), method="conformal-decision", alpha=ALPHA)
    return sae, maha


@pytest.fixture(scope="module")
def combined(parts, calib):
    c = CombinedScorer(parts)
    c.calibrate(c.score_many(calib), method="conformal-decision", alpha=ALPHA)
    return c


def test_threshold_gives_the_target_false_alarm_rate(parts, combined, calib):
    # on the calibration scores: at most alpha above the threshold (split conformal)
    assert np.mean(combined.score_many(calib) > combined.threshold) <= ALPHA
    # on fresh clean decisions: close to alpha, like each part, where the union of the parts'
    # own alarms fires more often
    fresh = decisions(1000, seed=50_000)
    rate = np.mean(combined.score_many(fresh) > combined.threshold)
    assert abs(rate - ALPHA) < 0.05, rate
    union = np.mean(np.any([p.score_many(fresh) > p.threshold for p in parts], axis=0))
    assert union >= rate
    assert combined.threshold >= 1.0  # the union of two alarms needs a higher bar


def test_fires_whenever_a_part_is_beyond_its_threshold(parts, combined):
    xs = decisions(100, seed=70_000) + decisions(100, seed=80_000, shift=0.3)
    parts_scores = np.array([p.score_many(xs) for p in parts])  # (2 × n)
    part_thr = np.array([[p.threshold] for p in parts])
    score = combined.score_many(xs)
    np.testing.assert_allclose(score, (parts_scores / part_thr).max(0), rtol=1e-12)
    for t in (1.0, combined.threshold):
        fires = score > t
        beyond = np.any(parts_scores > part_thr * t, axis=0)
        np.testing.assert_array_equal(fires, beyond)
        assert beyond.any() and not beyond.all()  # both cases occur
    # normalised(): each part on its own
    norm = combined.normalised(xs[-1])
    assert max(norm.values()) == pytest.approx(combined.score(xs[-1]))
    assert set(norm) == {"sae-mean", "mahalanobis-mean"}


def test_save_load_round_trip(combined, tmp_path):
    combined.save(tmp_path / "combined")
    back = load_scorer(tmp_path / "combined", model="toy", layer=1, d=D)
    assert isinstance(back, CombinedScorer) and back.name == "combined"
    assert back.threshold == combined.threshold
    assert back.part_names == combined.part_names
    assert [p.threshold for p in back.parts] == [p.threshold for p in combined.parts]
    xs = decisions(10, seed=90_000, shift=0.2)
    np.testing.assert_allclose(back.score_many(xs), combined.score_many(xs), rtol=1e-6)
    with pytest.raises(ValueError, match="layer"):
        load_scorer(tmp_path / "combined", layer=3)
    # a part whose threshold no longer matches the one the combined scorer was built with
    part = load_scorer(tmp_path / "combined" / "parts" / "mahalanobis-mean")
    part.calibration = dataclasses.replace(part.calibration, threshold=part.threshold * 2)
    part.save(tmp_path / "combined" / "parts" / "mahalanobis-mean")
    with pytest.raises(ValueError, match="was built with"):
        load_scorer(tmp_path / "combined")


def test_bad_parts(parts):
    sae, maha = parts
    with pytest.raises(ValueError, match="at least 2 parts"):
        CombinedScorer([sae])
    raw = MahalanobisScorer().fit(synthetic(200, seed=1))
    with pytest.raises(ValueError, match="calibrate each part"):
        CombinedScorer([sae, raw])
    zero = MahalanobisScorer().fit(synthetic(200, seed=1))
    zero.calibration = dataclasses.replace(maha.calibration, threshold=0.0)
    with pytest.raises(ValueError, match="threshold 0.0"):
        CombinedScorer([sae, zero])
    narrow = MahalanobisScorer().fit(synthetic(200, seed=1, d=8))
    narrow.calibrate(narrow.score_many([synthetic(5, d=8, seed=s) for s in range(5)]))
    with pytest.raises(ValueError, match="d=8"):
        CombinedScorer([sae, narrow])
    probe = LinearProbeScorer().fit(decisions(10, seed=1), decisions(10, seed=2, shift=1.0))
    probe.calibrate(probe.score_many(decisions(10, seed=3)))
    with pytest.raises(ValueError, match="probe"):
        CombinedScorer([sae, probe])
    with pytest.raises(ValueError, match="distinct"):
        CombinedScorer([maha, maha])
    with pytest.raises(ValueError, match="fitted, calibrated parts"):
        make_scorer("combined").fit(synthetic(10))
    with pytest.raises(ValueError, match="not fitted"):
        make_scorer("combined").score(synthetic(10))
