"""sarm-eval with a split-conformal calibration: recorded with the scorer and in fit.json, the
fit / calibration / eval seeds disjoint, the realised clean false alarms beside the promised
alpha, the veto policy's outcomes in the summary; bad calibration settings fail fast."""

from __future__ import annotations

import json
import os

import pytest

from cli.main import main
from studies.sarm.config import SarmEvalConfig

ARGS = ["sarm-eval", "--fit-episodes", "4", "--episodes", "1", "--scorers", "mahalanobis",
        "--perturbations", "noise:0.2@10", "--max-steps", "30", "--executor", "serial",
        "--n-boot", "20", "--no-plots", "--on-veto", "fallback"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        rc = main([*ARGS, "--calibration", "conformal-episode", "--alpha", "0.5", "--name", "cal"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return work


def test_the_calibration_is_recorded_with_its_disjoint_seeds(run):
    root = run / "runs" / "cal"
    cal = json.loads((root / "scorers" / "mahalanobis-mean" / "scorer.json").read_text())[
        "calibration"
    ]
    marker = json.loads((root / "scorers" / "fit.json").read_text())
    split = marker["seed_split"]
    assert split == {
        "fit": [5_000_000, 5_000_001],
        "calibration": [5_000_002, 5_000_003],
        "eval": [5_000_004],
    }
    assert (cal["method"], cal["alpha"], cal["unit"], cal["n"]) == (
        "conformal-episode",
        0.5,
        "episode",
        2,
    )
    assert cal["seeds"] == split["calibration"]
    assert marker["calibration"]["method"] == "conformal-episode"
    side = marker["calibrations"]["mahalanobis-mean"]
    assert list(side) == ["conformal-episode", "sigma", "conformal-decision"]
    assert side["conformal-episode"]["threshold"] == cal["threshold"]


def test_summary_reports_realised_false_alarms_beside_alpha_and_policy_outcomes(run):
    doc = json.loads((run / "runs" / "cal" / "summary.json").read_text())
    rows = doc["summary"]["false_alarms"]["mahalanobis-mean"]
    ep = rows["conformal-episode"]
    assert ep["enforced"] and ep["alpha"] == 0.5 and ep["unit"] == "episode"
    assert (
        ep["episode"]["n"] == 1
        and ep["decision"]["n"] > 1
        and 0 <= ep["episode"]["lo"] <= ep["episode"]["hi"] <= 1
    )
    assert rows["sigma"]["alpha"] is None and rows["conformal-decision"]["unit"] == "decision"
    clean = doc["summary"]["clean"]["mahalanobis-mean"]
    assert {"success_on", "broken_on", "fallback_on"} <= set(clean)
    assert doc["seed_split"]["calibration"] == [5_000_002, 5_000_003]
    for r in doc["records"]:
        assert r["committed_handling"] in ("gentle", "firm", "fallback-gentle")
        assert (r["committed_handling"] == "fallback-gentle") == (r["fallback_step"] is not None)


def test_resuming_with_another_calibration_is_refused(run, capsys):
    cwd = os.getcwd()
    os.chdir(run)
    try:
        assert main([*ARGS, "--calibration", "sigma", "--name", "cal"]) == 2
    finally:
        os.chdir(cwd)
    assert "was calibrated with" in capsys.readouterr().err


@pytest.mark.parametrize("args, named", [
    (["--calibration", "bayes"], "calibration 'bayes'"),
    (["--alpha", "0"], "alpha=0.0"),
    (["--calibration", "conformal-episode", "--fit-episodes", "8"], "needs at least 9"),
    (["--fit-episodes", "16"], "needs at least 9"),  # the default calibration is conformal per episode
    (["--alpha", "1"], "alpha=1"),
    (["--fpr", "0.05"], "fpr=0.05 applies to calibration 'quantile'"),
    (["--calibration", "conformal-decision", "--fpr", "0.1"], "fpr=0.1 applies to calibration 'quantile'"),
])  # fmt: skip
def test_bad_calibration_settings_fail_before_any_episode(
    tmp_path, monkeypatch, capsys, args, named
):
    monkeypatch.chdir(tmp_path)
    assert main(["sarm-eval", *args]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_seed_split_is_explicit_and_disjoint():
    cfg = SarmEvalConfig(fit_episodes=8, episodes=3, first_seed=10)
    split = cfg.seed_split()
    assert split == {"fit": [10, 11, 14, 15], "calibration": [12, 13, 16, 17], "eval": [18, 19, 20]}
    assert sorted(split["fit"] + split["calibration"]) == cfg.fit_seeds
    assert (
        cfg.calibration_method == "conformal-episode"  # the default: calibrated per episode
        and SarmEvalConfig(calibration="sigma", fpr=0.05).calibration_method == "quantile"
    )
