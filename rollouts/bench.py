"""`physteer bench`: closed-loop throughput per executor, and where a step's time goes.

Two measurements in one run, both through the one closed loop (rollouts.episode):
1. episodes per minute of the demo's closed loop (tiny model, 384², no video) for each
   execution variant, side by side in one run: serial, local processes, Ray, and several
   environments per worker answered in one batched forward; reported as ratios to serial.
   Variants alternate over `rounds` so load that drifts over minutes cancels.
2. the time shares of an episode's steps, from the loop's own timings: rendering, agent (VLM
   forward + expert), SAE/monitor scoring (a SARM scorer in shadow mode), physics (the env
   step) and the rest.
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

#: name → ExperimentConfig fields of each throughput variant.
VARIANTS: dict[str, dict[str, Any]] = {
    "serial": {"executor": "serial", "workers": 1},
    "2 processes": {"executor": "processes", "workers": 2},
    "ray, 2 workers": {"executor": "ray", "workers": 2},
    "4 envs per worker": {"executor": "serial", "workers": 1, "envs_per_worker": 4},
}


def episodes_per_minute(n_episodes: int, model: str = "tiny", **fields: Any) -> float:
    """Wall-clock episodes/min of unsteered VLM episodes through the runner (start-up included)."""
    from rollouts.runner import ExperimentConfig, run_experiment

    with tempfile.TemporaryDirectory() as out:
        cfg = ExperimentConfig(name="bench", out=out, seeds=list(range(n_episodes)), model=model, **fields)
        t0 = time.perf_counter()
        run_experiment(cfg, progress=False, report=False)
        return n_episodes / (time.perf_counter() - t0) * 60


def throughput(n_episodes: int, model: str = "tiny", rounds: int = 1, variants: dict | None = None) -> dict[str, list[float]]:
    """Episodes/min of each variant, measured `rounds` times in alternating order."""
    variants = variants or VARIANTS
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            out[name].append(episodes_per_minute(n_episodes, model, **variants[name]))
    return out


def step_time_shares(n_episodes: int = 3, model: str = "tiny") -> dict[str, float]:
    """Seconds per episode spent on rendering, agent, SAE/monitor scoring, physics and the rest."""
    from agents.vlm_agent import VLMAgent
    from monitors.scorers import make_scorer
    from rollouts.episode import ClosedLoop, EpisodeSpec

    torch.set_num_threads(1)
    agent = VLMAgent(model)
    d = agent.backend.hidden_size
    # Scoring cost only: an SAE scorer of the default size, briefly fitted on random tokens.
    tokens = torch.randn(2048, d, generator=torch.Generator().manual_seed(0))
    scorer = make_scorer("sae", steps=5).fit([tokens])
    scorer.calibrate(scorer.score_many([tokens[:81], tokens[81:162]]), method="sigma", k=2)
    loop = ClosedLoop(agent, scorers={"sae": scorer})
    rows = [loop.run([EpisodeSpec(seed)])[0].row for seed in range(n_episodes)]
    loop.close()
    parts = {"render": "render_s", "agent (VLM + expert)": "agent_s", "sae/monitor": "monitor_s", "physics": "physics_s"}
    shares = {k: float(np.mean([r[col] for r in rows])) for k, col in parts.items()}
    shares["other"] = float(np.mean([r["wall_s"] for r in rows])) - sum(shares.values())
    return shares


def demo_wall_time(runs: str = "runs", name: str = "demo") -> float | None:
    """Wall time (s) of the last `physteer demo` run, if its summary exists."""
    path = Path(runs) / name / "summary.json"
    if not path.exists():
        return None
    return float(json.loads(path.read_text()).get("wall_s", np.nan))
