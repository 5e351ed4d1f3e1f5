"""The frame cache: a cached frame is the frame that would have been drawn, keys follow what the
frame shows (not where temporary files live), and a bad directory is named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from envs import FrankaPickEnv, frame_cache


def episode_frames(renderer: str, steps: int = 6) -> list[np.ndarray]:
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="rgb", image_size=48, renderer=renderer)
    try:
        obs, _ = env.reset(seed=4, options={"material": "fragile"})
        frames = [obs["image"]]
        for t in range(steps):
            obs, *_ = env.step(np.array([0.3, -0.2, -0.5, 1.0 if t > 3 else -1.0]))
            frames.append(obs["image"])
        return frames
    finally:
        env.close()


@pytest.mark.parametrize("renderer", ["tiny", "tiny-layered"])
def test_cached_frames_are_the_frames_drawn(tmp_path, monkeypatch, renderer) -> None:
    drawn = episode_frames(renderer)
    monkeypatch.setenv(frame_cache.ENV_VAR, str(tmp_path / "cache"))
    first = episode_frames(renderer)  # fills the cache
    cache = frame_cache.active()
    assert cache is not None and cache.hits == 0 and cache.misses == len(drawn)
    cache._memory.clear()  # the second pass reads the files
    again = episode_frames(renderer)
    assert cache.hits == len(drawn)
    for a, b, c in zip(drawn, first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == len(drawn)


KEY_SCRIPT = """
import numpy as np
from envs import FrankaPickEnv, frame_cache
env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=32, renderer="tiny")
env.reset(seed=2)
env.step(np.array([0.2, 0.0, -0.3, -1.0]))
s = env.sim
view, proj = s._matrices(32, 32, env.camera)
print(frame_cache.scene_key(s.client, s.visuals, s.renderer, 32, 32, view, proj, {"lightDirection": (0, 0, 1)}))
"""


def test_keys_follow_the_scene_not_the_process() -> None:
    keys = [
        subprocess.run([sys.executable, "-c", KEY_SCRIPT], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    ]  # fmt: skip
    assert keys[0] == keys[1] and len(keys[0]) == 40  # textures and URDF in other temp folders
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=32, renderer="tiny")
    try:
        env.reset(seed=2)
        s = env.sim
        view, proj = s._matrices(32, 32, env.camera)
        light = {"lightDirection": (0, 0, 1)}

        def key(**changes):
            args = dict(renderer=s.renderer, width=32, height=32, view=view, proj=proj, light=light)
            args.update(changes)
            return frame_cache.scene_key(s.client, s.visuals, **args)

        before = key()
        assert key(light={"lightDirection": (0, 0.1, 1)}) != before
        assert key(renderer="tiny-layered") != before
        env.step(np.array([0.0, 0.0, 0.0, 1.0]))  # the fingers move: a new picture
        moved = key()
        assert moved != before
        s.set_color(env.task.table_id, -1, (0.1, 0.2, 0.3, 1.0))
        assert key() != moved
    finally:
        env.close()


def test_a_cache_path_that_is_a_file_is_refused(tmp_path, capsys) -> None:
    from cli.main import main

    path = tmp_path / "frames"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        frame_cache.FrameCache(path)
    out = tmp_path / "demo"
    assert main(["--frame-cache", str(path), "env-demo", "--out", str(out), "--seeds", "1"]) == 2
    assert "--frame-cache" in capsys.readouterr().err and not out.exists()  # before any work
