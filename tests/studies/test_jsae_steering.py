"""`physteer cross-modal` and `physteer jsae-layers` end to end on a random-weight language VLA
(short episodes, 2 seeds): every direction and every layer × intervention runs, the tables and
tests are written, and bad input is refused before any work."""

from __future__ import annotations

import json

import pytest
import torch

FAST = ["--seeds", "2", "--images", "16", "--max-steps", "12", "--executor", "serial", "--workers", "1",
        "--envs-per-worker", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def language_vla(tmp_path_factory):
    """A random-weight VLA built on a language-vocabulary tiny VLM, and a jsae-study-like folder
    on it (a Joint SAE at layer 2 and a summary naming no shared latent)."""
    from agents.backend import load_vlm
    from agents.tiny_model import build_tiny_model, save_tiny
    from agents.vla_model import build_vla, save_vla
    from sae.joint import JointConfig, JointSAE

    root = tmp_path_factory.mktemp("lang-vla")
    model, processor = build_tiny_model(3, language=True)
    save_tiny(model, processor, root / "vlm")
    vla, _ = build_vla(load_vlm(root / "vlm", "cpu"), k_bins=16, state_bins=8, horizon=2, seed=0)
    save_vla(vla, root / "vla")
    d = vla.hidden_size
    torch.manual_seed(0)
    joint = JointSAE(JointConfig.default(d, d, expansion=2.0, alignment="contrastive"))
    x = torch.randn(64, d) * 30
    joint.vision.init_from_data(x)
    joint.language.init_from_data(x)
    joint.save(root / "jsae" / "saes" / "joint", {"model": str(root / "vla"), "layer": 2})
    summary = {"candidates": [{"candidate": "joint", "role": "method", "passing": []}]}
    (root / "jsae" / "summary.json").write_text(json.dumps(summary))
    return root


def test_cross_modal_runs_every_direction_on_both_materials(language_vla, tmp_path, capsys):
    from cli.main import main

    args = ["cross-modal", "--model", str(language_vla / "vla"), "--jsae", str(language_vla / "jsae"),
            "--out", str(tmp_path), "--name", "cm", "--calibration-seeds", "2", "--sae-steps", "20", *FAST]  # fmt: skip
    assert main([*args, "--magnitudes", "1,2,3,4"]) == 2
    assert "at least 5" in capsys.readouterr().err
    assert main([*args[:2], str(language_vla / "vlm") + "-missing", *args[3:]]) == 2
    assert "model=" in capsys.readouterr().err
    assert main([*args[:4], str(tmp_path), *args[5:]]) == 2  # not a jsae-study folder
    assert "jsae=" in capsys.readouterr().err and not (tmp_path / "cm").exists()
    assert main([*args, "--magnitudes", "0.5,1,2,3,4"]) == 0
    doc = json.loads((tmp_path / "cm" / "summary.json").read_text())
    assert doc["layer"] == 2 and doc["latent_shared"] is False
    for material in ("fragile", "rigid"):
        m = doc["materials"][material]
        sign = -1 if material == "fragile" else 1  # + is toward fragile
        assert set(m["effects"]) == {"grip_command", "peak_grip_force"}
        grip = m["effects"]["peak_grip_force"]
        assert all(sign * float(s) > 0 for s in grip["jsae-language"])
        assert len(grip["jsae-language"]) >= 5 and grip["random"]
        assert {"holds", "beyond_random", "language_over_vision"} <= set(m["verdict"])
        assert all(row["n"] == 2 for rows in grip.values() for row in rows.values())
    # a random-weight model's SAE finds no fragility feature: that row is named as omitted
    assert set(doc["omitted"]) <= {"sae-direction"}
    assert main([*args, "--magnitudes", "0.5,1,2,3,5"]) == 2  # resuming another study: refused
    assert "use another --name" in capsys.readouterr().err


def test_jsae_layers_runs_every_intervention_at_every_layer(language_vla, tmp_path, capsys):
    from cli.main import main

    # peak grip: every episode has one (a random-weight VLA's fingers may never close: no command)
    args = ["jsae-layers", "--model", str(language_vla / "vla"), "--out", str(tmp_path), "--name", "jl",
            "--jsae-steps", "4", "--metric", "peak_grip_force", *FAST]  # fmt: skip
    for bad, said in ((["--weight", "-1"], "weight=-1"), (["--layers", "0,9"], "layers="),
                      (["--layers", "1"], "at least 2 layers"), (["--suppress-strength", "1.5"], "suppress_strength"),
                      (["--metric", "speed"], "metric=")):  # fmt: skip
        assert main([*args, *bad]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "jl").exists()
    no_language = ["jsae-layers", "--model", "agents/tiny_vla", *args[3:]]
    assert main(no_language) == 2 and "no language side" in capsys.readouterr().err
    assert main([*args, "--layers", "0,3"]) == 0
    doc = json.loads((tmp_path / "jl" / "summary.json").read_text())
    grip = doc["effects"]["peak_grip_force"]
    assert doc["layers"] == [0, 3] and set(grip) == {
        f"{k}-{t}" for k in ("add", "suppress") for t in ("image", "text", "both")
    }
    assert all(set(row) == {"0", "3"} for row in grip.values())
    assert all(r["n"] == 2 for row in grip.values() for r in row.values())
    for t in ("image", "text", "both"):
        test = doc["tests"][t]
        assert 0 <= test["interaction_p"] <= 1 and "flat" in test["suppression_flat"]
        assert doc["replicates"][t] == test["replicates"] and "seeds" in test
    assert set(doc["latents"]) == {"0", "3"}
    assert main([*args, "--layers", "0,3", "--add-strength", "3"]) == 2
    assert "use another --name" in capsys.readouterr().err
    assert main([*args, "--layers", "0,3"]) == 0  # resumes: every stage read back, the same summary
    assert json.loads((tmp_path / "jl" / "summary.json").read_text())["effects"] == doc["effects"]
    # each layer's Joint SAE reads its own layer
    for n in (0, 3):
        meta = json.loads(
            (tmp_path / "jl" / "jsae" / f"layer{n}" / "joint" / "joint.json").read_text()
        )
        assert meta["metadata"]["layer"] == n
