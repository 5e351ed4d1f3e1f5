"""train_tiny end to end on a handful of frames: runs, reports, saves, deterministic."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from agents.train_tiny import TrainConfig, train_tiny
from rollouts.frames import render_labeled_frames


@pytest.mark.parametrize("language", [False, True], ids=["plain", "language"])
def test_train_tiny_is_deterministic_and_saves_a_loadable_checkpoint(tmp_path, language):
    from agents.backend import load_vlm
    from agents.language_tasks import evaluation_items

    reports, weights = [], []
    for run in ("a", "b"):
        cfg = TrainConfig(
            n_train=16,
            n_eval=16,
            epochs=1,
            batch_size=8,
            threads=1,
            eval_seed=10_000,
            out_dir=str(tmp_path / run),
            cache_dir=str(tmp_path / "cache"),
            zoom_prob=0.5,
            aux_weight=0.5,
            language=language,
        )
        reports.append(train_tiny(cfg, render_labeled_frames, log=lambda msg: None))
        weights.append(load_file(str(tmp_path / run / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    saved = json.loads((tmp_path / "a" / "training_report.json").read_text())
    assert set(saved["eval"]["cells"]) and saved["probe"]["material"]["random"]["mean"] >= 0
    assert saved["train_seeds"] == [0, 15] and saved["eval_seeds"] == [10_000, 10_015]
    backend = load_vlm(str(tmp_path / "a"), device="cpu")
    assert backend.n_layers == 4
    vocab = backend.tokenizer.get_vocab()
    assert (" delicate" in vocab) is language and (" softly" in vocab) is language
    if language:  # every evaluation item scored on the trained and the random-weight model
        for key in ("language", "language_random_weights"):
            assert set(saved[key]) == set(evaluation_items())
            assert all(r["n"] == 16 and 0 <= r["accuracy"] <= 1 for r in saved[key].values())
    else:
        assert "language" not in saved


def test_train_config_rejects_overlapping_seeds():
    with pytest.raises(ValueError, match="overlap"):
        TrainConfig(n_train=100, train_seed=0, eval_seed=50).validate()
    with pytest.raises(ValueError, match="n_eval"):
        TrainConfig(n_eval=4).validate()
    with pytest.raises(ValueError, match="language_weight"):
        TrainConfig(language=True, language_weight=-1).validate()
