"""Perturbations: onset, effect on the agent's activations, and no trace after end()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.backend import VLMBackend
from agents.tiny_model import build_tiny_model
from agents.vlm_agent import VLMAgent
from monitors.attacks import (
    ActivationAddition,
    ImageCorruption,
    PromptInjection,
    SAEOverdrive,
    contrast_feature,
)


@pytest.fixture(scope="module")
def agent():
    model, processor = build_tiny_model(seed=0)
    return VLMAgent(VLMBackend(model, processor), decide_every=1, tap_layer=2)


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)


def forward(agent, frame):
    p = agent.p_fragile(frame)
    return p, agent.tap.image_activations.clone()


def test_activation_addition_switches_on_at_onset_and_leaves_no_trace(agent, frame):
    p0, a0 = forward(agent, frame)
    v = torch.randn(agent.backend.hidden_size)
    pert = ActivationAddition(v, magnitude=2.0, layer=2, onset_step=3)
    assert not pert.update(agent, 2)
    _, a = forward(agent, frame)
    torch.testing.assert_close(a, a0)
    assert pert.update(agent, 3)
    _, a1 = forward(agent, frame)
    torch.testing.assert_close(a1 - a0, (2.0 * v).expand_as(a0), atol=1e-4, rtol=1e-4)
    pert.end()
    pert.end()  # idempotent
    p2, a2 = forward(agent, frame)
    assert p2 == p0
    torch.testing.assert_close(a2, a0, atol=0, rtol=0)


def test_contrastive_and_random_vectors():
    clean = [torch.zeros(3, 4), torch.zeros(2, 4)]
    adv = torch.ones(5, 4)
    ta2 = ActivationAddition.contrastive(clean, adv, magnitude=4.0, layer=1)
    assert ta2.vector.tolist() == [1.0] * 4 and ta2.name == "ta2x4"
    rnd = ActivationAddition.random(64, reference_norm=3.0, seed=1)
    assert float(rnd.vector.norm()) == pytest.approx(3.0)
    assert rnd.describe()["vector_norm"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="contrastive vector is zero"):
        ActivationAddition.contrastive(adv, adv)
    with pytest.raises(ValueError, match="reference_norm=0"):
        ActivationAddition.random(4, 0)


def test_from_inputs_uses_forwards(agent, frame):
    other = 255 - frame
    pert = ActivationAddition.from_inputs(agent.backend, 2, [frame], [other])
    assert pert.vector.shape == (agent.backend.hidden_size,) and float(pert.vector.norm()) > 0


def test_sae_overdrive_changes_activations_and_is_removed(agent, frame):
    from sae import TrainConfig, default_config, train_sae

    _, a0 = forward(agent, frame)
    d = agent.backend.hidden_size
    sae = train_sae(a0.repeat(4, 1) + torch.randn(4 * a0.shape[0], d) * 0.1, default_config(d),
                    TrainConfig(steps=5, batch_size=64, warmup_steps=1), progress=False).sae  # fmt: skip
    feature = contrast_feature(sae, [a0], [a0 + 1.0])
    pert = SAEOverdrive(sae, feature, magnitude=20.0, layer=2, onset_step=0)
    pert.update(agent, 0)
    _, a1 = forward(agent, frame)
    assert float((a1 - a0).norm()) > 1.0
    pert.end()
    _, a2 = forward(agent, frame)
    torch.testing.assert_close(a2, a0, atol=0, rtol=0)
    with pytest.raises(ValueError, match="feature="):
        SAEOverdrive(sae, 10**6)


@pytest.mark.parametrize("kind", ["noise", "occlusion", "color_shift"])
def test_image_corruption(kind, frame):
    pert = ImageCorruption(kind, 0.3, onset_step=1, seed=4)
    assert pert.corrupt_image(frame) is frame  # not active yet
    pert.update(None, 1)
    out = pert.corrupt_image(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8 and not np.array_equal(out, frame)
    pert.end()
    pert.update(None, 5)
    np.testing.assert_array_equal(pert.corrupt_image(frame), out)  # replays per episode
    if kind == "occlusion":
        assert (out[192, 192] == 127).all()


def test_prompt_injection_changes_the_question_and_restores_it(agent, frame):
    question = agent.question
    pert = PromptInjection(magnitude=2, onset_step=0)
    pert.update(agent, 0)
    assert agent.question.startswith(question) and agent.question.count("rigid") == 2
    pert.end()
    assert agent.question == question
    with pytest.raises(ValueError, match="no .question"):
        PromptInjection().update(object(), 0)


def test_bad_perturbation_input():
    with pytest.raises(ValueError, match="onset_step=-1"):
        ImageCorruption(onset_step=-1)
    with pytest.raises(ValueError, match="corruption='blur'"):
        ImageCorruption("blur")
    with pytest.raises(ValueError, match="magnitude=2"):
        ImageCorruption("noise", 2)
    with pytest.raises(ValueError, match="magnitude=nan"):
        ActivationAddition(torch.ones(3), magnitude=float("nan"))
    with pytest.raises(ValueError, match="1-D"):
        ActivationAddition(torch.ones(3, 3))
    with pytest.raises(ValueError, match="magnitude=0.5"):
        PromptInjection(magnitude=0.5)
    with pytest.raises(ValueError, match="has no .backend"):
        ActivationAddition(torch.ones(3)).update(object(), 0)
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        p = ImageCorruption()
        p.update(None, 0)
        p.corrupt_image(np.zeros((4, 4), np.float32))
