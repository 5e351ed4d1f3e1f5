"""The one closed loop: every executor and every batch size give the same episodes; recording
never changes what a monitor scores; replay of a perturbed, monitored episode is exact."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from rollouts.episode import TIMING_COLUMNS
from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig
from rollouts.replay import replay

ROOT = Path(__file__).resolve().parents[2]


def test_no_other_module_steps_an_env_in_a_loop_of_its_own():
    """Only the episode loop steps environments (the env itself and the monitor wrapper pass
    a step through; they loop over nothing)."""
    allowed = {"rollouts/episode.py", "envs/franka_pick.py", "monitors/sarm.py"}
    stepping = set()
    for package in (
        "envs",
        "agents",
        "monitors",
        "rollouts",
        "reports",
        "studies",
        "cli",
        "benchmarks",
    ):
        for path in (ROOT / package).rglob("*.py"):
            if re.search(r"\benv\w*\.step\(", path.read_text()):
                stepping.add(str(path.relative_to(ROOT)))
    assert stepping <= allowed, (
        f"modules stepping an env outside the one loop: {sorted(stepping - allowed)}"
    )


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    """A dom vector (32 renders) and a saved, calibrated Mahalanobis scorer."""
    from agents.backend import load_vlm
    from monitors.scorers import make_scorer
    from sae import ActivationStore
    from studies.collect import collect_activations

    root = tmp_path_factory.mktemp("res")
    collect_activations(load_vlm("tiny"), 2, root / "store", n_images=32, seed=600_000)
    rows = ActivationStore.open(root / "store").load_all()
    scorer = make_scorer("mahalanobis", model="tiny", layer=2).fit([rows])
    scorer.calibrate(scorer.score_many(list(rows.split(81))), method="sigma", k=2)
    scorer.save(root / "maha")
    return root


def _config(resources, out, name, **fields):
    base = dict(
        name=name, out=str(out), conditions=["unsteered", "dom:+4", "noise:0.2@5"], seeds=[0, 1, 2],
        max_steps=60, vector=str(resources / "store" / "dom_vector.safetensors"),
        monitors=[str(resources / "maha")], enforce=["none", "maha"],
    )  # fmt: skip
    return ExperimentConfig(**{**base, **fields})


def _episodes(root):
    rows = pq.read_table(Path(root) / "episodes.parquet").to_pylist()
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _steps(root):
    table = pq.read_table(Path(root) / "steps.parquet").to_pylist()
    return sorted(table, key=lambda r: (r["condition"], r["monitor"], r["seed"], r["step"]))


def _activations(root):
    files = sorted((Path(root) / "activations").rglob("*.safetensors"))
    return {str(f.relative_to(root)): load_file(str(f)) for f in files}


@pytest.fixture(scope="module")
def runs(resources, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {
        "serial": run_experiment(
            _config(resources, out, "serial", executor="serial"), progress=False
        ),
        "processes": run_experiment(
            _config(resources, out, "processes", workers=2), progress=False
        ),
        "ray": run_experiment(
            _config(resources, out, "ray", executor="ray", workers=2), progress=False
        ),
        "batched": run_experiment(
            _config(resources, out, "batched", executor="serial", envs_per_worker=4), progress=False
        ),
    }


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_executors_give_identical_episodes_and_activations(runs, executor):
    assert len(_episodes(runs["serial"])) == 3 * 2 * 3
    assert _episodes(runs[executor]) == _episodes(runs["serial"])
    assert _steps(runs[executor]) == _steps(runs["serial"])
    a, b = _activations(runs["serial"]), _activations(runs[executor])
    assert a.keys() == b.keys() and len(a) == 18
    for name in a:
        for key in a[name]:
            assert np.array_equal(a[name][key].numpy(), b[name][key].numpy()), (name, key)


def test_four_envs_per_worker_match_one_by_one(runs):
    serial, batched = _steps(runs["serial"]), _steps(runs["batched"])
    assert len(serial) == len(batched)
    for s, b in zip(serial, batched, strict=True):
        for key in (
            "condition",
            "monitor",
            "seed",
            "step",
            "a_dx",
            "a_dy",
            "a_dz",
            "a_grip",
            "broken",
            "holding",
            "vetoed",
            "profile",
        ):
            assert s[key] == b[key], (key, s, b)
        assert abs(s["p_fragile"] - b["p_fragile"]) <= 1e-5
    outcome = (
        "success",
        "broken",
        "steps",
        "peak_force",
        "vetoes",
        "first_veto_step",
        "first_alarm:maha",
    )
    for s, b in zip(_episodes(runs["serial"]), _episodes(runs["batched"]), strict=True):
        assert {k: s[k] for k in outcome} == {k: b[k] for k in outcome}
    a, b = _activations(runs["serial"]), _activations(runs["batched"])
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_allclose(
                a[name][key].numpy(),
                b[name][key].numpy(),
                atol=1e-5,
                rtol=0,
                err_msg=f"{name} {key}",
            )


def test_the_noise_perturbation_switches_on_at_its_onset(runs):
    steps = [s for s in _steps(runs["serial"]) if s["monitor"] == "none" and s["seed"] == 0]
    clean = {s["step"]: s for s in steps if s["condition"] == "unsteered"}
    noisy = {s["step"]: s for s in steps if s["condition"] == "noise:0.2@5"}
    assert clean[0]["p_fragile"] == noisy[0]["p_fragile"]  # before the onset: the same frame
    assert clean[10]["p_fragile"] != noisy[10]["p_fragile"]  # the first decision after it


def test_replay_of_a_perturbed_monitored_episode_is_exact(runs):
    result = replay(runs["serial"], "noise:0.2@5#maha/1")
    assert result["actions_equal"] and result["outcome_equal"], result["differences"]
    assert result["monitor"] == "maha"


def test_holding_capture_never_changes_what_the_monitor_scores(resources, tmp_path):
    common = dict(conditions=["unsteered"], seeds=[0, 1], max_steps=120, executor="serial")
    on = run_experiment(
        _config(resources, tmp_path, "holding", holding=True, **common), progress=False
    )
    off = run_experiment(
        _config(resources, tmp_path, "no_holding", holding=False, **common), progress=False
    )
    acts = _activations(on)
    shadow = [a for name, a in acts.items() if "#" not in name]
    assert len(shadow) == 2 and all("holding" in a for a in shadow), (
        "the episodes must reach the release"
    )
    assert not any("holding" in a for a in _activations(off).values())
    on_steps, off_steps = _steps(on), _steps(off)
    assert [s["score:maha"] for s in on_steps] == [s["score:maha"] for s in off_steps]
    assert _episodes(on) == _episodes(off)


def test_enforcing_arms_copied_from_the_shadow_arm_equal_run_ones(resources, runs, tmp_path):
    """rollouts.shadow_arms: an enforcing episode whose monitor never alarmed in the shadow arm
    is copied, not run; running every arm writes the same tables and activations."""
    full = run_experiment(
        _config(resources, tmp_path, "every_arm_run", executor="serial", shadow_reuse=False),
        progress=False,
    )
    alarms = [r["first_alarm:maha"] for r in _episodes(full) if r["monitor"] == "none"]
    assert None in alarms and any(a is not None for a in alarms), (
        "the check needs copied and run episodes"
    )
    assert _episodes(full) == _episodes(runs["serial"])
    assert _steps(full) == _steps(runs["serial"])
    a, b = _activations(full), _activations(runs["serial"])
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert np.array_equal(a[name][key].numpy(), b[name][key].numpy()), (name, key)
