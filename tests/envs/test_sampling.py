"""Balanced sampling: color independent of material, shade independent of material."""

from collections import Counter

import numpy as np

from envs import FrankaPickEnv


def specs(env, n, seeded):
    out = []
    if not seeded:
        env.reset(seed=12345)
    for i in range(n):
        _, info = env.reset(seed=1000 + i) if seeded else env.reset()
        out.append(info["object"])
    return out


def check_balance(objects):
    n = len(objects)
    combos = Counter((o["color"], o["material"]) for o in objects)
    assert len(combos) == 4
    for count in combos.values():
        assert abs(count - n / 4) <= 0.2 * n / 4, combos
    shade = Counter((o["shade"], o["material"]) for o in objects)
    for count in shade.values():
        assert abs(count - n / 4) <= 0.2 * n / 4, shade
    shapes = Counter((o["shape"], o["material"]) for o in objects)
    for count in shapes.values():
        assert abs(count - n / 4) <= 0.2 * n / 4, shapes


def test_balanced_over_400_seeded_resets():
    env = FrankaPickEnv(obs_mode="state")
    check_balance(specs(env, 400, seeded=True))
    env.close()


def test_balanced_over_400_unseeded_resets():
    env = FrankaPickEnv(obs_mode="state")
    check_balance(specs(env, 400, seeded=False))
    env.close()


def test_forced_spec():
    env = FrankaPickEnv(obs_mode="state")
    for seed in range(6):
        _, info = env.reset(
            seed=seed,
            options={"color": "blue", "material": "fragile", "shade": "pale", "shape": "cylinder"},
        )
        assert info["object"] == {
            "color": "blue",
            "material": "fragile",
            "shade": "pale",
            "shape": "cylinder",
        }
    env.close()


def test_material_is_not_in_mean_color():
    """Both materials have the same mean color (no lightness shortcut); only fragile is patterned."""
    from envs.objects import ObjectSpec, texture_array

    for color in ("red", "blue"):
        for shade in ("pale", "deep"):
            for shape in ("cube", "cylinder"):
                f = texture_array(ObjectSpec(color, "fragile", shade, shape)).astype(float)
                r = texture_array(ObjectSpec(color, "rigid", shade, shape)).astype(float)
                np.testing.assert_allclose(f.mean((0, 1)), r.mean((0, 1)), atol=1e-6)
                assert f.std((0, 1)).min() > 50 and r.std((0, 1)).max() == 0
