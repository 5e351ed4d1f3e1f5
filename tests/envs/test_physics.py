"""Handling matters physically: gentle keeps fragile objects intact, firm breaks them.

≥ 20 seeds per color × material combination and profile (state observations, no rendering).
"""

import numpy as np
import pytest

from envs import COLORS, MATERIALS, FrankaPickEnv
from envs.expert import ScriptedExpert

SEEDS = range(20)


def run(env, seed, color, material, profile):
    expert = ScriptedExpert(profile)
    _, info = env.reset(seed=seed, options={"color": color, "material": material})
    done = False
    while not done:
        _, _, term, trunc, info = env.step(expert.act(info))
        done = term or trunc
    return info


@pytest.fixture(scope="module")
def outcomes():
    env = FrankaPickEnv(obs_mode="state")
    out = {}
    for color in COLORS:
        for material in MATERIALS:
            for profile in ("gentle", "firm"):
                out[color, material, profile] = [
                    run(env, s, color, material, profile) for s in SEEDS
                ]
    env.close()
    return out


@pytest.mark.parametrize("color", COLORS)
def test_gentle_keeps_fragile_intact(outcomes, color):
    infos = outcomes[color, "fragile", "gentle"]
    rate = np.mean([i["success"] and not i["broken"] for i in infos])
    assert rate >= 0.95, rate


@pytest.mark.parametrize("color", COLORS)
def test_firm_breaks_fragile(outcomes, color):
    infos = outcomes[color, "fragile", "firm"]
    assert np.mean([i["broken"] for i in infos]) >= 0.90
    for i in infos:
        if i["broken"]:
            assert i["broken_cause"] in ("grip", "impact") and i["broken_force"] > 15.0


@pytest.mark.parametrize("color", COLORS)
def test_firm_rigid_intact_and_succeeds(outcomes, color):
    infos = outcomes[color, "rigid", "firm"]
    assert np.mean([i["success"] and not i["broken"] for i in infos]) >= 0.95
    assert np.mean([i["peak_force"] for i in infos]) > 15.0  # same squeeze that breaks glass


@pytest.mark.parametrize("color", COLORS)
def test_gentle_rigid_succeeds(outcomes, color):
    infos = outcomes[color, "rigid", "gentle"]
    assert np.mean([i["success"] for i in infos]) >= 0.95


def test_firm_is_faster(outcomes):
    gentle = np.mean([i["step"] for i in outcomes["red", "rigid", "gentle"]])
    firm = np.mean([i["step"] for i in outcomes["red", "rigid", "firm"]])
    assert firm < gentle


def test_high_release_breaks_fragile_by_impact():
    from envs.expert import HandlingProfile

    env = FrankaPickEnv(obs_mode="state")
    drop = HandlingProfile("drop", grip=0.15, speed=0.5, release_height=0.3)
    expert = ScriptedExpert(drop)
    _, info = env.reset(seed=2, options={"material": "fragile"})
    done = False
    while not done:
        _, _, term, trunc, info = env.step(expert.act(info))
        done = term or trunc
    assert info["broken"] and info["broken_cause"] == "impact", info
    assert info["impact_speed"] > 1.0
    env.close()
