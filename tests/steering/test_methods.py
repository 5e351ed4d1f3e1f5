"""Every built-in steering method on the shipped tiny VLA: strength 0 is exactly unsteered, a
non-zero strength moves the activations (never silently nothing), removing the edit leaves the
model bit-identical (weight edits included), and a saved method steers as the fitted one."""

from __future__ import annotations

import pytest
import torch

from steering import load_method, make_method, method_names
from steering.registry import BUILTIN_METHODS

METHODS = [
    n for n in BUILTIN_METHODS if n not in ("sae", "sae-direction") and not n.startswith("jsae")
]  # need an SAE: the clamp in test_registry.py, the SAE and Joint SAE directions in test_jsae_method.py


TEST_PARAMS = {"loreft": {"steps": 25}}  # a short training: the tests check the mechanics


def last_layer(backend, frames):
    from agents.taps import ResidualTap

    with ResidualTap(backend.n_layers - 1).attach(backend) as tap:
        backend.prob_yes(frames)
        return tap.latest_batch.clone()


@pytest.fixture(scope="module")
def fitted(vla_backend, fit_data):
    return {name: make_method(name, **TEST_PARAMS.get(name, {})).fit(fit_data, vla_backend) for name in METHODS}  # fmt: skip


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


def test_loreft_learns_the_demonstrations(fitted, vla_backend, fit_data):
    """Training lowers the demonstrations' loss; the edit acts in a rank-r subspace (R's rows
    orthonormal), and the trained edit lowers the loss on the rows it was trained toward."""
    import numpy as np

    m = fitted["loreft"]
    for side, (first, last) in m.fit_info["loss_first_last"].items():
        assert last < first, side
    rot = m.state["to_rigid_rot"]
    assert torch.allclose(rot @ rot.T, torch.eye(rot.shape[0]), atol=1e-5)
    demos = fit_data.demos
    rows = np.flatnonzero(demos.toward == "rigid")[:8]
    with torch.no_grad():
        plain = float(demos.loss(vla_backend, rows))
        with m.intervention(-1.0).attach(vla_backend):
            steered = float(demos.loss(vla_backend, rows))
    assert steered < plain
    assert m.describe()["supervision"] == "behaviour"


def test_positions_choose_where_a_method_acts(fitted, vla_backend, fit_data):
    """A direction added at the VLA's output slots moves only slot positions of the layer it
    edits; text and state positions are found in a VLA prompt; a method fixed at every token
    refuses another position."""
    from agents.vla_model import PromptBuilder, VLASpec

    spec = VLASpec.from_backend(vla_backend)
    builder = PromptBuilder(vla_backend, spec, fit_data.frames.shape[1:])
    d = fit_data.demos.demos
    inputs = builder.inputs(
        fit_data.frames[:2], [builder.text(str(d.instructions[0]), "", d.states[0], 0.0)] * 2
    )

    def layer_out(method=None, strength=0.0):
        seen = []
        hook = vla_backend.layers[2].register_forward_hook(
            lambda m, a, out: seen.append(out.clone())
        )
        try:
            with torch.no_grad():
                if method is None:
                    vla_backend.model(**inputs)
                else:
                    with method.intervention(strength).attach(vla_backend):
                        vla_backend.model(**inputs)
        finally:
            hook.remove()
        return seen[0]

    base = layer_out()
    for where, count in (("slots", spec.n_slots), ("state", None), ("text", None)):
        method = make_method("dom", positions=where).fit(fit_data)
        moved = (layer_out(method, -1.0) - base).norm(dim=-1) > 0
        assert moved.any()
        if count is not None:
            assert int(moved[0].sum()) == count and bool(moved[0, -count:].all())
        image = inputs["input_ids"] == vla_backend.image_token_id
        assert not bool((moved & image).any())
    with pytest.raises(ValueError, match=r"steering method 'steer2edit' fixes where it acts"):
        make_method("steer2edit", positions="text")
    with pytest.raises(
        ValueError, match=r"positions='tokens' for steering method 'dom': choose one of"
    ):
        make_method("dom", positions="tokens")


def test_lat_on_contrast_pairs(vla_backend):
    """On paired data (one scene with each material) LAT takes the true pairs' differences; its
    direction points along the class-mean difference; pairs without both materials are refused."""
    import numpy as np

    from agents.taps import ResidualTap
    from rollouts.frames import render_labeled_frames
    from steering import FitData

    images, labels = render_labeled_frames(8, 4_100_000, paired=True)
    with ResidualTap(2, include_last=False).attach(vla_backend) as tap:
        vla_backend.prob_yes(images)
        acts = tap.latest_batch.reshape(-1, vla_backend.hidden_size).cpu()
    per = acts.shape[0] // 8
    material = np.repeat([lab["material"] for lab in labels], per)
    pair = np.repeat([lab["seed"] for lab in labels], per)
    data = FitData({2: acts}, material, np.repeat([lab["color"] for lab in labels], per),
                   np.repeat(np.arange(8), per), layer=2, pair=pair)  # fmt: skip
    lat = make_method("lat").fit(data)
    assert lat.fit_info["cos_dom"] > 0.5
    unpaired = FitData(
        {2: acts}, material, data.color, data.group, layer=2, pair=np.arange(len(pair))
    )
    with pytest.raises(ValueError, match="pairs hold no scene with both materials"):
        make_method("lat").fit(unpaired)
