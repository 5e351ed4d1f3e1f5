"""The Joint SAE: alignment does what it claims on paired data with a known shared cause (and
nothing at weight 0), each side is a MatryoshkaSAE that saves and loads, bad settings are named;
`physteer train-jsae` runs end to end on the tiny VLM with the description read from a blank frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sae import MatryoshkaSAE
from sae.config import SAEConfig
from sae.joint import JointConfig, JointSAE
from sae.joint_trainer import JointTrainConfig, train_joint


@pytest.fixture(scope="module")
def paired():
    """Shared sparse sources seen through two different linear maps (two "modalities")."""
    g = torch.Generator().manual_seed(0)
    n, sources = 320, 10
    s = (torch.rand(n, sources, generator=g) < 0.2).float() * torch.rand(n, sources, generator=g)
    xv = s @ torch.randn(sources, 24, generator=g) + 0.05 * torch.randn(n, 24, generator=g)
    xl = s @ torch.randn(sources, 16, generator=g) + 0.05 * torch.randn(n, 16, generator=g)
    return xv, xl, np.arange(n)


def fit(paired, alignment, weight, steps=300):
    xv, xl, groups = paired
    config = JointConfig.default(24, 16, alignment=alignment, weight=weight, k=4)
    return train_joint(xv, xl, groups, config, JointTrainConfig(steps=steps, lr=2e-3))


def test_alignment_pairs_the_modalities_and_weight_zero_does_not(paired):
    _, plain = fit(paired, "cosine", 0.0)
    m0 = plain["metrics"]
    assert (
        m0["retrieval"] < 0.1 and m0["vision"]["fve"] > 0.8
    )  # independent SAEs: chance-level pairing
    for alignment in ("cosine", "contrastive", "cross"):
        m = fit(paired, alignment, 1.0)[1]["metrics"]
        assert m["retrieval"] > m0["retrieval"] + 0.2, (alignment, m)
        assert m["cosine_gap"] > m0["cosine_gap"] + 0.2, (alignment, m)
        assert m["pairs"] == plain["held_rows"]


def test_sides_are_matryoshka_saes_that_save_and_load(paired, tmp_path):
    joint, _ = fit(paired, "contrastive", 0.5, steps=20)
    assert isinstance(joint.side("vision"), MatryoshkaSAE) and joint.side("language").d_in == 16
    loaded = JointSAE.from_pretrained(joint.save(tmp_path / "j"))
    xv, xl, _ = paired
    assert torch.equal(loaded.vision.encode(xv[:5]), joint.vision.encode(xv[:5]))
    assert torch.equal(loaded.language.encode(xl[:5]), joint.language.encode(xl[:5]))
    assert loaded.config.alignment == "contrastive" and loaded.config.weight == 0.5


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="n_latents: vision 64 and language 32 must match"):
        JointConfig(SAEConfig(d_in=8, n_latents=64, k=4), SAEConfig(d_in=8, n_latents=32, k=4))
    with pytest.raises(ValueError, match="alignment='l2': choose one of"):
        JointConfig.default(8, 8, alignment="l2")
    with pytest.raises(ValueError, match="weight=-1"):
        JointConfig.default(8, 8, weight=-1)
    with pytest.raises(ValueError, match="side='audio'"):
        JointSAE(JointConfig.default(8, 8)).side("audio")
    xv, xl = torch.randn(10, 8), torch.randn(9, 8)  # one description short: pairs do not match
    with pytest.raises(
        ValueError, match="10 vision rows, 9 language rows, 10 groups: one each per pair"
    ):
        train_joint(xv, xl, np.arange(10), JointConfig.default(8, 8), JointTrainConfig())


def test_train_jsae_on_the_tiny_vlm(tmp_path, capsys):
    from cli.main import main
    from studies.joint_sae import COLLECT_SEED, description, language_rows

    out = tmp_path
    assert main(["train-jsae", "--images", "16", "--steps", "30", "--alignments", "cosine", "--weights", "0,1",
                 "--out", str(out), "--name", "j"]) == 0  # fmt: skip
    doc = json.loads((out / "j" / "summary.json").read_text())
    assert [(r["alignment"], r["weight"]) for r in doc["runs"]] == [("none", 0.0), ("cosine", 1.0)]
    assert doc["pairs"] == 16 and all(d.startswith("a ") for d in doc["descriptions"])
    assert (out / "j" / "saes" / "cosine-1" / "joint.json").is_file()
    assert "none × 0: retrieval" in capsys.readouterr().out
    # the language side reads the description's own tokens from a blank frame: the same text
    # gives the same row whatever scene it describes, and two texts give two rows
    from agents.backend import load_vlm

    backend = load_vlm("tiny", "cpu", "float32")
    rows = language_rows(backend, 2, ["a fragile red cube", "a rigid red cube"])
    assert not torch.equal(rows["a fragile red cube"], rows["a rigid red cube"])
    assert (
        COLLECT_SEED > 0
        and description({"material": "rigid", "color": "blue", "shape": "cube"})
        == "a rigid blue cube"
    )
    assert main(["train-jsae", "--vision-pool", "patch", "--out", str(out), "--name", "bad"]) == 2
    assert not (out / "bad").exists()
