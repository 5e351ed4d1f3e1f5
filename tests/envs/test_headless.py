"""Headless machines: gymnasium's check_env passes, and render_mode="human" raises a clear error
naming the missing display instead of PyBullet ending the interpreter. Each case runs in a
subprocess (a regression would kill the test process itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import envs
from envs.sim import NoDisplayError

env = gym.make("physteer/FrankaPick-v0")
print("render modes", env.unwrapped.metadata["render_modes"])
check_env(env.unwrapped)
print("check_env passed")
for make in (lambda: envs.FrankaPickEnv(render_mode="human"),
             lambda: gym.make("physteer/FrankaPick-v0", render_mode="human")):
    try:
        make()
    except NoDisplayError as exc:
        assert isinstance(exc, RuntimeError)
        print("human:", exc)
    else:
        raise SystemExit("render_mode='human' did not raise")
print("interpreter alive")
"""


def _run(display: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display is not None:
        env["DISPLAY"] = display
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 display handling is Linux's")
def test_check_env_passes_and_human_mode_raises_without_display() -> None:
    proc = _run(None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "render modes ['rgb_array']" in proc.stdout
    assert "check_env passed" in proc.stdout and "interpreter alive" in proc.stdout
    assert "DISPLAY is not set" in proc.stdout and "rgb_array" in proc.stdout.split("human:")[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 display handling is Linux's")
def test_unreachable_x_server_raises_instead_of_exiting() -> None:
    """DISPLAY names a server that is not there: the env says so; check_env then fails with an
    exception (it makes the env in "human" mode), never by ending the interpreter."""
    script_display = ":87"  # no X server listens there on a test machine
    if Path("/tmp/.X11-unix/X87").exists():
        pytest.skip("an X server runs on :87 here")
    env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
    env.update(DISPLAY=script_display, PYTHONPATH=str(ROOT))
    code = """
import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import envs
from envs.sim import NoDisplayError
try:
    check_env(gym.make("physteer/FrankaPick-v0").unwrapped)
except NoDisplayError as exc:
    print("check_env raised:", exc)
print("interpreter alive")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cannot connect to the X server at DISPLAY=':87'" in proc.stdout
    assert "interpreter alive" in proc.stdout
