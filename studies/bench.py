"""`physteer bench`: closed-loop throughput per executor and per agent, and where a step's time goes.

Two measurements, each side by side in one run, both through the runner and the one closed loop
(rollouts.episode), 384² frames, no video:
1. executors: episodes per minute of the planner's closed loop (tiny VLM) for each execution
   variant: serial, local processes, Ray, and several environments per worker answered in one
   batched forward; reported as ratios to serial.
2. agents: episodes per minute of the planner (`--agent vlm`: VLM decisions, scripted motion)
   beside the VLA (`--agent vla`: its own action tokens move the arm, one forward per chunk)
   with the same executor and workers as `physteer run --agent ... --workers 2`, the same seeds,
   an SAE scorer in shadow mode (it scores every decision, never vetoes); and the share of an
   episode's wall time per component from the episode rows' own timings
   (rollouts.episode.TIMING_COLUMNS): rendering, agent, monitor, physics, the rest.
Variants and agents alternate over `rounds` (reversed every other round) so load that drifts
over minutes cancels. Start-up (process spawn, model load) is inside the wall-clock rate; the
"in loop" rate (workers × 60 / mean episode seconds) leaves it out.
The demo's wall time is read from the last demo run's summary.json when there is one.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

#: name → ExperimentConfig fields of each throughput variant.
VARIANTS: dict[str, dict[str, Any]] = {
    "serial": {"executor": "serial", "workers": 1},
    "2 processes": {"executor": "processes", "workers": 2},
    "ray, 2 workers": {"executor": "ray", "workers": 2},
    "4 envs per worker": {"executor": "serial", "workers": 1, "envs_per_worker": 4},
}
#: agent mode name → its ExperimentConfig `agent`; the first is the baseline of the ratios.
AGENT_MODES: dict[str, str] = {"planner (vlm)": "vlm", "vla": "vla"}
#: component → the episode row's timing column (rollouts.episode.TIMING_COLUMNS).
COMPONENTS: dict[str, str] = {
    "render": "render_s",
    "agent": "agent_s",
    "monitor": "monitor_s",
    "physics": "physics_s",
}
#: the issue's bar: VLA episodes per minute with 2 workers on 2 cores, no video.
VLA_TARGET = 20.0


def run_episodes(n_episodes: int, model: str = "tiny", **fields: Any) -> tuple[float, list[dict]]:
    """Run unsteered episodes (seeds 0..n-1) through the runner.

    Args:
        n_episodes: episodes to run.
        model: the model (ExperimentConfig.model).
        **fields: other ExperimentConfig fields (agent, executor, workers, monitors, ...).

    Returns:
        (wall-clock episodes/min, start-up included; the episode rows).
    """
    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig

    with tempfile.TemporaryDirectory() as out:
        cfg = ExperimentConfig(
            name="bench", out=out, seeds=list(range(n_episodes)), model=model, **fields
        )
        t0 = time.perf_counter()
        run = run_experiment(cfg, progress=False)
        rate = n_episodes / (time.perf_counter() - t0) * 60
        return rate, pq.read_table(run / "episodes.parquet").to_pylist()


def episodes_per_minute(n_episodes: int, model: str = "tiny", **fields: Any) -> float:
    """Wall-clock episodes/min of unsteered episodes through the runner (start-up included)."""
    return run_episodes(n_episodes, model, **fields)[0]


def throughput(
    n_episodes: int, model: str = "tiny", rounds: int = 1, variants: dict | None = None
) -> dict[str, list[float]]:
    """Episodes/min of each executor variant, measured `rounds` times in alternating order."""
    variants = variants or VARIANTS
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            out[name].append(episodes_per_minute(n_episodes, model, **variants[name]))
    return out


def time_shares(rows: list[dict]) -> dict[str, float]:
    """Share of the episodes' summed wall time per component, "other" the rest (sums to 1)."""
    if not rows:
        raise ValueError("time_shares needs at least one episode row")
    wall = float(sum(r["wall_s"] for r in rows))
    shares = {k: float(sum(r[col] for r in rows)) / wall for k, col in COMPONENTS.items()}
    shares["other"] = 1.0 - sum(shares.values())
    return shares


@dataclass
class AgentRun:
    """One agent mode's measurements over every round.

    Attributes:
        agent: ExperimentConfig.agent ("vlm" or "vla").
        workers: worker processes that ran the episodes.
        renderer: ExperimentConfig.renderer the episodes' frames were drawn with.
        rates: wall-clock episodes/min of each round (start-up included).
        rows: the episode rows of every round.
    """

    agent: str
    workers: int
    renderer: str = "tiny-layered"
    rates: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Median wall-clock episodes/min over rounds."""
        return statistics.median(self.rates)

    @property
    def loop_rate(self) -> float:
        """Episodes/min inside the loop, start-up left out: workers × 60 / mean episode seconds."""
        return self.workers * 60.0 / float(np.mean([r["wall_s"] for r in self.rows]))

    @property
    def steps_per_episode(self) -> float:
        """Mean env steps per episode."""
        return float(np.mean([r["steps"] for r in self.rows]))

    @property
    def ms_per_step(self) -> float:
        """Mean wall milliseconds per step inside the loop."""
        return (
            1e3 * sum(r["wall_s"] for r in self.rows) / max(1, sum(r["steps"] for r in self.rows))
        )

    def summary(self) -> dict[str, Any]:
        """The figures as plain JSON-able values."""
        return {
            "agent": self.agent, "workers": self.workers, "renderer": self.renderer, "episodes": len(self.rows),
            "episodes_per_min": self.rate, "episodes_per_min_rounds": self.rates,
            "episodes_per_min_in_loop": self.loop_rate, "steps_per_episode": self.steps_per_episode,
            "ms_per_step": self.ms_per_step, "success_rate": float(np.mean([bool(r["success"]) for r in self.rows])),
            "shares": time_shares(self.rows),
        }  # fmt: skip


def _shadow_scorer(agent: str, model: str, folder: Path, chunk: int | None) -> str:
    """Save an SAE scorer for `agent`'s tap (its layer and width), briefly fitted on random
    tokens: what a monitor's scoring costs, not what it detects. Returns the folder."""
    from monitors.scorers import make_scorer

    if agent == "pi0":
        from agents.pi0_agent import PI0Agent

        probe = PI0Agent(model, chunk=chunk, device="cpu")
    elif agent == "vla":
        from agents.vla_agent import VLAAgent

        probe = VLAAgent("tiny-vla" if model == "tiny" else model, chunk=chunk, device="cpu")
    else:
        from agents.vlm_agent import VLMAgent

        probe = VLMAgent(model, device="cpu")
    layer, d = probe.tap.layer, probe.backend.hidden_size
    probe.close()
    tokens = torch.randn(2048, d, generator=torch.Generator().manual_seed(0))
    scorer = make_scorer("sae", model=model, layer=layer, steps=5).fit([tokens])
    scorer.calibrate(scorer.score_many([tokens[:81], tokens[81:162]]), method="sigma", k=2)
    return str(scorer.save(folder / f"shadow-{agent}"))


def compare_agents(
    n_episodes: int,
    rounds: int = 1,
    workers: int = 2,
    max_steps: int = 200,
    models: dict[str, str] | None = None,
    chunk: int | None = None,
    monitor: bool = True,
    executor: str = "processes",
    renderers: tuple[str, ...] = ("tiny-layered",),
) -> dict[str, AgentRun]:
    """The planner and the VLA through the runner, alternating over rounds (module docstring).

    Args:
        n_episodes: episodes per agent and round (seeds 0..n-1, the same for both).
        rounds: rounds; the agents' order reverses every other round.
        workers: worker processes (the runner's `executor`; 1 runs in this process).
        max_steps: steps before truncation.
        models: agent ("vlm", "vla", "pi0") → model (default "tiny" for the planner and the
            VLA: the embedded models); a "pi0" entry ("tiny" or a folder) adds a π0 row.
        chunk: actions the VLA (and π0) executes per forward (None: its horizon / chunk).
        monitor: score every decision with an SAE scorer in shadow mode.
        executor: the runner's executor ("processes", as `physteer run` uses by default).
        renderers: camera-frame renderers, each run for every agent (several: "<mode>, <renderer>"
            rows, e.g. the one-pass "tiny" beside the default "tiny-layered").

    Returns:
        mode name (AGENT_MODES, with ", <renderer>" when several) → AgentRun.
    """
    from envs.sim import RENDERERS

    bad = [r for r in renderers if r not in RENDERERS]
    if bad or not renderers:
        raise ValueError(f"renderers {list(renderers)}: give some of {list(RENDERERS)}")
    for name, value, low in (
        ("n_episodes", n_episodes, 1),
        ("rounds", rounds, 1),
        ("workers", workers, 1),
        ("max_steps", max_steps, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is not allowed; it must be an int >= {low}")
    models = {"vlm": "tiny", "vla": "tiny", **(models or {})}
    modes = {**AGENT_MODES, **({"π0": "pi0"} if models.get("pi0") else {})}
    runs = {
        name if len(renderers) == 1 else f"{name}, {renderer}": AgentRun(agent, workers, renderer)
        for name, agent in modes.items()
        for renderer in renderers
    }
    with tempfile.TemporaryDirectory() as tmp:
        shadow: dict[str, dict[str, Any]] = {}
        for agent in modes.values():
            scorer = [_shadow_scorer(agent, models[agent], Path(tmp), chunk)] if monitor else []
            shadow[agent] = {"monitors": scorer, "enforce": ["none"] if monitor else None}
        for r in range(rounds):
            for name in list(runs) if r % 2 == 0 else list(reversed(runs)):
                run = runs[name]
                extra = {"chunk": chunk} if run.agent in ("vla", "pi0") else {}
                rate, rows = run_episodes(n_episodes, models[run.agent], agent=run.agent, executor=executor, workers=workers,
                                          max_steps=max_steps, renderer=run.renderer, **shadow[run.agent], **extra)  # fmt: skip
                run.rates.append(rate)
                run.rows.extend(rows)
    return runs


def demo_wall_time(runs: str = "runs", name: str = "demo") -> float | None:
    """Wall time (s) of the last `physteer demo` run, if its summary exists."""
    path = Path(runs) / name / "summary.json"
    if not path.exists():
        return None
    return float(json.loads(path.read_text()).get("wall_s", np.nan))
