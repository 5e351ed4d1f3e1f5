"""Bad experiment input fails before any episode runs, with a clear message."""

import pytest

from rollouts.conditions import parse_condition
from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig


@pytest.mark.parametrize(
    "text", ["steered", "sae:fragility", "dom:big", "neuron::3", "sae:x1:3", ""]
)
def test_unknown_condition(text):
    with pytest.raises(ValueError, match="allowed"):
        parse_condition(text)


def test_missing_sae_before_any_episode(tmp_path):
    cfg = ExperimentConfig(name="x", out=str(tmp_path), conditions=["unsteered", "sae:3:5"])
    with pytest.raises(ValueError, match="needs an SAE"):
        run_experiment(cfg, progress=False)
    assert not (tmp_path / "x").exists()


def test_missing_vector(tmp_path):
    cfg = ExperimentConfig(name="x", out=str(tmp_path), conditions=["random:+2"])
    with pytest.raises(ValueError, match="difference-of-means"):
        run_experiment(cfg, progress=False)


def test_feature_out_of_range(tmp_path):
    from sae import MatryoshkaSAE, SAEConfig

    sae = MatryoshkaSAE(SAEConfig(d_in=128, n_latents=64, k=4, prefixes=(16, 64)))
    sae.save(tmp_path / "sae")
    cfg = ExperimentConfig(
        name="x", out=str(tmp_path), conditions=["sae:64:5"], sae=str(tmp_path / "sae")
    )
    with pytest.raises(ValueError, match="out of range.*0..63"):
        run_experiment(cfg, progress=False)
    assert not (tmp_path / "x").exists()


def test_duplicate_and_bad_fields(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        ExperimentConfig(conditions=["unsteered", "unsteered"]).validate()
    with pytest.raises(ValueError, match="material"):
        ExperimentConfig(material="glass").validate()
    with pytest.raises(ValueError, match="seeds"):
        ExperimentConfig(seeds=[]).validate()
    with pytest.raises(ValueError, match="agent='vlm'"):
        ExperimentConfig(agent="scripted", conditions=["dom:+1"]).validate()


def test_different_config_in_same_folder(tmp_path):
    run_experiment(
        ExperimentConfig(name="x", out=str(tmp_path), agent="scripted", seeds=[0]), progress=False
    )
    with pytest.raises(ValueError, match="different experiment.*seeds"):
        run_experiment(
            ExperimentConfig(name="x", out=str(tmp_path), agent="scripted", seeds=[0, 1]),
            progress=False,
        )


def test_corrupt_episode_log_names_the_file(tmp_path):
    from rollouts.logs import RunLog

    root = run_experiment(
        ExperimentConfig(name="x", out=str(tmp_path), agent="scripted", seeds=[0, 1]),
        progress=False,
    )
    bad = root / "steps" / "unsteered" / "seed_1.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="seed_1.parquet"):
        RunLog(root).merge("steps")
