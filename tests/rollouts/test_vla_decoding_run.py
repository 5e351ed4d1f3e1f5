"""`physteer run --decoding` reaches the VLA and is recorded; a VLA run made before the field
existed (with the expectation rule, still the default) resumes and replays as made."""

from __future__ import annotations

import json

import pytest

from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig
from rollouts.replay import load_config


def _cfg(tmp_path, **kw):
    return ExperimentConfig(name="v", out=str(tmp_path), agent="vla", seeds=[0], max_steps=6, image_size=384,
                            executor="serial", workers=1, **kw)  # fmt: skip


def test_decoding_is_recorded_and_old_runs_keep_theirs(tmp_path):
    root = run_experiment(_cfg(tmp_path), progress=False)
    config = json.loads((root / "config.json").read_text())
    assert config["decoding"] == "expectation"
    del config["decoding"]  # as written before the field existed
    (root / "config.json").write_text(json.dumps(config))
    assert load_config(root).decoding == "expectation"
    with pytest.raises(ValueError, match="decoding"):
        run_experiment(_cfg(tmp_path, decoding="gated"), progress=False)  # another rule
    run_experiment(_cfg(tmp_path), progress=False)  # resumes


def test_agent_decodes_with_the_configured_rule(tmp_path):
    from rollouts.runner import EpisodeRunner

    cfg = _cfg(tmp_path, decoding="argmax")
    cfg.validate()
    runner = EpisodeRunner(cfg)
    assert runner.agent.decoding == "argmax"
    runner.loop.close()
