"""The EGL renderer option: chosen by EnvConfig.renderer, same physics, a clear error where it
cannot load. EGL loads on a CPU machine too (Mesa's llvmpipe), so this runs in CI; where the
plugin cannot load at all the EGL cases are skipped and the error case still runs."""

from __future__ import annotations

import pkgutil

import numpy as np
import pytest

import envs.egl as egl_module
from envs import EnvConfig, FrankaPickEnv
from envs.expert import ScriptedExpert
from envs.sim import RendererUnavailableError, Sim


def egl_loads() -> bool:
    s = Sim(renderer="auto")
    try:
        return s.renderer == "egl"
    finally:
        s.close()


needs_egl = pytest.mark.skipif(
    not egl_loads(), reason="PyBullet's EGL plugin does not load on this machine"
)


def test_unknown_renderer_is_named_before_anything_starts() -> None:
    with pytest.raises(
        ValueError, match=r"renderer 'opengl' is not allowed.*'tiny', 'tiny-layered', 'egl', 'auto'"
    ):
        EnvConfig(renderer="opengl")
    with pytest.raises(ValueError, match="renderer 'opengl'"):
        FrankaPickEnv(renderer="opengl")


def test_egl_that_cannot_load_says_why_and_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egl_module.pkgutil, "get_loader", lambda name: None)
    with pytest.raises(
        RendererUnavailableError,
        match=r"renderer 'egl' cannot be used here: pybullet has no eglRenderer.*'tiny'",
    ):
        Sim(renderer="egl")
    s = Sim(renderer="auto")
    assert s.renderer == "tiny-layered"  # TinyRenderer frames, drawn in layers
    s.close()
    assert pkgutil.get_loader("eglRenderer") is None  # the patch is what made it fail


@needs_egl
def test_egl_frames_differ_but_physics_is_the_same() -> None:
    pair = {
        r: FrankaPickEnv(render_mode="rgb_array", image_size=64, renderer=r)
        for r in ("tiny", "egl")
    }
    try:
        assert pair["egl"].sim.renderer == "egl" and pair["tiny"].sim.renderer == "tiny"
        obs = {r: env.reset(seed=3)[0] for r, env in pair.items()}
        info = pair["tiny"].unwrapped._info(False)
        expert = ScriptedExpert("gentle")
        for _ in range(25):
            action = expert.act(info)
            out = {r: env.step(action) for r, env in pair.items()}
            info = out["tiny"][4]
            obs = {r: o[0] for r, o in out.items()}
        np.testing.assert_array_equal(obs["tiny"]["state"], obs["egl"]["state"])
        frames = {r: o["image"] for r, o in obs.items()}
        assert frames["egl"].shape == (64, 64, 3) and frames["egl"].dtype == np.uint8
        assert frames["egl"].std() > 5  # a scene, not a blank buffer
        assert (
            np.abs(frames["egl"].astype(int) - frames["tiny"]).mean() > 1
        )  # really another renderer
        seg = pair["egl"].sim.render_segmentation(32, 32, pair["egl"].config.camera)
        assert len(np.unique(seg)) > 2
    finally:
        for env in pair.values():
            env.close()


@needs_egl
def test_a_run_renders_with_egl_and_records_it(tmp_path) -> None:
    import json

    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig

    cfg = ExperimentConfig(agent="scripted", executor="serial", seeds=[0], max_steps=8, image_size=64,
                           renderer="egl", holding=False, out=str(tmp_path), name="egl")  # fmt: skip
    run = run_experiment(cfg, progress=False)
    assert json.loads((run / "config.json").read_text())["renderer"] == "egl"
    assert (run / "episodes.parquet").is_file()


@needs_egl
def test_the_renderer_benchmark_prints_speed_and_decision_agreement(capsys) -> None:
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "renderers.py"
    argv = sys.argv
    sys.argv = [str(script), "--frames", "4", "--rounds", "1", "--seconds", "0.2", "--size", "64"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "4 paired frames" in out and "frames/s" in out and "same decision" in out, out


@needs_egl
def test_egl_objects_wear_their_own_texture_after_a_reset() -> None:
    """The EGL plugin keeps textures across resetSimulation while ids restart; without a fresh
    client per world the second episode's blue object showed the first one's red stripes."""
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=96, renderer="egl")
    try:
        for color in ("red", "blue", "red"):
            env.reset(seed=0, options={"color": color, "material": "fragile"})
            frame = env.render().astype(int)
            mask = env.sim.render_segmentation(96, 96, env.config.camera) == env.task.object_id
            assert mask.sum() > 20
            red_minus_blue = (frame[..., 0] - frame[..., 2])[mask].mean()
            assert (red_minus_blue > 0) == (color == "red"), (color, red_minus_blue)
    finally:
        env.close()


@needs_egl
def test_one_egl_client_serves_every_episode_and_draws_what_a_fresh_one_draws() -> None:
    """The render client (and its plugin) lives as long as the env; each episode's frame equals
    the first frame of a fresh env for the same episode but for seams where faces coincide.
    (The plugin is loaded in one client at a time: two at once end the process.)"""
    kwargs = dict(render_mode="rgb_array", obs_mode="state", image_size=64, renderer="egl")
    # A cube, a cylinder, a recoloured table, then the first scene again.
    episodes = [(1, None), (3, None), (2, "table:1"), (1, None)]
    env = FrankaPickEnv(**kwargs)
    frames = []
    try:
        client = env.sim._egl.client
        for seed, shift in episodes:
            env.reset(seed=seed, options={"shift": shift} if shift else None)
            frames.append(env.render().astype(int))
        assert env.sim._egl.client == client
    finally:
        env.close()
    for (seed, shift), frame in zip(episodes, frames, strict=True):
        fresh = FrankaPickEnv(**kwargs)
        fresh.reset(seed=seed, options={"shift": shift} if shift else None)
        reference = fresh.render().astype(int)
        fresh.close()
        differing = (np.abs(frame - reference).max(-1) > 0).mean()
        assert differing < 0.03, (seed, shift, differing)
