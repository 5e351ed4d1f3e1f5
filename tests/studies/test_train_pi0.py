"""`physteer train-pi0` end to end at a test size: demonstrations, flow-matching training, one
DAgger round driven by the π0 itself, and a checkpoint folder `--agent pi0` runs."""

from __future__ import annotations

import json

from cli.main import main

SMALL = ["--hidden", "32", "--expert-hidden", "16", "--layers", "2", "--image-size", "64", "--chunk", "4",
         "--batch-size", "8", "--denoise-steps", "2"]  # fmt: skip


def test_train_pi0_and_run_it(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["train-pi0", "--episodes", "2", "--steps", "6", "--dagger-rounds", "1", "--dagger-episodes", "1",
                 "--dagger-steps", "3", "--frame-every", "8", "--held-out-episodes", "1", "--n-action-steps", "2",
                 "--noise-scale", "0.5", "--out-dir", str(out), *SMALL]) == 0  # fmt: skip
    report = json.loads((out / "training_report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert report["rounds"][1]["rows"] > report["rounds"][0]["rows"]  # the DAgger rows joined
    assert report["versions"]["transformers"] and report["config"]["chunk"] == 4
    held = report["held_out"]
    assert held["rows"] > 0 and held["loss"] > 0 and held["training_rows_loss"] > 0
    written = json.loads((out / "processor_config.json").read_text())
    assert (written["n_action_steps"], written["noise_scale"]) == (2, 0.5)
    assert main(["agent-eval", "--agent", "pi0", "--model", str(out), "--seeds", "1", "--max-steps", "6",
                 "--out", str(tmp_path / "eval")]) == 0  # fmt: skip


def test_bad_recipe_settings_are_named(tmp_path, capsys):
    assert (
        main(
            ["train-pi0", "--image-size", "100", "--patch", "16", "--out-dir", str(tmp_path / "x")]
        )
        == 2
    )
    assert "image_size=100 must be a multiple of patch=16" in capsys.readouterr().err
    assert main(["train-pi0", "--episodes", "1", "--out-dir", str(tmp_path / "x")]) == 2
    assert "episodes=1: must be an int >= 2" in capsys.readouterr().err
    assert (
        main(
            ["train-pi0", "--chunk", "4", "--n-action-steps", "5", "--out-dir", str(tmp_path / "x")]
        )
        == 2
    )
    assert "n_action_steps=5: must be an int in 1..chunk=4" in capsys.readouterr().err
    assert main(["train-pi0", "--noise-scale", "2.5", "--out-dir", str(tmp_path / "x")]) == 2
    assert "noise_scale=2.5: must be a number in [0, 2]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
