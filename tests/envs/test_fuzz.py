"""2,000 steps of extreme random actions: no exception, no NaN, nothing below the table."""

import numpy as np

from envs import FrankaPickEnv


def test_extreme_random_actions():
    env = FrankaPickEnv(obs_mode="state")
    rng = np.random.default_rng(0)
    steps, seed = 0, 0
    obs, info = env.reset(seed=seed)
    while steps < 2000:
        action = rng.choice([-1e3, -1.0, 0.0, 1.0, 1e3], size=4) * rng.uniform(0.5, 1.5, 4)
        obs, reward, term, trunc, info = env.step(action)
        steps += 1
        assert np.all(np.isfinite(obs["state"])) and np.isfinite(reward)
        assert info["ee_pos"][2] > 0.0
        assert info["object_pos"][2] > -0.005, info["object_pos"]
        if term or trunc or steps % 150 == 0:
            seed += 1
            obs, info = env.reset(seed=seed)
    env.close()
