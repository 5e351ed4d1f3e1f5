"""A small experiment on the embedded tiny model writes every file; replay is exact; resume
after SIGINT gives the same results as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from reports.steering import steering_report
from rollouts.episode import TIMING_COLUMNS
from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig
from rollouts.replay import replay
from studies.collect import collect_activations


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from agents.backend import load_vlm

    backend = load_vlm("tiny")
    root = tmp_path_factory.mktemp("store")
    collect_activations(backend, 2, root / "store", n_images=32, seed=500_000)
    return root / "store"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, store):
    out = tmp_path_factory.mktemp("runs")
    cfg = ExperimentConfig(
        name="small",
        out=str(out),
        conditions=["unsteered", "dom:+4"],
        seeds=[0, 1, 2, 3],
        vector=str(store / "dom_vector.safetensors"),
        videos=1,
    )
    root = run_experiment(cfg, progress=False)
    steering_report(root)  # what `physteer run` writes after the episodes
    return cfg, root


def test_writes_every_file(small_run):
    cfg, root = small_run
    assert json.loads((root / "config.json").read_text())["conditions"] == ["unsteered", "dom:+4"]
    episodes = pq.read_table(root / "episodes.parquet").to_pylist()
    assert len(episodes) == 8
    assert {e["condition"] for e in episodes} == {"unsteered", "dom:+4"}
    for e in episodes:
        assert e["decisions"] >= 1 and 0.0 <= e["p_fragile_first"] <= 1.0
    steps = pq.read_table(root / "steps.parquet")
    assert steps.num_rows == sum(e["steps"] for e in episodes)
    acts = load_file(str(root / "activations" / "unsteered" / "seed_0.safetensors"))
    assert acts["decision"].ndim == 3 and acts["decision"].shape[1] == 82  # 81 image tokens + last
    assert (root / "videos" / "unsteered" / "seed_0.mp4").stat().st_size > 1000
    assert list((root / "videos").glob("side_by_side_*seed_0.mp4"))
    for name in ("report.md", "summary.json", "dose_response.png"):
        assert (root / name).exists(), name


def test_paired_seeds_see_the_same_scenes(small_run):
    _, root = small_run
    rows = pq.read_table(root / "episodes.parquet").to_pylist()
    by = {(r["condition"], r["seed"]): r for r in rows}
    for seed in range(4):
        a, b = by["unsteered", seed], by["dom:+4", seed]
        assert (a["color"], a["material"], a["shape"], a["shade"]) == (
            b["color"],
            b["material"],
            b["shape"],
            b["shade"],
        )


def test_replay_is_exact(small_run):
    _, root = small_run
    result = replay(root, "dom:+4/2")
    assert result["actions_equal"] and result["outcome_equal"], result["differences"]


def test_rerun_is_a_no_op(small_run):
    cfg, root = small_run
    before = pq.read_table(root / "episodes.parquet").to_pylist()
    t0 = time.time()
    run_experiment(cfg, progress=False)
    assert time.time() - t0 < 30  # nothing re-ran
    assert pq.read_table(root / "episodes.parquet").to_pylist() == before


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_a_run_records_its_weights_and_refuses_other_ones(small_run, tmp_path):
    """ "tiny" names a folder whose weights change when a new checkpoint ships: a run records the
    sha1 of the weights that made it, and neither resumes nor replays under other weights."""
    import shutil

    from agents.resolve import weights_sha1
    from agents.tiny_model import TINY_VLM_DIR

    cfg, root = small_run
    assert json.loads((root / "config.json").read_text())["model_weights"] == weights_sha1(
        TINY_VLM_DIR
    )
    copy = tmp_path / "small"
    shutil.copytree(root, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_weights": "0" * 40}))
    moved = ExperimentConfig(**{**cfg.__dict__, "out": str(tmp_path)})
    with pytest.raises(ValueError, match="model_weights"):
        run_experiment(moved, progress=False)
    with pytest.raises(ValueError, match="other weights"):
        replay(copy, "dom:+4/2")
    del config["model_weights"]  # a run made before weights were recorded: which ones is unknown
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_weights"):
        run_experiment(moved, progress=False)
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"abc")
    first = weights_sha1(weights)
    (weights / "model.safetensors").write_bytes(b"abd")
    assert weights_sha1(weights) != first
    with pytest.raises(ValueError, match="no weight files"):
        weights_sha1(copy / "videos")


def test_sigint_keeps_finished_episodes_and_resume_matches(tmp_path):
    args = [
        sys.executable,
        "-m",
        "cli.main",
        "run",
        "--out",
        str(tmp_path),
        "--seeds",
        "0-5",
        "--conditions",
        "unsteered",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Default SIGINT handling in the child: a shell that started pytest in the background (no job
    # control) passes SIGINT on as ignored, and the run would never see the interrupt.
    proc = subprocess.Popen([*args, "--name", "interrupted"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    done_dir = tmp_path / "interrupted" / "episodes" / "unsteered"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(done_dir.glob("seed_*.parquet"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    finished = len(list(done_dir.glob("seed_*.parquet")))
    assert 2 <= finished < 6, f"interrupt came too late or too early ({finished} finished)"
    assert not (tmp_path / "interrupted" / "episodes.parquet").exists()
    subprocess.run([*args, "--name", "interrupted"], env=env, check=True, capture_output=True)
    subprocess.run([*args, "--name", "straight"], env=env, check=True, capture_output=True)
    resumed = pq.read_table(tmp_path / "interrupted" / "episodes.parquet").to_pylist()
    straight = pq.read_table(tmp_path / "straight" / "episodes.parquet").to_pylist()
    assert len(resumed) == 6
    assert _without_timing(resumed) == _without_timing(straight)
    cols = ["a_dx", "a_dy", "a_dz", "a_grip"]
    a = pq.read_table(tmp_path / "interrupted" / "steps.parquet", columns=cols).to_pydict()
    b = pq.read_table(tmp_path / "straight" / "steps.parquet", columns=cols).to_pydict()
    np.testing.assert_array_equal(np.array([a[c] for c in cols]), np.array([b[c] for c in cols]))


def test_parallel_workers_match_serial(tmp_path):
    common = dict(out=str(tmp_path), conditions=["unsteered"], seeds=[0, 1], agent="scripted")
    serial = run_experiment(ExperimentConfig(name="serial", **common), progress=False)
    parallel = run_experiment(
        ExperimentConfig(name="parallel", workers=2, **common), progress=False
    )
    a = _without_timing(pq.read_table(Path(serial) / "episodes.parquet").to_pylist())
    b = _without_timing(pq.read_table(Path(parallel) / "episodes.parquet").to_pylist())
    assert a == b
