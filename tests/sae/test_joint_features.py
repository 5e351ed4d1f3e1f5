"""Shared-feature tests of paired SAE codes, and `physteer jsae-study` end to end on a tiny
language-vocabulary model: every candidate tested, bad input refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sae.joint_features import material_retrieval, shared_features, text_pairs


def _texts():
    return [{"material": m, "color": c, "shape": s, "word_set": w}
            for w in ("trained", "held-out") for m in ("fragile", "rigid") for c in ("red", "blue")
            for s in ("cube", "cylinder")]  # fmt: skip


def test_a_planted_shared_feature_passes_and_a_color_feature_does_not():
    rng = np.random.default_rng(0)
    n = 80
    materials = np.array(["fragile", "rigid"] * (n // 2))
    colors = np.array(["red"] * (n // 2) + ["blue"] * (n // 2))
    texts = _texts()
    zv = rng.random((n, 3)) * 0.1
    zv[:, 0] += (materials == "fragile") * 2.0  # latent 0: material in frames
    zv[:, 1] += (colors == "red") * 2.0  # latent 1: color in frames
    codes = rng.random((len(texts), 3)) * 0.1
    codes[:, 0] += np.array([t["material"] == "fragile" for t in texts]) * 2.0
    codes[:, 1] += np.array([t["color"] == "red" for t in texts]) * 2.0
    report = shared_features(zv, materials, colors, codes, texts)
    assert report["passing"] == [0] and report["n_tested"] == 3
    by_latent = {r["latent"]: r for r in report["latents"]}
    assert by_latent[1]["frames"] is False and by_latent[1]["color_swap"] is False
    # a feature that ignores the held-out synonyms fails that test only
    codes[[i for i, t in enumerate(texts) if t["word_set"] == "held-out"], 0] = 0.05
    row = {r["latent"]: r for r in shared_features(zv, materials, colors, codes, texts)["latents"]}[
        0
    ]
    assert (row["frames"], row["texts"], row["held_out_synonyms"]) == (True, False, False)
    assert len(text_pairs(texts, "material")) == 8 and len(text_pairs(texts, "color")) == 8
    with pytest.raises(ValueError, match="frames but"):
        shared_features(zv[:-1], materials, colors, codes, texts)
    with pytest.raises(ValueError, match="min_material_move=-1"):
        shared_features(zv, materials, colors, codes, texts, min_material_move=-1)


def test_the_effect_floor_fails_a_latent_that_moves_too_little():
    rng = np.random.default_rng(1)
    materials = np.array(["fragile", "rigid"] * 20)
    colors = np.array(["red"] * 20 + ["blue"] * 20)
    texts = _texts()
    zv = rng.random((40, 2)) * 0.1 + (materials == "fragile")[:, None] * 2.0
    fragile_text = np.array([t["material"] == "fragile" for t in texts])
    codes = np.stack([0.1 + fragile_text * 2.0, 0.1 + fragile_text * 0.2], axis=1)
    moves = {
        r["latent"]: r["material_move"]
        for r in shared_features(zv, materials, colors, codes, texts)["latents"]
    }
    assert moves[0] == pytest.approx(2.0) and moves[1] == pytest.approx(0.2)
    assert shared_features(zv, materials, colors, codes, texts)["passing"] == [0, 1]
    floored = shared_features(zv, materials, colors, codes, texts, min_material_move=0.5)
    assert floored["passing"] == [0]
    assert {r["latent"]: r["effect"] for r in floored["latents"]} == {0: True, 1: False}


def test_material_retrieval_against_chance():
    codes = np.eye(4)
    zv = np.eye(4)[[0, 1, 2, 3] * 5] + 0.01
    own, swapped = np.array([0, 1, 2, 3] * 5), np.array([1, 0, 3, 2] * 5)
    r = material_retrieval(zv, own, swapped, codes)
    assert r["retrieval"] == 1.0 and r["chance"] == 0.5 and 0.5 < r["low"] < r["high"] <= 1
    r = material_retrieval(zv, swapped, own, codes)
    assert r["retrieval"] == 0.0 and r["p_above_chance"] > 0.5 and r["high"] < 0.5


def test_jsae_study_runs_every_candidate_and_refuses_bad_input(tmp_path, capsys):
    from agents.tiny_model import build_tiny_model, save_tiny
    from cli.main import main

    model, processor = build_tiny_model(3, language=True)
    save_tiny(model, processor, tmp_path / "lang")
    args = ["jsae-study", "--model", str(tmp_path / "lang"), "--images", "16", "--steps", "4",
            "--batch-size", "8", "--out", str(tmp_path), "--name", "s"]  # fmt: skip
    assert main([*args, "--weight", "-1"]) == 2
    assert "weight=-1" in capsys.readouterr().err
    assert main([*args, "--null-shuffles", "-1"]) == 2
    assert "null_shuffles=-1" in capsys.readouterr().err
    assert main([*args[:2], "tiny", *args[3:]]) == 2  # the shipped VLM has no language side
    assert "no language side" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main([*args, "--null-shuffles", "2"]) == 0
    doc = json.loads((tmp_path / "s" / "summary.json").read_text())
    names = [c["candidate"] for c in doc["candidates"]]
    assert names[0].startswith("joint") and len(names) == 6
    assert {c["role"] for c in doc["candidates"]} == {"method", "baseline", "control"}
    assert all(0 <= c["material_retrieval"]["retrieval"] <= 1 for c in doc["candidates"])
    floor = doc["effect_floor"]  # from further shuffles, not from the shuffled-pairs control
    assert floor["null_shuffles"] == 2 and len(floor["null_largest_moves"]) == 2
    assert floor["material_move"] == max(floor["null_largest_moves"])
    assert all(r["best"].get("effect") is not None for r in doc["candidates"] if r["best"])
    assert all(
        r["best"]["material_move"] > floor["material_move"]
        for r in doc["candidates"]
        if r["passing"]
    )
    assert (
        tmp_path / "s" / "saes" / "joint" / "joint.json"
    ).is_file()  # what jsae-* steering reads


def test_match_latents_recovers_a_permutation():
    from sae.joint_trainer import match_latents

    z = torch.rand(50, 6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    zl = z[:, perm]
    match = match_latents(z, zl)
    assert torch.equal(zl[:, match], z)
