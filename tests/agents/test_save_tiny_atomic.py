"""save_tiny replaces a checkpoint folder as a whole, and refuses a folder of other files."""

from __future__ import annotations

import pytest

from agents.tiny_model import build_tiny_model, check_save_target, save_tiny


def test_save_tiny_replaces_a_checkpoint_and_refuses_other_folders(tmp_path):
    model, processor = build_tiny_model(seed=1)
    out = save_tiny(model, processor, tmp_path / "ckpt")
    (out / "stale.bin").write_bytes(b"from an older save")
    save_tiny(model, processor, out)  # over an existing checkpoint: the whole folder is replaced
    assert (out / "model.safetensors").is_file() and not (out / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folders left
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "results.parquet").write_bytes(b"precious")
    with pytest.raises(ValueError, match="holds other files and no config.json"):
        save_tiny(model, processor, runs)
    assert (runs / "results.parquet").read_bytes() == b"precious"
    with pytest.raises(ValueError, match="is a file"):
        check_save_target(runs / "results.parquet")


def test_train_tiny_refuses_such_an_out_dir_before_any_work(tmp_path):
    from agents.train_tiny import TrainConfig

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="holds other files"):
        TrainConfig(out_dir=str(tmp_path)).validate()
    TrainConfig(out_dir=str(tmp_path / "new")).validate()
