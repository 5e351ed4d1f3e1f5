"""Agent protocol, ScriptedAgent and VLMAgent (planner mode) with the random tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from agents.protocol import Agent, ScriptedAgent
from agents.vlm_agent import VLMAgent, default_tap_layer


def fake_info(material: str = "fragile") -> dict:
    return {
        "ee_pos": np.array([0.0, -0.04, 0.22]),
        "object_pos": np.array([0.05, 0.02, 0.03]),
        "bin_pos": np.array([0.1, 0.2, 0.0]),
        "finger_width": 0.08,
        "holding": False,
        "broken": False,
        "object": {"color": "red", "material": material, "shade": "pale", "shape": "cube"},
    }


def test_scripted_agent_uses_the_true_material():
    agent = ScriptedAgent()
    assert isinstance(agent, Agent)
    agent.reset(0)
    action = agent.act({}, fake_info("fragile"))
    assert action.shape == (4,) and agent.last_decision["profile"] == "gentle"
    agent.act({}, fake_info("rigid"))
    assert agent.last_decision["profile"] == "firm" and agent.tap is None
    with pytest.raises(ValueError, match="material"):
        agent.act({}, {"ee_pos": 0})
    with pytest.raises(ValueError, match="unknown"):
        ScriptedAgent({"fragile": "gentle", "rigid": "sloppy"})


def test_vlm_agent_decides_every_n_steps(backend, frames):
    agent = VLMAgent(backend, decide_every=3, threshold=0.5, tap_layer=1)
    try:
        assert isinstance(agent, Agent)
        agent.reset(seed=0)
        calls = []
        for step in range(7):
            agent.act({"image": frames[step % 2]}, fake_info())
            calls.append(agent.last_decision["decided"])
            assert agent.needs_image == ((step + 1) % 3 == 0)
            assert set(agent.last_decision) >= {"p_fragile", "fragile", "profile", "threshold"}
            assert agent.expert.profile.name == agent.last_decision["profile"]
        assert calls == [True, False, False, True, False, False, True]
        assert agent.tap.calls == 3 and agent.tap.latest.shape == (82, backend.hidden_size)
        assert len(agent.decisions) == 3
        # threshold 0 ⇒ always fragile, 1 ⇒ fragile only at P = 1
        agent.threshold = 0.0
        agent.reset(1)
        agent.act({"image": frames[0]}, fake_info())
        assert agent.last_decision["profile"] == "gentle"
        with pytest.raises(ValueError, match="image"):
            agent.reset(2)
            agent.act({"state": np.zeros(17, np.float32)}, fake_info())
    finally:
        agent.close()
    assert not agent.tap.active


def test_vlm_agent_bad_arguments(backend):
    with pytest.raises(ValueError, match="decide_every"):
        VLMAgent(backend, decide_every=0, tap_layer=None)
    with pytest.raises(ValueError, match="threshold"):
        VLMAgent(backend, threshold=1.5, tap_layer=None)
    with pytest.raises(ValueError, match=f"0..{backend.n_layers - 1}"):
        VLMAgent(backend, tap_layer=backend.n_layers)
    assert default_tap_layer(24) == 16 and default_tap_layer(4) == 2
