"""The monitor benchmark: bad settings refused before any episode; a small bench on the tiny VLA
runs every stage through the CLI (fit on seen shifts, conformal thresholds on successes,
held-out evaluation, an enforced scorer with explanations), writes its figures and resumes."""

from __future__ import annotations

import json
import os

import pytest

from cli.main import main
from studies.monitor_bench.config import MonitorBenchConfig


@pytest.mark.parametrize("fields, named", [
    ({"scorers": ("oracle",)}, "scorer 'oracle'"),
    ({"seen": ("mass",), "held_out": ("mass",)}, "both seen and held out"),
    ({"seen": ()}, "seen: give at least one"),
    ({"held_out": ("gravity",)}, "held_out shift kind 'gravity'"),
    ({"agent": "vlm", "scorers": ("action-entropy",)}, "read signals agent 'vlm' does not report"),
    ({"alpha": 1.0}, "alpha=1.0"),
    ({"calibration_seeds": 1, "seen": ("mass",), "strengths": (1.0,)}, "fewer than the 9"),
    ({"enforce": ("pca-max",)}, "enforce 'pca-max'"),
    ({"scorers": ("mahalanobis", "probe"), "enforce": ("best",)}, "needs a learned failure predictor"),
    ({"strengths": (0.0,)}, "strengths"),
    ({"seed_offset": -1}, "seed_offset=-1"),
    ({"seed_offset": 400_001}, "seed_offset=400001"),
])  # fmt: skip
def test_bad_settings_fail_before_any_episode(fields, named):
    with pytest.raises(ValueError, match=named):
        MonitorBenchConfig(**fields).check()


def test_a_seed_offset_replicates_on_fresh_disjoint_seeds():
    base, rep = MonitorBenchConfig(), MonitorBenchConfig(seed_offset=1_000, eval_seeds=40)
    rep.check()
    blocks = [c.fit_seed_list + c.calibration_seed_list + c.eval_seed_list for c in (base, rep)]
    assert len(set(blocks[1])) == len(blocks[1])  # fit, calibration and eval stay disjoint
    assert not set(blocks[0]) & set(blocks[1])  # and share no seed with the bench it replicates
    assert rep.eval_seed_list[0] == base.eval_seed_list[0] + 1_000


@pytest.mark.slow
def test_a_small_bench_runs_every_stage(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        args = ["monitor-bench", "--scorers", "failure-mlp,action-entropy,action-entropy-oriented,chunk-change,mahalanobis,sae",
                "--seen", "mass", "--held-out", "distractors", "--strengths", "1", "--fit-seeds", "4",
                "--calibration-seeds", "2", "--eval-seeds", "2", "--alpha", "0.5", "--enforce", "best",
                "--sae-steps", "30", "--max-steps", "120", "--workers", "1", "--executor", "serial",
                "--n-boot", "20", "--name", "bench"]  # fmt: skip
        assert main(args) == 0
        root = tmp_path / "runs" / "bench"
        doc = json.loads((root / "summary.json").read_text())
        s = doc["summary"]
        assert set(s["scorers"]) == {
            "failure-mlp",
            "action-entropy",
            "action-entropy-oriented",
            "chunk-change",
            "mahalanobis",
            "sae",
        }
        oriented = json.loads(
            (root / "scorers" / "action-entropy-oriented" / "scorer.json").read_text()
        )
        assert oriented["params"]["oriented"] and oriented["params"]["sign"] in (1.0, -1.0)
        assert {"seen", "held out", "unshifted"} <= set(s["scorers"]["failure-mlp"])
        assert s["best"] == "failure-mlp" and set(s["enforced"]) == {"failure-mlp"}
        assert doc["fit"]["failed"] >= 1 and (root / "bench.png").is_file()
        assert (root / "scorers" / "sae" / "explainer.safetensors").is_file()
        assert main(args) == 0  # resumes: every stage done
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_leave_one_kind_out_fits_each_fold_without_its_kind_and_pools(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        args = ["monitor-bench", "--leave-one-out", "--scorers", "failure-mlp,mahalanobis", "--seen", "mass",
                "--held-out", "size", "--strengths", "1", "--fit-seeds", "6", "--calibration-seeds", "2",
                "--eval-seeds", "2", "--alpha", "0.5", "--max-steps", "120", "--workers", "1", "--executor",
                "serial", "--n-boot", "20", "--enforce", "best,mahalanobis", "--name", "folds"]  # fmt: skip
        assert main(args) == 0
        root = tmp_path / "runs" / "folds"
        doc = json.loads((root / "summary.json").read_text())
        assert doc["kinds"] == ["mass", "size"] and set(doc["pooled"]) == {
            "failure-mlp",
            "mahalanobis",
        }
        for k in ("mass", "size"):
            fold = doc["folds"][k]
            # fitted on the unshifted scene and the other kind: 6 fit seeds × 2 conditions
            assert fold["fit"]["episodes"] == 12
            assert {g for g in fold["summary"]["scorers"]["failure-mlp"]} >= {
                "seen",
                f"held out: {k}",
            }
            assert (root / "folds" / k / "fit.json").is_file() and (root / f"enforce-{k}").is_dir()
        # each held-out episode once, from the fold that held its kind out: 2 kinds × 2 seeds
        pooled = doc["pooled"]["failure-mlp"]["held out"]
        assert pooled["caught"]["n"] + pooled["false_alarm"]["n"] == 4  # failures + successes
        # each arm pooled over folds: the folds' own best predictor and the named scorer
        assert set(doc["enforced"]) == {"best", "mahalanobis"}
        assert doc["enforced"]["best"]["n"] == doc["enforced"]["mahalanobis"]["n"] == 4
        assert main(args) == 0  # resumes: every stage done
        with pytest.raises(ValueError, match="give at least 2 kinds"):
            MonitorBenchConfig(leave_one_out=True, seen=("mass",), held_out=()).check()
    finally:
        os.chdir(cwd)


def test_the_default_scorers_and_enforced_baseline_follow_the_agent():
    vla, pi0, vlm = (MonitorBenchConfig(agent=a) for a in ("vla", "pi0", "vlm"))
    assert "action-entropy" in vla.scorers and "sample-variance" not in vla.scorers
    assert "action-entropy-oriented" not in vla.scorers  # by name only
    MonitorBenchConfig(agent="pi0", scorers=("sample-variance-oriented",), enforce=()).check()
    assert vla.enforce == ("best", "action-entropy")
    assert {"chunk-change", "sample-variance"} <= set(
        pi0.scorers
    ) and "action-entropy" not in pi0.scorers
    assert pi0.enforce == ("best", "chunk-change")
    assert not {"action-entropy", "chunk-change"} & set(vlm.scorers) and vlm.enforce == ("best",)
    vlm.check()  # the planner runs the bench without signal scorers
