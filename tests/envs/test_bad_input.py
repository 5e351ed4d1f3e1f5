"""Bad input gets a clear error naming the value and what is allowed."""

import numpy as np
import pytest

from envs import FrankaPickEnv
from envs.expert import HandlingProfile, ScriptedExpert


@pytest.fixture()
def env():
    e = FrankaPickEnv(obs_mode="state")
    e.reset(seed=0)
    yield e
    e.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action(env, bad):
    with pytest.raises(ValueError, match="action .*finite"):
        env.step(np.array([0.0, bad, 0.0, 0.0]))


def test_wrong_action_shape(env):
    with pytest.raises(ValueError, match="4 values"):
        env.step(np.zeros(3))


def test_out_of_range_actions_are_clipped():
    a, b = FrankaPickEnv(obs_mode="state"), FrankaPickEnv(obs_mode="state")
    a.reset(seed=1)
    b.reset(seed=1)
    oa = a.step(np.array([5.0, -7.0, 3.0, 9.0]))[0]
    ob = b.step(np.array([1.0, -1.0, 1.0, 1.0]))[0]
    np.testing.assert_array_equal(oa["state"], ob["state"])


@pytest.mark.parametrize(
    "options, allowed",
    [
        ({"color": "green"}, "red"),
        ({"material": "glass"}, "fragile"),
        ({"shade": "neon"}, "pale"),
        ({"shape": "cone"}, "cube"),
    ],
)
def test_bad_spec(env, options, allowed):
    with pytest.raises(ValueError, match=allowed):
        env.reset(seed=0, options=options)


def test_unknown_reset_option(env):
    with pytest.raises(ValueError, match="allowed"):
        env.reset(seed=0, options={"colour": "red"})


def test_bad_obs_mode():
    with pytest.raises(ValueError, match="depth.*rgb"):
        FrankaPickEnv(obs_mode="depth")


def test_bad_render_mode_and_option():
    with pytest.raises(ValueError, match="rgb_array"):
        FrankaPickEnv(render_mode="video")
    with pytest.raises(ValueError, match="image_sizes"):
        FrankaPickEnv(image_sizes=64)


def test_bad_profile():
    with pytest.raises(ValueError, match="gentle"):
        ScriptedExpert("rough")
    with pytest.raises(ValueError, match="grip"):
        HandlingProfile("x", grip=1.5, speed=0.5, release_height=0.1)


def test_step_before_reset():
    e = FrankaPickEnv(obs_mode="state")
    with pytest.raises(RuntimeError, match="reset"):
        e.step(np.zeros(4))
    e.close()
