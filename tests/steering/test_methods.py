"""Every built-in steering method on the shipped tiny VLA: strength 0 is exactly unsteered, a
non-zero strength moves the activations (never silently nothing), removing the edit leaves the
model bit-identical (weight edits included), and a saved method steers as the fitted one."""

from __future__ import annotations

import pytest
import torch

from steering import load_method, make_method, method_names
from steering.registry import BUILTIN_METHODS

METHODS = [
    n for n in BUILTIN_METHODS if n != "sae"
]  # the SAE clamp: tests/steering/test_sae_method.py


def last_layer(backend, frames):
    from agents.taps import ResidualTap

    with ResidualTap(backend.n_layers - 1).attach(backend) as tap:
        backend.prob_yes(frames)
        return tap.latest_batch.clone()


@pytest.fixture(scope="module")
def fitted(vla_backend, fit_data):
    return {name: make_method(name).fit(fit_data, vla_backend) for name in METHODS}


def test_every_builtin_is_known():
    assert set(BUILTIN_METHODS) <= set(method_names())
    assert len([n for n in BUILTIN_METHODS if n not in ("random", "neuron-random")]) >= 13


@pytest.mark.parametrize("name", METHODS)
def test_zero_is_unsteered_and_undo_is_exact(name, fitted, vla_backend, fit_data):
    from studies.steer_bench.fit import offline_measures

    method, frames = fitted[name], fit_data.frames[:4]
    weights = {k: v.clone() for k, v in vla_backend.model.state_dict().items()}
    base = last_layer(vla_backend, frames)
    with method.intervention(0.0).attach(vla_backend):
        assert torch.equal(last_layer(vla_backend, frames), base)
    strength = method.dose_strengths("rigid")[2]
    moved = offline_measures(method, strength, vla_backend, frames)  # raises if nothing moves
    assert moved["displacement_last"] > 1e-4
    with method.intervention(strength, seed=3).attach(vla_backend):
        steered = last_layer(vla_backend, frames)
    assert not torch.equal(steered, base)
    assert torch.equal(last_layer(vla_backend, frames), base)
    after = vla_backend.model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)


@pytest.mark.parametrize("name", METHODS)
def test_saved_method_steers_as_fitted(name, fitted, vla_backend, fit_data, tmp_path):
    method, frames = fitted[name], fit_data.frames[:2]
    strength = method.dose_strengths("fragile")[1]
    loaded = load_method(method.save(tmp_path / name))
    assert loaded.layer == method.layer and loaded.fit_info == method.fit_info
    out = []
    for m in (method, loaded):
        with m.intervention(strength, seed=1).attach(vla_backend):
            out.append(last_layer(vla_backend, frames))
    assert torch.equal(out[0], out[1])


def test_bad_strength_and_unfitted(fitted):
    with pytest.raises(
        ValueError, match=r"strength 2 of steering method 'ablation': allowed \[0, 1\]"
    ):
        fitted["ablation"].intervention(2)
    with pytest.raises(ValueError, match="strength nan"):
        fitted["dom"].intervention(float("nan"))
    with pytest.raises(ValueError, match="not fitted"):
        make_method("dom").intervention(1.0)


def test_weight_edit_restores_after_a_failed_attach(vla_backend):
    from steering.edits import EditStack, WeightEdit

    weights = {k: v.clone() for k, v in vla_backend.model.state_dict().items()}
    good = WeightEdit(
        0, "mlp.down_proj.weight", torch.ones_like(vla_backend.layers[0].mlp.down_proj.weight)
    )
    bad = WeightEdit(1, "mlp.down_proj.weight", torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"has shape .* the edit has \(3, 3\)"):
        EditStack([good, bad]).attach(vla_backend)
    after = vla_backend.model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)


def test_cast_gate_fires_by_material(fitted, vla_backend, fit_data):
    cast = fitted["cast"]
    assert cast.fit_info["fires_fragile"] > cast.fit_info["fires_rigid"]
    edit = cast.intervention(-1.0).attach(vla_backend)
    try:
        vla_backend.prob_yes(fit_data.frames)
    finally:
        edit.remove()
    material = fit_data.frame_material
    fired = dict(zip(range(len(material)), edit.fired, strict=True))
    fragile = [fired[i] for i in range(len(material)) if material[i] == "fragile"]
    rigid = [fired[i] for i in range(len(material)) if material[i] == "rigid"]
    assert sum(fragile) / len(fragile) > sum(rigid) / len(rigid)


def test_selective_preserves_norms(fitted, fit_data):
    from steering.methods.selective import rotation

    m = fitted["selective"]
    r = rotation(m.state["b1"], m.state["b2"], 73.0)
    h = fit_data.acts[2][:50]
    assert torch.allclose((h @ r.T).norm(dim=1), h.norm(dim=1), rtol=1e-5)
