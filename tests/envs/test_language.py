"""Handling words in the instruction: the env option, info, the oracle that follows them."""

from __future__ import annotations

import numpy as np
import pytest

from envs import FrankaPickEnv
from envs.language import check_handling_word, description, instruction


def test_instruction_and_description_words():
    assert instruction("red") == "Put the red object in the bin."
    assert instruction("blue", "softly") == "Put the blue object in the bin softly."
    assert description("red", "rigid", "cube", held_out=True) == "a sturdy red cube"
    with pytest.raises(ValueError, match="'roughly'.*gently"):
        check_handling_word("roughly")
    with pytest.raises(ValueError, match="material 'glass'"):
        description("red", "glass")


def test_handling_option_sets_the_instruction_and_the_oracle_follows_it():
    from agents.protocol import ScriptedAgent

    env = FrankaPickEnv()
    try:
        with pytest.raises(ValueError, match="handling word 'hard'"):
            env.reset(seed=1, options={"handling": "hard"})
        obs, info = env.reset(seed=1, options={"material": "fragile"})
        assert info["handling"] is None and info["instruction"].startswith("Put the")
        plain_frame = obs["image"] if "image" in obs else None
        obs, info = env.reset(seed=1, options={"material": "fragile", "handling": "firmly"})
        assert info["instruction"].endswith("in the bin firmly.") and info["handling"] == "firm"
        if plain_frame is not None:  # the word changes the words, never the scene
            assert np.array_equal(plain_frame, obs["image"])
        agent = ScriptedAgent()
        agent.reset(1)
        agent.act_batch([obs], [info], [0])
        assert agent.decision_for(0)["profile"] == "firm"  # the word wins over the material
        obs, info = env.reset(seed=1, options={"material": "rigid", "handling": "gently"})
        agent.reset(1)
        agent.act_batch([obs], [info], [0])
        assert agent.decision_for(0)["profile"] == "gentle"
    finally:
        env.close()
