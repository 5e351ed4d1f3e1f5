"""The render option `object_pattern="plain"` removes the material cue from the frame, and only
from the frame: fragile and rigid objects of a color render identically, physics is unchanged."""

import numpy as np
import pytest

from envs import COLORS, SHADES, SHAPES, EnvConfig, FrankaPickEnv, ObjectSpec
from envs.expert import ScriptedExpert
from envs.objects import PATTERNS, texture_array, texture_path

SIZE = 128


@pytest.fixture(scope="module")
def frames():
    """(pattern, shape, material) → the first frame of seed 3 (red, pale)."""
    out = {}
    for pattern in PATTERNS:
        env = FrankaPickEnv(
            render_mode="rgb_array", obs_mode="rgb", image_size=SIZE, object_pattern=pattern
        )
        for shape in SHAPES:
            for material in ("fragile", "rigid"):
                options = {"color": "red", "shade": "pale", "shape": shape, "material": material}
                obs, info = env.reset(seed=3, options=options)
                assert info["object"]["material"] == material  # the object is what was asked
                out[pattern, shape, material] = obs["image"]
        env.close()
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_plain_renders_fragile_and_rigid_identically(frames, shape):
    fragile, rigid = frames["plain", shape, "fragile"], frames["plain", shape, "rigid"]
    assert np.array_equal(fragile, rigid)


@pytest.mark.parametrize("shape", SHAPES)
def test_material_pattern_shows_the_material(frames, shape):
    diff = np.abs(
        frames["material", shape, "fragile"].astype(int)
        - frames["material", shape, "rigid"].astype(int)
    )
    assert (diff.max(axis=2) > 30).sum() >= 20  # the stripes: many pixels, strongly


@pytest.mark.parametrize("shape", SHAPES)
def test_plain_is_how_rigid_objects_always_looked(frames, shape):
    """Plain draws every object the way rigid ones are drawn by default: color and shade kept."""
    assert np.array_equal(frames["plain", shape, "rigid"], frames["material", shape, "rigid"])


def test_textures_identical_across_materials_only_when_plain():
    for color in COLORS:
        for shade in SHADES:
            for shape in SHAPES:
                fragile, rigid = (
                    ObjectSpec(color, "fragile", shade, shape),
                    ObjectSpec(color, "rigid", shade, shape),
                )
                assert np.array_equal(
                    texture_array(fragile, "plain"), texture_array(rigid, "plain")
                )
                assert texture_path(fragile, "plain") == texture_path(rigid, "plain")
                assert not np.array_equal(texture_array(fragile), texture_array(rigid))
                assert texture_path(fragile) != texture_path(rigid)
    red, blue = (
        ObjectSpec("red", "fragile", "pale", "cube"),
        ObjectSpec("blue", "fragile", "pale", "cube"),
    )
    assert not np.array_equal(
        texture_array(red, "plain"), texture_array(blue, "plain")
    )  # color kept


def _firm_episode(pattern: str) -> list[dict]:
    env = FrankaPickEnv(obs_mode="state", object_pattern=pattern)
    expert = ScriptedExpert("firm")
    _, info = env.reset(seed=0, options={"color": "blue", "material": "fragile"})
    infos, done = [info], False
    while not done:
        _, _, term, trunc, info = env.step(expert.act(info))
        infos.append(info)
        done = term or trunc
    env.close()
    return infos


def test_physics_unchanged_firm_still_breaks_fragile_when_plain():
    plain, material = _firm_episode("plain"), _firm_episode("material")
    assert plain[-1]["broken"] and plain[-1]["broken_force"] > 15.0
    assert len(plain) == len(material)
    for a, b in zip(plain, material, strict=True):  # step by step, bit for bit
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("bad", ["stripes", "", None, "Plain"])
def test_bad_pattern_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match=r"object_pattern .* is not allowed.*'material', 'plain'"):
        EnvConfig(object_pattern=bad)
    with pytest.raises(ValueError, match="object_pattern"):
        FrankaPickEnv(obs_mode="state", object_pattern=bad)
    with pytest.raises(ValueError, match="object_pattern"):
        texture_array(ObjectSpec("red", "rigid", "pale", "cube"), bad)
