"""The shipped tiny checkpoint: held-out accuracy per cell, probe vs random weights, closed loop.

Skipped when agents/tiny_vlm/ has no checkpoint yet (run `physteer train-tiny`).
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.tiny_model import TINY_VLM_DIR

pytestmark = pytest.mark.skipif(
    not (TINY_VLM_DIR / "model.safetensors").is_file(), reason="no shipped tiny checkpoint"
)
HELD_OUT_SEED = 3_000_000  # disjoint from training seeds (0..) and train-tiny's eval seeds (1e6..)
# `physteer agent-eval`'s default first seed. (Seed 4_000_000 breaks the fragile object even
# for the oracle ScriptedAgent with the gentle profile: an env/expert limit, not the agent's.)
CLOSED_LOOP_SEED = 2_000_000


@pytest.fixture(scope="module")
def trained():
    from agents.backend import load_vlm

    return load_vlm("tiny", device="cpu")


@pytest.fixture(scope="module")
def held_out():
    from rollouts.frames import render_labeled_frames

    return render_labeled_frames(160, seed=HELD_OUT_SEED)


def test_per_cell_accuracy_on_held_out_renders(trained, held_out):
    from agents.train_tiny import evaluate

    images, labels = held_out
    report = evaluate(trained, images, labels)
    assert len(report["cells"]) == 8
    for cell, r in report["cells"].items():
        assert r["n"] >= 16, cell
        assert r["fragility_acc"] >= 0.95, (cell, r)
        assert r["color_acc"] >= 0.98, (cell, r)


def test_probe_trained_vs_random_weights(trained, held_out):
    from agents.backend import VLMBackend
    from agents.tiny_model import build_tiny_model
    from agents.train_tiny import pooled_activations, probe_accuracy

    images, labels = held_out
    y = np.array([lab["material"] == "fragile" for lab in labels], dtype=int)
    model, processor = build_tiny_model(seed=0)
    random = VLMBackend(model, processor)
    layer = 2
    acc_random = probe_accuracy(pooled_activations(random, images, layer), y)["mean"]
    acc_trained = probe_accuracy(pooled_activations(trained, images, layer), y)["mean"]
    assert acc_random <= 0.65, acc_random
    assert acc_trained >= 0.95, acc_trained


def test_closed_loop_vlm_agent(trained):
    """5 seeds per color × material: fragile intact >= 90%, success >= 90%.

    The env runs in state mode and the agent gets the camera frame on its decision steps only
    (it reads no image in between), which keeps the test fast.
    """
    from agents.vlm_agent import VLMAgent
    from envs import FrankaPickEnv

    agent = VLMAgent(trained, decide_every=10)
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=384)
    results = []
    try:
        for color in ("red", "blue"):
            for material in ("fragile", "rigid"):
                for seed in range(CLOSED_LOOP_SEED, CLOSED_LOOP_SEED + 5):
                    obs, info = env.reset(seed=seed, options={"color": color, "material": material})
                    agent.reset(seed)
                    done = False
                    while not done:
                        if agent.needs_image:
                            obs = {**obs, "image": env.render()}
                        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
                        done = terminated or truncated
                    right = agent.decisions[0]["fragile"] == (material == "fragile")
                    results.append((material, info["success"], info["broken"], right))
    finally:
        env.close()
        agent.close()
    fragile = [r for r in results if r[0] == "fragile"]
    assert np.mean([not r[2] for r in fragile]) >= 0.9, results
    assert np.mean([r[1] for r in results]) >= 0.9, results
    # always-gentle would pass the two above: the decisions themselves must be right
    assert np.mean([r[3] for r in results]) >= 0.9, results
