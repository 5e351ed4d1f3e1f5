"""The layered TinyRenderer (envs.layers, renderer "tiny-layered", the default) draws the same
pixels as one TinyRenderer pass, through an episode in which the object breaks (fragments
appear: the scene changes mid-episode), and leaves physics untouched."""

from __future__ import annotations

import numpy as np
import pytest

from envs import FrankaPickEnv
from envs.expert import ScriptedExpert


def _paired_frames(seed: int, profile: str, every: int = 6):
    """(one-pass frame, layered frame) every `every` steps of the expert's episode, and whether
    the object broke; asserts the two envs' states stay equal."""
    envs = {
        r: FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=128, renderer=r)
        for r in ("tiny", "tiny-layered")
    }
    try:
        _, info = envs["tiny"].reset(seed=seed)
        envs["tiny-layered"].reset(seed=seed)
        expert, pairs = ScriptedExpert(profile), []
        for t in range(200):
            if t % every == 0:
                pairs.append((envs["tiny"].render(), envs["tiny-layered"].render()))
            action = expert.act(info)
            out = {r: e.step(action) for r, e in envs.items()}
            assert np.array_equal(out["tiny"][0]["state"], out["tiny-layered"][0]["state"])
            info = out["tiny"][4]
            if out["tiny"][2] or out["tiny"][3]:
                break
        pairs.append((envs["tiny"].render(), envs["tiny-layered"].render()))
        return pairs, info["broken"]
    finally:
        for e in envs.values():
            e.close()


@pytest.mark.parametrize("seed, profile", [(3, "firm"), (2, "gentle")])
def test_layered_frames_equal_one_pass(seed, profile):
    pairs, broken = _paired_frames(seed, profile)
    assert len(pairs) >= 5
    if profile == "firm":
        assert broken, "the firm grip should break this fragile object (fragments enter the scene)"
    for k, (one_pass, layered) in enumerate(pairs):
        assert one_pass.shape == layered.shape == (128, 128, 3)
        assert np.array_equal(one_pass, layered), (
            f"frame {k}: {(one_pass != layered).any(-1).sum()} pixels differ"
        )


def test_the_check_can_fail():
    """A frame with the object moved differs from the frame before: the equality above is not
    vacuous (the object and arm are in view and the comparison sees them)."""
    env = FrankaPickEnv(
        render_mode="rgb_array", obs_mode="state", image_size=128, renderer="tiny-layered"
    )
    try:
        env.reset(seed=0)
        before = env.render()
        for _ in range(15):
            env.step(np.array([0.8, 0.0, 0.0, 0.0], dtype=np.float32))
        assert not np.array_equal(before, env.render())
    finally:
        env.close()


def test_copies_kept_across_episodes_still_draw_each_episode_exactly():
    """One pair of envs through three episodes (the arm's copy and the static scene are kept,
    the object's copy replaced): every episode's frames equal one pass, from its first frame."""
    envs = {
        r: FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=96, renderer=r)
        for r in ("tiny", "tiny-layered")
    }
    try:
        for seed in (5, 6, 3):
            info = envs["tiny"].reset(seed=seed)[1]
            envs["tiny-layered"].reset(seed=seed)
            expert = ScriptedExpert("firm")
            for t in range(60):
                if t % 10 == 0:
                    assert np.array_equal(envs["tiny"].render(), envs["tiny-layered"].render()), (
                        seed,
                        t,
                    )
                action = expert.act(info)
                out = {r: e.step(action) for r, e in envs.items()}
                info = out["tiny"][4]
                if out["tiny"][2] or out["tiny"][3]:
                    break
            assert np.array_equal(envs["tiny"].render(), envs["tiny-layered"].render()), (
                seed,
                "last",
            )
    finally:
        for e in envs.values():
            e.close()
