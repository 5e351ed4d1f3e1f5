"""Threshold math and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from monitors.calibration import Calibration, calibrate, check_provenance


def test_mean_plus_k_sigma():
    scores = [1.0, 2.0, 3.0, 4.0]
    cal = calibrate(scores, "sigma", k=2.0)
    std = np.std(scores, ddof=1)
    assert cal.threshold == pytest.approx(2.5 + 2 * std)
    assert (cal.n, cal.mean, cal.std, cal.k, cal.fpr) == (4, 2.5, pytest.approx(std), 2.0, None)
    assert calibrate(scores, "sigma", k=0).threshold == pytest.approx(2.5)


def test_quantile_hits_target_fpr():
    scores = np.random.default_rng(0).normal(size=20_000)
    cal = calibrate(scores, "quantile", fpr=0.05)
    assert np.mean(scores > cal.threshold) == pytest.approx(0.05, abs=0.002)
    assert cal.threshold in set(scores)  # "higher": an observed clean score
    small = calibrate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "quantile", fpr=0.1)
    assert small.threshold == 9.0  # at most 10% of clean scores above it


def test_sigma_gives_about_2_5_percent_on_normal_scores():
    scores = np.random.default_rng(1).normal(size=50_000)
    cal = calibrate(scores)
    assert np.mean(scores > cal.threshold) == pytest.approx(0.0228, abs=0.003)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "median"}, "method='median'"),
        ({"k": -1.0}, "k=-1.0"),
        ({"k": float("nan")}, "k=nan"),
        ({"method": "quantile", "fpr": 1.5}, "fpr=1.5"),
        ({"method": "quantile", "fpr": 0.0}, "fpr=0.0"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibrate([1.0, 2.0, 3.0], **kwargs)


def test_bad_scores():
    with pytest.raises(ValueError, match="at least 2"):
        calibrate([1.0])
    with pytest.raises(ValueError, match="1 of 3 clean scores are NaN"):
        calibrate([1.0, float("nan"), 2.0])


def test_roundtrip_and_bad_dict():
    cal = calibrate([1.0, 2.0, 4.0], "quantile", fpr=0.2)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="unknown calibration keys"):
        Calibration.from_dict({**cal.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="method 'x'"):
        Calibration.from_dict({**cal.to_dict(), "method": "x"})


def test_provenance_mismatch_names_the_field():
    found = {"model": "tiny", "layer": 2, "d": 128}
    check_provenance(found, "f.json", model="tiny", layer=2, d=128)
    check_provenance(found, "f.json")  # nothing expected: nothing checked
    for key, value in (("model", "other"), ("layer", 3), ("d", 64)):
        with pytest.raises(ValueError, match=f"{key}: file has") as err:
            check_provenance(found, "f.json", **{key: value})
        assert "f.json" in str(err.value)
