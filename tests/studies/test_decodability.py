"""`physteer pi0-decodability`: a π0's material, stream × layer, beside random weights. A small
random-weight π0 runs the whole sweep (inputs from closed-loop decisions, every layer of both
streams tapped, a cross-color probe and discovery per row), resumes from its kept inputs, and
refuses bad settings before any episode; the probe tells material from color."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.pi0_build import build_pi0
from cli.main import main
from studies.decodability import DecodabilityConfig, cross_color_probe, run_decodability


@pytest.fixture(scope="module")
def pi0_dir(tmp_path_factory):
    return build_pi0(tmp_path_factory.mktemp("pi0") / "pi0", seed=3, hidden=48, chunk=4)


def test_the_sweep_runs_every_row_and_resumes(pi0_dir, tmp_path):
    out = tmp_path / "dec"
    argv = ["pi0-decodability", "--model", str(pi0_dir), "--episodes", "16", "--decisions", "2",
            "--sae-steps", "20", "--n-boot", "20", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_decisions"] == 32 and summary["n_fragile"] == 16
    from agents.pi0_model import load_pi0

    backend = load_pi0(pi0_dir)
    layers = {"vlm": backend.n_layers, "expert": backend.expert.n_layers}
    keys = {(r["model"], r["stream"], r["layer"]) for r in summary["rows"]}
    assert keys == {
        (m, s, L)
        for m in ("trained", "random weights")
        for s, n in layers.items()
        for L in range(n)
    }
    for r in summary["rows"]:
        p = r["probe"]
        assert 0 <= p["ci"][0] <= p["accuracy"] <= p["ci"][1] <= 1 and p["n_episodes"] == 16
        assert r["tokens"] == (backend.image_tokens if r["stream"] == "vlm" else backend.chunk_size)
    inputs = (out / "inputs.json").stat().st_mtime_ns
    assert main(argv) == 0  # resumes: the kept inputs are read, not collected again
    assert (out / "inputs.json").stat().st_mtime_ns == inputs
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]
    other = DecodabilityConfig(
        model=str(pi0_dir), episodes=16, decisions=3, sae_steps=20, n_boot=20, out=str(out)
    )
    with pytest.raises(ValueError, match="decisions: 2 there, 3 now"):  # other settings: refused
        run_decodability(other)


def test_the_probe_reads_material_and_not_color():
    """A feature that carries material transfers across colors; one that carries only color
    (and material within one color, as a confound would) does not."""
    rng = np.random.default_rng(0)
    meta = [{"seed": i // 2, "color": ("red", "blue")[i % 4 // 2], "material": ("fragile", "rigid")[i % 2]}
            for i in range(160)]  # fmt: skip
    fragile = np.array([m["material"] == "fragile" for m in meta], float)
    red = np.array([m["color"] == "red" for m in meta], float)
    noise = rng.normal(size=(160, 3))
    material = cross_color_probe(np.c_[fragile + 0.3 * noise[:, 0], noise[:, 1:]], meta, n_boot=50)
    assert material["accuracy"] > 0.9
    confound = (2 * red - 1) * (2 * fragile - 1)  # reads material one way in red, the other in blue
    color = cross_color_probe(np.c_[confound + 0.3 * noise[:, 0], noise[:, 1:]], meta, n_boot=50)
    assert color["accuracy"] < 0.1  # transferred across colors, it is read backwards


def test_random_weights_of_a_pi0_keep_its_architecture_and_sampling(pi0_dir):
    from agents.pi0_model import PI0Backend, load_pi0
    from studies.collect import random_weights_backend

    trained = load_pi0(pi0_dir)
    fresh = random_weights_backend(trained, seed=5)
    assert (
        isinstance(fresh, PI0Backend)
        and fresh.model.config.to_dict() == trained.model.config.to_dict()
    )
    defaults = ("n_action_steps", "noise_scale", "blend")
    assert [getattr(fresh, k) for k in defaults] == [getattr(trained, k) for k in defaults]
    a, b = (dict(m.model.named_parameters()) for m in (trained, fresh))
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fields, named", [
    ({"episodes": 8}, "episodes=8"),
    ({"decisions": 0}, "decisions=0"),
    ({"sae_expansion": -1.0}, "sae_expansion"),
    ({"model": "/nonexistent/pi0"}, "/nonexistent/pi0"),
])  # fmt: skip
def test_bad_settings_are_refused_before_any_episode(fields, named, tmp_path):
    with pytest.raises(ValueError, match=named):
        DecodabilityConfig(out=str(tmp_path / "x"), **fields).validate()
    assert not (tmp_path / "x").exists()
