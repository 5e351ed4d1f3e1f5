"""`physteer run --object-pattern plain` reaches every env of the run and is recorded in
config.json; a bad value fails before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main
from rollouts.experiment_config import ExperimentConfig
from rollouts.runner import Batch, EpisodeRunner


def test_cli_flag_is_recorded_in_the_run_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--agent", "scripted", "--executor", "serial", "--seeds", "0", "--max-steps", "15",
            "--image-size", "64", "--object-pattern", "plain", "--name", "plain", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert config["object_pattern"] == "plain"
    assert (tmp_path / "plain" / "episodes.parquet").is_file()


def test_default_run_records_the_material_pattern():
    assert ExperimentConfig().replay_dict()["object_pattern"] == "material"


def test_the_runner_builds_its_envs_with_the_option(tmp_path):
    cfg = ExperimentConfig(agent="scripted", executor="serial", seeds=[0], max_steps=10, image_size=64,
                           object_pattern="plain", envs_per_worker=2, out=str(tmp_path))  # fmt: skip
    cfg.validate()
    runner = EpisodeRunner(cfg)
    (record,) = runner.run(Batch("unsteered", "none", (0,), (False,)))
    assert record.row["steps"] == 10
    assert [env.config.object_pattern for env in runner.loop.envs] == ["plain", "plain"]
    env = runner.loop.envs[0]
    assert env.task.pattern == "plain"  # the scene the episode ran in
    frames = {}
    for material in ("fragile", "rigid"):
        env.reset(seed=5, options={"color": "blue", "material": material})
        frames[material] = env.render()
    assert np.array_equal(frames["fragile"], frames["rigid"])
    runner.loop.close()


def test_bad_pattern_fails_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--object-pattern", "stripes"]) == 2
    err = capsys.readouterr().err
    assert "object_pattern 'stripes'" in err and "'plain'" in err, err
    assert not any(tmp_path.iterdir())


def test_a_run_made_before_the_field_existed_resumes(tmp_path):
    """config.json of an older run lacks object_pattern: it equals the default, so it resumes;
    a real difference is still refused."""
    import json

    from rollouts.logs import RunLog

    log = RunLog(tmp_path / "r")
    log.root.mkdir(parents=True)
    (log.root / "config.json").write_text(json.dumps({"seeds": [0]}))
    log.write_config(
        {"seeds": [0], "object_pattern": "material"}, defaults={"object_pattern": "material"}
    )
    with pytest.raises(ValueError, match="object_pattern"):
        log.write_config(
            {"seeds": [0], "object_pattern": "plain"}, defaults={"object_pattern": "material"}
        )
