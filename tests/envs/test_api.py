"""The env satisfies Gymnasium's and Stable-Baselines3's checkers and registers its id."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs


@pytest.mark.parametrize("obs_mode", ["state", "rgb+state"])
def test_gymnasium_checker(obs_mode):
    env = envs.FrankaPickEnv(obs_mode=obs_mode, image_size=64)
    gym_check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("obs_mode", ["state", "rgb+state"])
def test_sb3_checker(obs_mode):
    env = envs.FrankaPickEnv(obs_mode=obs_mode, image_size=64)
    sb3_check_env(env, warn=False)
    env.close()


def test_registered_without_import():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('envs:physteer/FrankaPick-v0', obs_mode='state')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(obs['state'].shape, info['instruction'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "(17,)" in out.stdout and "Put the" in out.stdout


def test_make_after_import_and_render():
    env = gym.make(envs.ENV_ID, render_mode="rgb_array", image_size=64, obs_mode="rgb")
    obs, _ = env.reset(seed=1)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, obs["image"])
    env.close()


def test_instruction_names_color_never_material():
    env = envs.FrankaPickEnv(obs_mode="state")
    for seed in range(16):
        _, info = env.reset(seed=seed)
        text = info["instruction"].lower()
        assert info["object"]["color"] in text
        assert "fragile" not in text and "rigid" not in text
    env.close()


def test_info_keys():
    env = envs.FrankaPickEnv(obs_mode="state")
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(4))
    for key in (
        "holding",
        "broken",
        "broken_cause",
        "peak_force",
        "impact_speed",
        "object",
        "success",
        "instruction",
    ):
        assert key in info
    env.close()
