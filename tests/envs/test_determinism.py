"""Same seed and actions ⇒ identical observations and infos, whatever ran before."""

import numpy as np

import envs


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    frames, states, infos = [obs["image"]], [obs["state"]], [info]
    for a in actions:
        obs, _, term, trunc, info = env.step(a)
        frames.append(obs["image"])
        states.append(obs["state"])
        infos.append(info)
        if term or trunc:
            break
    return frames, states, infos


def same_info(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


def test_same_seed_same_episode_even_after_other_episodes():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (25, 4))
    env_a = envs.FrankaPickEnv(image_size=64)
    env_b = envs.FrankaPickEnv(image_size=64)
    rollout(env_b, 99, rng.uniform(-1, 1, (10, 4)))  # history must not leak into the next episode
    fa, sa, ia = rollout(env_a, 5, actions)
    fb, sb, ib = rollout(env_b, 5, actions)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(sa, sb, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(ia, ib, strict=True):
        same_info(x, y)


def test_different_seeds_different_scenes():
    env = envs.FrankaPickEnv(image_size=64)
    images = [env.reset(seed=s)[0]["image"] for s in range(4)]
    positions = [env.reset(seed=s)[1]["object_pos"] for s in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(images[i], images[j])
            assert not np.allclose(positions[i], positions[j])
