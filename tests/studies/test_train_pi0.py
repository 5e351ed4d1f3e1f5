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
    assert main(["train-pi0", "--material-weight", "-1", "--out-dir", str(tmp_path / "x")]) == 2
    assert "material_weight=-1.0: must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_material_loss_reads_the_image_tokens_and_teaches_the_vlm():
    """agents.train_pi0.MaterialHead: it pools exactly the image tokens at the output of the last
    VLM layer an action reads, its loss reaches the vision tower, and training with it lowers
    it on demonstrations of both materials."""
    import numpy as np
    import torch

    from agents.train_pi0 import (
        MaterialHead,
        TrainPI0Config,
        batch_loss,
        instruction_prompts,
        train_pi0,
    )
    from rollouts.vla_demos import collect_demonstrations

    demos = collect_demonstrations(4, seed=3_100_000, horizon=4, frame_every=8, max_steps=40)
    assert set(demos.materials) == {"fragile", "rigid"}
    cfg = TrainPI0Config(hidden=32, expert_hidden=16, layers=2, image_size=64, chunk=4, steps=60, batch_size=8,
                         lr=3e-3, warmup_steps=5, material_weight=1.0)  # fmt: skip
    backend, _ = train_pi0(demos, TrainPI0Config(**{**cfg.__dict__, "steps": 1}))
    head = MaterialHead(backend, 1.0, seed=0)
    rows = np.arange(len(demos))
    pixels = backend.pixel_values(np.asarray(demos.frames))
    captured = []
    hook = backend.layers[-1].register_forward_hook(lambda m, a, out: captured.append(out))
    backend.model.zero_grad()
    batch_loss(backend, instruction_prompts(backend, demos), demos, np.asarray(demos.labels), rows, pixels,
               head).backward()  # fmt: skip
    hook.remove()
    h = captured[0][0] if isinstance(captured[0], tuple) else captured[0]
    image = backend.prepare(np.asarray(demos.frames), [str(t) for t in demos.instructions])[
        "input_ids"
    ]
    mask = image == backend.image_token_id
    expected = torch.stack([h[i][mask[i]].mean(0) for i in range(len(rows))])
    torch.testing.assert_close(head.pooled, expected)
    vision = backend.model.model.vlm.vision_tower
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision.parameters())

    _, history = train_pi0(demos, cfg)
    assert history[-1]["loss"] < history[0]["loss"]  # the flow's and the material's together
    assert history[-1]["material_loss"] < min(
        history[0]["material_loss"], 0.5
    )  # log 2 = 0.69 is chance
