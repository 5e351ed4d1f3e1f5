"""Distribution shifts (envs.shifts): strength 0 is the training scene bit for bit; each kind at
full strength changes what it says it changes, and only that; a shifted episode is repeatable
from (seed, shift); bad shifts are refused before the env changes."""

from __future__ import annotations

import numpy as np
import pytest

from envs._pybullet import p
from envs.franka_pick import FrankaPickEnv
from envs.objects import OBJECT_MASS, OBJECT_SIZE
from envs.shifts import SHIFT_CHANGES, SHIFT_KINDS, Shift, parse_shift
from envs.task import Layout


@pytest.fixture(scope="module")
def env():
    e = FrankaPickEnv(render_mode="rgb_array", image_size=96)
    yield e
    e.close()


def _reset(env, seed, shift=None):
    obs, info = env.reset(seed=seed, options=None if shift is None else {"shift": shift})
    return obs, info


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_strength_zero_is_the_training_scene(env, kind):
    base, info = _reset(env, 11)
    zero, info0 = _reset(env, 11, f"{kind}:0")
    assert np.array_equal(base["image"], zero["image"]) and np.array_equal(
        base["state"], zero["state"]
    )
    assert info["shift"] is None and info0["shift"] is None


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_full_strength_changes_what_it_says(env, kind):
    base, _ = _reset(env, 12)
    base_bodies = p.getNumBodies(physicsClientId=env.sim.client)
    shifted, info = _reset(env, 12, f"{kind}:1")
    assert info["shift"] == f"{kind}:1"
    pixels = not np.array_equal(base["image"], shifted["image"])
    assert pixels == (SHIFT_CHANGES[kind] != "physics"), kind
    task = env.task
    mass = p.getDynamicsInfo(task.object_id, -1, physicsClientId=env.sim.client)[0]
    assert mass == pytest.approx(OBJECT_MASS * (10.0 if kind == "mass" else 1.0))
    assert task.object_size == pytest.approx(OBJECT_SIZE * (1.25 if kind == "size" else 1.0))
    x = task.object_position()[0]
    lay = Layout()
    inside = abs(x - lay.object_center[0]) <= lay.object_range[0] + 1e-6
    assert inside == (kind != "position"), (kind, x)
    extra = p.getNumBodies(physicsClientId=env.sim.client) - base_bodies
    assert extra == (3 if kind == "distractors" else 0)


def test_a_shifted_episode_repeats_from_its_seed(env):
    a, _ = _reset(env, 13, "distractors:1")
    for _ in range(3):
        a, *_ = env.step(np.array([0.3, -0.2, -0.5, 0.0]))
    b, _ = _reset(env, 13, "distractors:1")
    for _ in range(3):
        b, *_ = env.step(np.array([0.3, -0.2, -0.5, 0.0]))
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["state"], b["state"])


def test_a_heavy_object_changes_the_physics_not_the_first_frame(env):
    light, _ = _reset(env, 14)
    heavy, _ = _reset(env, 14, "mass:1")
    assert np.array_equal(light["image"], heavy["image"])


@pytest.mark.parametrize("text, named", [
    ("gravity:1", "shift kind 'gravity'"), ("mass:2", "shift strength 2.0"), ("mass", "shift 'mass'"),
    ("mass:x", "shift 'mass:x'"), ("mass:-0.1", "shift strength -0.1"),
])  # fmt: skip
def test_bad_shifts_are_refused_before_the_env_changes(env, text, named):
    before, _ = _reset(env, 15)
    with pytest.raises(ValueError, match=named):
        env.reset(seed=16, options={"shift": text})
    assert np.array_equal(env.render(), before["image"])  # the episode in progress is untouched


def test_parse_shift_round_trips():
    assert (
        parse_shift("camera:0.5") == Shift("camera", 0.5)
        and parse_shift(Shift("mass", 1)).name == "mass:1"
    )
    assert parse_shift(None).strength == 0
