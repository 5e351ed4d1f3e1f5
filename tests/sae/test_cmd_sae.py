"""The train-sae and discover sub-commands end to end on a tiny labelled store."""

import argparse
import json

import numpy as np
import pytest

from cli import sae as cmd_sae
from sae import ActivationStore


def run(argv):
    parser = argparse.ArgumentParser()
    cmd_sae.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def labelled_store(tmp_path):
    rng = np.random.default_rng(0)
    d, tokens = 16, 4
    basis = rng.normal(size=(8, d))
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    store = ActivationStore(tmp_path / "store", d=d)
    for shard in range(4):
        rows, meta = [], []
        for i in range(20):
            image = shard * 20 + i
            color, material = ["red", "blue"][image % 2], ["fragile", "rigid"][(image // 2) % 2]
            for t in range(tokens):
                # Sparse tokens: the material atom shows on some tokens of fragile images, the
                # color atom on some tokens of red images, independently, plus distractor atoms.
                on = (
                    rng.random(8)
                    < [0.7 * (material == "fragile"), 0.7 * (color == "red")] + [0.3] * 6
                )
                x = (on * rng.uniform(1, 2, 8)) @ basis + rng.normal(size=d) * 0.05
                rows.append(x)
                meta.append(
                    {"image_id": image, "token_position": t, "color": color, "material": material}
                )
        store.append(np.array(rows, dtype=np.float32), meta)
    return tmp_path / "store"


def test_train_then_discover(labelled_store, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--store", str(labelled_store), "--out", str(out), "--k", "4", "--n-latents", "32",
              "--prefixes", "4,16,32", "--batch-size", "64", "--lr", "3e-3", "--no-progress"]  # fmt: skip
    assert run(["train-sae", *common, "--steps", "150", "--checkpoint-every", "100"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["l0"] == 4 and metrics["fve"] > 0.3
    with pytest.warns(UserWarning, match="lr schedule"):
        assert run(["train-sae", *common, "--steps", "200", "--resume"]) == 0
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 200
    disc = tmp_path / "disc"
    assert run(["discover", "--store", str(labelled_store), "--sae", str(out), "--out", str(disc),
                "--n-boot", "50", "--top", "5"]) == 0  # fmt: skip
    result = json.loads((disc / "discovery.json").read_text())
    assert len(result["fragility"]) >= 1 and len(result["color"]) >= 1
    assert not set(result["fragility"]) & set(result["color"])
    assert result["unit"] == "image" and result["cell_counts"]["red/fragile"]["units"] == 20
    assert (disc / "discovery.png").is_file()
    assert "Decorrelated discovery" in capsys.readouterr().out


def test_discover_rejects_wrong_width(labelled_store, tmp_path):
    from sae import MatryoshkaSAE, SAEConfig

    MatryoshkaSAE(SAEConfig(d_in=8, n_latents=16, k=2)).save(tmp_path / "wrong")
    with pytest.raises(ValueError, match="d_in=8 but the activations have d=16"):
        run(["discover", "--store", str(labelled_store), "--sae", str(tmp_path / "wrong")])
