"""`physteer bench`: closed-loop throughput of the demo's agent, and where a step's time goes.

Two measurements in one run:
1. episodes per minute: the demo's closed loop (tiny model, 384², no video) run through the
   experiment runner with `workers` processes;
2. the time shares of one episode's steps: rendering, VLM forward, SAE/monitor scoring and
   physics (everything in env.step), measured by timing each call in a single process.
The demo's wall time is read from the last demo run's summary.json when there is one.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def episodes_per_minute(n_episodes: int, workers: int, model: str = "tiny") -> float:
    """Wall-clock episodes/min of unsteered VLM episodes through the runner."""
    from rollouts.runner import ExperimentConfig, run_experiment

    with tempfile.TemporaryDirectory() as out:
        cfg = ExperimentConfig(name="bench", out=out, seeds=list(range(n_episodes)), model=model, workers=workers)
        t0 = time.perf_counter()
        run_experiment(cfg, progress=False)
        return n_episodes / (time.perf_counter() - t0) * 60


def step_time_shares(n_episodes: int = 3, model: str = "tiny") -> dict[str, float]:
    """Seconds per episode spent on rendering, VLM, SAE/monitor scoring and physics."""
    from agents.vlm_agent import VLMAgent
    from envs import FrankaPickEnv
    from sae import MatryoshkaSAE, default_config

    torch.set_num_threads(1)
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state")
    agent = VLMAgent(model)
    sae = MatryoshkaSAE(default_config(agent.backend.hidden_size)).eval()  # scoring cost only
    timers = {"render": 0.0, "vlm": 0.0, "sae/monitor": 0.0, "physics": 0.0, "other": 0.0}
    real_prob_yes = agent.backend.prob_yes

    def timed_prob_yes(*args: Any, **kwargs: Any):
        t = time.perf_counter()
        out = real_prob_yes(*args, **kwargs)
        timers["vlm"] += time.perf_counter() - t
        return out

    agent.backend.prob_yes = timed_prob_yes
    t_total = time.perf_counter()
    for seed in range(n_episodes):
        obs, info = env.reset(seed=seed)
        agent.reset(seed)
        done = False
        while not done:
            if info["step"] % agent.decide_every == 0:
                t = time.perf_counter()
                obs["image"] = env.render()
                timers["render"] += time.perf_counter() - t
            action = agent.act(obs, info)
            if agent.last_decision and agent.last_decision.get("decided"):
                t = time.perf_counter()
                with torch.no_grad():
                    float(sae.reconstruction_error(agent.tap.latest[:-1]).mean())
                timers["sae/monitor"] += time.perf_counter() - t
            t = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            timers["physics"] += time.perf_counter() - t
            done = terminated or truncated
    total = time.perf_counter() - t_total
    timers["other"] = total - sum(v for k, v in timers.items() if k != "other")
    env.close()
    return {k: v / n_episodes for k, v in timers.items()}


def demo_wall_time(runs: str = "runs", name: str = "demo") -> float | None:
    """Wall time (s) of the last `physteer demo` run, if its summary exists."""
    path = Path(runs) / name / "summary.json"
    if not path.exists():
        return None
    return float(json.loads(path.read_text()).get("wall_s", np.nan))
