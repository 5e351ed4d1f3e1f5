"""`physteer sarm-eval` end to end on a random-weight tiny model (small and fast)."""

from __future__ import annotations

import json

import pytest

from cli.main import main


@pytest.fixture(scope="module")
def run(tiny_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    import os

    cwd = os.getcwd()
    os.chdir(work)
    try:
        rc = main([
            "sarm-eval", "--model", str(tiny_dir), "--fit-episodes", "4", "--calibration", "sigma", "--episodes", "2",
            "--perturbations", "ta2:4@10,noise:0.2@10", "--sae-steps", "60", "--max-steps", "40",
            "--name", "smoke",
        ])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert rc == 0
    return work / "runs" / "smoke"


def test_outputs(run):
    for name in ("summary.json", "roc.png", "timeline_sae-mean.png", "timeline_pca-mean.png"):
        assert (run / name).is_file(), name
    for scorer in ("sae-mean", "mahalanobis-mean", "pca-mean"):
        assert (run / "scorers" / scorer / "scorer.json").is_file()
    doc = json.loads((run / "summary.json").read_text())
    summ = doc["summary"]
    assert set(summ["clean"]) == {"sae-mean", "mahalanobis-mean", "pca-mean"}
    assert set(summ["perturbations"]) == {"ta2:4@10", "noise:0.2@10"}
    for per in summ["perturbations"].values():
        for s in summ["clean"]:
            r = per[s]
            assert r["detection"]["n"] == 2 and 0 <= r["detection"]["rate"] <= 1
            assert r["auc"]["n_neg"] > 0 and r["auc"]["n_pos"] > 0
    # 2 seeds × 3 conditions × (1 off + 3 on)
    assert len(doc["records"]) == 24


def test_monitor_on_vetoes_where_the_monitor_off_scores_cross(run):
    """Until its first veto, a monitored episode is the unmonitored one: same decisions, same
    scores, so its first veto is at the first decision whose passive score crossed."""
    doc = json.loads((run / "summary.json").read_text())
    thresholds = {s: r["threshold"] for s, r in doc["summary"]["clean"].items()}
    off = {(r["seed"], r["condition"]): r for r in doc["records"] if r["monitor"] is None}
    for r in doc["records"]:
        if r["monitor"] is None:
            continue
        s = r["monitor"]
        ref = off[(r["seed"], r["condition"])]
        crossing = next(
            (d["step"] for d in ref["decisions"] if d["scores"][s] > thresholds[s]), None
        )
        assert r["first_veto_step"] == crossing, (s, r["condition"], r["seed"])


def test_bad_cli_input(tiny_dir, capsys):
    assert main(["sarm-eval", "--model", str(tiny_dir), "--scorers", "knn"]) == 2
    assert "scorer 'knn'" in capsys.readouterr().err
    assert main(["sarm-eval", "--model", str(tiny_dir), "--perturbations", "laser"]) == 2
    err = capsys.readouterr().err
    assert "'laser'" in err and "noise:<0-1>" in err


@pytest.mark.parametrize("args, named", [
    (["--k", "-1"], "k=-1.0"), (["--fpr", "1.5"], "fpr=1.5"), (["--episodes", "0"], "episodes=0"),
    (["--on-veto", "explode"], "on_veto 'explode'"), (["--executor", "slurm"], "executor 'slurm'"),
    (["--perturbations", "noise:3@10"], "(0, 1]"), (["--fit-episodes", "2"], "fit_episodes=2"),
])  # fmt: skip
def test_bad_values_fail_fast_before_any_episode(tmp_path, monkeypatch, capsys, args, named):
    import time

    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    assert main(["sarm-eval", *args]) == 2
    assert time.perf_counter() - t0 < 10
    assert named in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_sigint_then_rerun_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    """sarm-eval runs on the runner: an interrupted evaluation keeps its finished episodes and
    the rerun gives the same summary as a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "cli.main", "sarm-eval", "--model", str(tiny_dir), "--fit-episodes", "4", "--calibration", "sigma",
            "--episodes", "2", "--perturbations", "ta2:4@10,noise:0.2@10", "--sae-steps", "40", "--max-steps", "40",
            "--scorers", "sae,mahalanobis", "--no-plots"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Default SIGINT handling in the child, whatever the shell that started pytest passed on.
    proc = subprocess.Popen([*args, "--name", "cut"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    episodes = tmp_path / "runs" / "cut" / "eval" / "episodes"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(episodes.glob("*/seed_*.parquet"))) < 4:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    finished = len(list(episodes.glob("*/seed_*.parquet")))
    assert 4 <= finished < 3 * 3 * 2, f"interrupt came too late or too early ({finished} finished)"
    assert not (tmp_path / "runs" / "cut" / "summary.json").exists()
    subprocess.run([*args, "--name", "cut"], cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run(
        [*args, "--name", "straight"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    cut = json.loads((tmp_path / "runs" / "cut" / "summary.json").read_text())
    straight = json.loads((tmp_path / "runs" / "straight" / "summary.json").read_text())
    assert cut["summary"] == straight["summary"] and cut["records"] == straight["records"]
    assert len(cut["records"]) == 3 * 3 * 2
