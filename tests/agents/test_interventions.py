"""Interventions change logits while active and leave no trace after removal; bad inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import TinySAE

from agents.interventions import AddVector, NeuronOverride, SAEFeatureSteering
from agents.taps import ResidualTap


@pytest.fixture(scope="module")
def inputs(backend, frames):
    return backend.prepare(frames)


@pytest.fixture(scope="module")
def clean(backend, inputs):
    return backend.forward(inputs).logits.clone()


def make_interventions(d: int):
    g = torch.Generator().manual_seed(1)
    sae = TinySAE(d, n_latents=32)
    return {
        "add_image": AddVector(torch.randn(d, generator=g), 4.0, layer=1, positions="image"),
        "add_last": AddVector(torch.randn(d, generator=g), 4.0, layer=2, positions="last"),
        "add_indices": AddVector(torch.randn(d, generator=g), 4.0, layer=0, positions=[5, -1]),
        "sae_delta": SAEFeatureSteering(sae, 3, 8.0, prefix=8, mode="delta", layer=2),
        "sae_replace": SAEFeatureSteering(sae, 3, 8.0, prefix=8, mode="replace", layer=2),
        "sae_full": SAEFeatureSteering(sae, 20, 8.0, prefix=None, layer=1, positions="all"),
        "neurons": NeuronOverride(1, [0, 3, 7, 11], 10.0),
        "neurons_image": NeuronOverride(2, list(range(20)), -5.0, positions="image"),
    }


@pytest.mark.parametrize("name", list(make_interventions(8)))
def test_changes_logits_then_leaves_no_trace(backend, inputs, clean, name):
    iv = make_interventions(backend.hidden_size)[name]
    with iv.attach(backend):
        steered = backend.forward(inputs).logits
    assert not torch.allclose(steered, clean), f"{name} had no effect"
    assert not iv.active
    assert torch.equal(backend.forward(inputs).logits, clean)
    # the handle form
    handle = iv.attach(backend)
    assert not torch.equal(backend.forward(inputs).logits, clean)
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(backend.forward(inputs).logits, clean)
    for layer in backend.layers:
        assert not layer._forward_hooks or all(
            "capturing" in getattr(h, "__name__", "") for h in layer._forward_hooks.values()
        )
        assert not layer.mlp.down_proj._forward_pre_hooks


def test_exact_no_ops(backend, inputs, clean):
    v = torch.randn(backend.hidden_size)
    with AddVector(v, 0.0, layer=1, positions="all").attach(backend):
        assert torch.equal(backend.forward(inputs).logits, clean)
    with NeuronOverride(1, [], 10.0).attach(backend):
        assert torch.equal(backend.forward(inputs).logits, clean)


def test_intervention_shows_in_hidden_states_and_tap(backend, inputs):
    v = torch.ones(backend.hidden_size)
    layer = 1
    with ResidualTap(layer).attach(backend) as tap:
        base = backend.forward(inputs, output_hidden_states=True).hidden_states[layer + 1]
        clean_tap = tap.latest_batch.clone()
        with AddVector(v, 2.0, layer=layer, positions="image").attach(backend):
            hs = backend.forward(inputs, output_hidden_states=True).hidden_states[layer + 1]
        mask = backend.image_positions(inputs["input_ids"])
        assert torch.allclose(hs[mask], base[mask] + 2.0, atol=1e-5)
        assert torch.equal(hs[~mask], base[~mask])
        assert torch.allclose(tap.latest_batch[:, :81], clean_tap[:, :81] + 2.0, atol=1e-5)


def test_stacked_interventions_remove_in_any_order(backend, inputs, clean):
    d = backend.hidden_size
    a = AddVector(torch.randn(d), 3.0, layer=1).attach(backend)
    b = NeuronOverride(1, [1, 2], 5.0).attach(backend)
    a.remove()
    assert not torch.equal(backend.forward(inputs).logits, clean)
    b.remove()
    assert torch.equal(backend.forward(inputs).logits, clean)


def test_bad_inputs(backend):
    d = backend.hidden_size
    n = backend.n_layers
    with pytest.raises(ValueError) as err:
        AddVector(torch.zeros(d + 3), 1.0, layer=0).attach(backend)
    assert str(d + 3) in str(err.value) and str(d) in str(err.value)
    with pytest.raises(ValueError, match=f"0..{n - 1}"):
        AddVector(torch.zeros(d), 1.0, layer=n).attach(backend)
    with pytest.raises(ValueError, match="1-D"):
        AddVector(torch.zeros(2, d), 1.0, layer=0)
    with pytest.raises(ValueError, match="positions"):
        AddVector(torch.zeros(d), 1.0, layer=0, positions="middle")
    sae = TinySAE(d, n_latents=32)
    with pytest.raises(ValueError, match=r"feature=32: valid features are 0..31"):
        SAEFeatureSteering(sae, 32, 1.0)
    with pytest.raises(ValueError, match=r"feature=-1"):
        SAEFeatureSteering(sae, -1, 1.0)
    with pytest.raises(ValueError, match=r"0..7 \(prefix 8\)"):
        SAEFeatureSteering(sae, 10, 1.0, prefix=8)
    with pytest.raises(ValueError, match="prefix=64"):
        SAEFeatureSteering(sae, 1, 1.0, prefix=64)
    with pytest.raises(ValueError, match="mode"):
        SAEFeatureSteering(sae, 1, 1.0, mode="add")
    with pytest.raises(ValueError, match="d_in"):
        SAEFeatureSteering(TinySAE(d + 1), 1, 1.0).attach(backend)
    with pytest.raises(ValueError, match="encode"):
        SAEFeatureSteering(object(), 1, 1.0)
    inter = backend.layers[0].mlp.down_proj.in_features
    with pytest.raises(ValueError, match=f"0..{inter - 1}"):
        NeuronOverride(0, [inter], 1.0).attach(backend)
    with pytest.raises(ValueError, match=f"0..{n - 1}"):
        NeuronOverride(n, [0], 1.0).attach(backend)
    with pytest.raises(ValueError, match="finite"):
        NeuronOverride(0, [0], float("nan"))
    iv = AddVector(torch.zeros(d), 1.0, layer=0).attach(backend)
    try:
        with pytest.raises(ValueError, match="already attached"):
            iv.attach(backend)
    finally:
        iv.remove()
    with pytest.raises(ValueError, match="attach"):
        with AddVector(torch.zeros(d), 1.0, layer=0):
            pass


def test_text_positions_on_a_planner_prompt_and_no_state_tokens(backend, inputs, clean):
    """On the planner's prompt, "text" is the question's and template's ordinary tokens (never
    an image token); "state" and "slots" name what is missing instead of steering nothing."""
    from agents.hooks import position_mask

    ids = inputs["input_ids"]
    text = position_mask(
        "text", ids, backend.image_token_id, tuple(ids.shape), backend.token_groups()
    )
    assert bool(text.any()) and not bool((text & (ids == backend.image_token_id)).any())
    d = backend.hidden_size
    with AddVector(torch.ones(d), 4.0, layer=1, positions="text").attach(backend):
        assert not torch.equal(backend.forward(inputs).logits, clean)
    with AddVector(torch.ones(d), 4.0, layer=1, positions="state").attach(backend):
        with pytest.raises(ValueError, match=r"positions='state': this prompt has no state tokens"):
            backend.forward(inputs)
    assert torch.equal(backend.forward(inputs).logits, clean)
