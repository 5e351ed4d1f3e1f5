"""A run folder written before the code moved into packages by job (rollouts → rollouts,
reports, studies, cli) still replays exactly and resumes: its config.json names no module path.

The fixture `fixtures/run_before_packages/` was written by `physteer run --name old --agent vlm
--conditions unsteered,noise:0.2@5 --seeds 0 --videos 0 --workers 1 --max-steps 60` at commit
35c05d8 (the last commit of the old layout); it keeps config.json and the Parquet logs (not the
activations, videos or report, which replay does not read)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

FIXTURE = Path(__file__).with_name("fixtures") / "run_before_packages"


@pytest.fixture()
def old_run(tmp_path):
    root = tmp_path / "runs" / "old"
    shutil.copytree(FIXTURE, root)
    return root


def test_config_names_no_module_path():
    text = (FIXTURE / "config.json").read_text()
    assert not any(
        f"{p}." in text for p in ("rollouts", "studies", "reports", "cli", "monitors", "agents")
    )


@pytest.mark.parametrize("episode", ["unsteered/0", "noise:0.2@5/0"])
def test_old_run_replays_exactly(old_run, episode):
    from rollouts.replay import replay

    result = replay(old_run, episode)
    assert result["actions_equal"] and result["outcome_equal"], result.get("differences")


def test_old_run_resumes_without_redoing_its_episodes(old_run):
    from rollouts.experiment import run_experiment
    from rollouts.replay import load_config

    before = pq.read_table(old_run / "episodes.parquet").to_pylist()
    cfg = load_config(old_run)
    cfg.out, cfg.name = str(old_run.parent), old_run.name
    run_experiment(cfg, progress=False)
    assert pq.read_table(old_run / "episodes.parquet").to_pylist() == before
    assert (
        json.loads((old_run / "config.json").read_text())["model_weights"]
        == json.loads((FIXTURE / "config.json").read_text())["model_weights"]
    )
