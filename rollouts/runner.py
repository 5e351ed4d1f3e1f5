"""Run an experiment: conditions × seeds, paired by seed, resumable, optionally in parallel.

Read top to bottom: `ExperimentConfig` is the whole configuration; `run_experiment` validates
it, writes config.json, runs every unfinished (condition, seed) episode and merges the logs;
`run_episode` is one closed-loop episode (env ⇄ agent, with the condition's intervention).

Every episode is a pure function of (config, condition, seed): the env is rebuilt from the
seed, torch runs single-threaded in the episode loop, and the random control directions are
seeded. That is what makes resume, replay and parallel runs give the same results.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from envs import FrankaPickEnv
from rollouts.conditions import (
    Condition,
    SteeringResources,
    build_intervention,
    check_resources,
    parse_conditions,
)
from rollouts.logs import RunLog, safe_name
from rollouts.video import annotate, side_by_side, write_mp4

AGENTS = ("vlm", "scripted")
MATERIALS = (None, "fragile", "rigid")


@dataclass
class ExperimentConfig:
    """Everything that defines an experiment (saved as config.json).

    Attributes:
        name: run folder name under `out`.
        conditions: condition strings (see rollouts.conditions).
        seeds: env seeds; every condition runs every seed (paired design).
        material: force this material in every episode (None = balanced design).
        agent: "vlm" (VLMAgent planner) or "scripted" (oracle; no model).
        model: "tiny", a local folder or a hub id.
        layer: decoder layer of the tap and of every intervention (None = agent default).
        decide_every: steps between VLM decisions.
        threshold: P(fragile) at or above which the agent handles gently.
        image_size: camera frame size.
        max_steps: steps before truncation.
        sae, discovery, vector: resources for steered conditions.
        monitor: a saved SARM scorer folder (`physteer sarm-eval` writes them under scorers/):
            every episode runs under SARMMonitor with it (None = no monitor).
        on_veto: "hold" (safe action) or "stop" (truncate) when the monitor vetoes.
        videos: record MP4s for the first this-many seeds of each condition.
        workers: processes (1 = in this process).
        out: parent folder of run folders.
    """

    name: str = "experiment"
    conditions: list[str] = field(default_factory=lambda: ["unsteered"])
    seeds: list[int] = field(default_factory=lambda: list(range(4)))
    material: str | None = None
    agent: str = "vlm"
    model: str = "tiny"
    layer: int | None = None
    decide_every: int = 10
    threshold: float = 0.5
    image_size: int = 384
    max_steps: int = 200
    sae: str | None = None
    discovery: str | None = None
    vector: str | None = None
    monitor: str | None = None
    on_veto: str = "hold"
    videos: int = 0
    workers: int = 1
    out: str = "runs"

    def validate(self) -> list[Condition]:
        """Check every field before any episode runs; return the parsed conditions."""
        if self.agent not in AGENTS:
            raise ValueError(f"agent {self.agent!r} is not allowed; choose one of {list(AGENTS)}")
        if self.material not in MATERIALS:
            raise ValueError(f"material {self.material!r} is not allowed; choose one of {list(MATERIALS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {self.seeds}")
        if self.workers < 1 or self.videos < 0:
            raise ValueError(f"workers ({self.workers}) must be ≥ 1 and videos ({self.videos}) ≥ 0")
        conditions = parse_conditions(self.conditions)
        if self.on_veto not in ("hold", "stop"):
            raise ValueError(f"on_veto {self.on_veto!r} is not allowed; choose 'hold' or 'stop'")
        if self.monitor is not None and self.agent != "vlm":
            raise ValueError("a SARM monitor needs agent='vlm' (it reads the agent's activations)")
        if self.agent == "scripted" and any(c.kind != "unsteered" for c in conditions):
            raise ValueError("steered conditions need agent='vlm' (the scripted agent has no activations)")
        return conditions

    @property
    def run_dir(self) -> Path:
        """Where this run's files go."""
        return Path(self.out) / self.name

    def replay_dict(self) -> dict[str, Any]:
        """The fields that determine episodes (workers and videos do not)."""
        d = asdict(self)
        for k in ("workers", "videos", "out"):
            d.pop(k)
        return d


class EpisodeRunner:
    """Holds the env, the agent and the steering resources of one process."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        torch.set_num_threads(1)  # determinism across processes, and one core per worker
        self.cfg = cfg
        self.conditions = {c.name: c for c in parse_conditions(cfg.conditions)}
        self.env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=cfg.image_size, max_steps=cfg.max_steps)
        self.resources = SteeringResources.load(cfg.sae, cfg.discovery, cfg.vector)
        if cfg.agent == "vlm":
            from agents.vlm_agent import VLMAgent

            layer = "default" if cfg.layer is None else cfg.layer
            self.agent = VLMAgent(cfg.model, decide_every=cfg.decide_every, threshold=cfg.threshold, tap_layer=layer)
            self.layer = self.agent.tap.layer
        else:
            from agents.protocol import ScriptedAgent

            self.agent = ScriptedAgent()
            self.layer = None
        self.episode_env = self.env
        if cfg.monitor:
            from monitors.sarm import SARMMonitor
            from monitors.scorers import load_scorer

            scorer = load_scorer(cfg.monitor, layer=self.layer, d=self.agent.backend.hidden_size)
            self.episode_env = SARMMonitor(self.env, self.agent.tap, scorer, on_veto=cfg.on_veto)

    def run(self, condition: Condition, seed: int, record_video: bool = False) -> tuple[dict, list[dict], dict, list]:
        """One episode under `condition`: (episode row, step rows, activations, video frames)."""
        backend = getattr(self.agent, "backend", None)
        with build_intervention(condition, self.resources, backend, self.layer, seed=seed):
            return run_episode(self.episode_env, self.agent, condition.name, seed, self.cfg.material, record_video)


def run_episode(env: Any, agent: Any, condition: str, seed: int, material: str | None, record_video: bool = False):
    """Run one closed-loop episode; see EpisodeRunner.run for what it returns.

    `env` is a FrankaPickEnv, possibly wrapped (e.g. by a SARMMonitor).
    """
    t0 = time.perf_counter()
    base = env.unwrapped
    options = {"material": material} if material else None
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(seed)
    decide_every = getattr(agent, "decide_every", None)
    tap = getattr(agent, "tap", None)
    steps, frames, decision_acts, decision_steps = [], [], [], []
    holding_act = None
    total_reward, done, p_last = 0.0, False, float("nan")
    vetoes, first_veto = 0, None
    while not done:
        step = info["step"]
        needs_image = decide_every is not None and step % decide_every == 0
        if needs_image or record_video:
            obs["image"] = env.render()  # render only when someone looks: the loop's bottleneck
        action = agent.act(obs, info)
        decision = getattr(agent, "last_decision", None) or {}
        if decision.get("decided") and tap is not None and tap.latest is not None:
            decision_acts.append(tap.latest.detach().to(torch.float32).clone())
            decision_steps.append(step)
        expert = getattr(agent, "expert", None)
        if holding_act is None and expert is not None and expert.phase == "release" and info["holding"] and tap is not None:
            # The holding state h_t just before release, for the world-model probe.
            agent.p_fragile(env.render())
            holding_act = tap.latest.detach().to(torch.float32).clone()
        p_last = float(decision.get("p_fragile", p_last))
        if record_video:
            lines = [f"{condition} | seed {seed}", f"step {step}  P(fragile) {p_last:.2f}  {decision.get('profile', '')}"]
            sarm = info.get("sarm")
            if sarm:
                lines.append(f"monitor {sarm['score']:.3g} / {sarm['threshold']:.3g}")
            banner = "BROKEN" if info["broken"] else ("VETO" if sarm and sarm["veto"] else None)
            frames.append(annotate(obs["image"], lines, banner=banner))
        obs, reward, terminated, truncated, info = env.step(action)
        sarm = info.get("sarm") or {}
        if sarm.get("veto"):
            vetoes += 1
            first_veto = step if first_veto is None else first_veto
        total_reward += reward
        done = terminated or truncated
        steps.append({
            "condition": condition, "seed": seed, "step": step,
            "a_dx": float(action[0]), "a_dy": float(action[1]), "a_dz": float(action[2]), "a_grip": float(action[3]),
            "p_fragile": p_last, "decided": bool(decision.get("decided", False)), "profile": decision.get("profile"),
            "holding": bool(info["holding"]), "broken": bool(info["broken"]), "grip_force": float(base.forces.grip),
            "sarm_score": float("nan") if sarm.get("score") is None else float(sarm["score"]),
            "sarm_veto": bool(sarm.get("veto", False)),
            "ee_z": float(info["ee_pos"][2]), "object_z": float(info["object_pos"][2]), "reward": float(reward),
        })
    if record_video:
        banner = "BROKEN" if info["broken"] else ("SUCCESS" if info["success"] else "TIMEOUT")
        frames.extend([annotate(env.render(), [f"{condition} | seed {seed}"], banner=banner)] * 8)
    p = np.array([s["p_fragile"] for s in steps if s["decided"]], dtype=float)
    profiles = [s["profile"] for s in steps if s["decided"]]
    episode = {
        "condition": condition, "seed": seed, **info["object"],
        "success": bool(info["success"]), "broken": bool(info["broken"]), "broken_cause": info["broken_cause"],
        "peak_force": float(info["peak_force"]), "impact_speed": float(info["impact_speed"]),
        "steps": int(info["step"]), "truncated": bool(truncated), "reward": total_reward,
        "p_fragile_first": float(p[0]) if len(p) else float("nan"),
        "p_fragile_mean": float(p.mean()) if len(p) else float("nan"),
        "decisions": len(p), "profile_first": profiles[0] if profiles else None,
        "final_object_z": float(info["object_pos"][2]), "vetoes": vetoes, "first_veto_step": first_veto,
        "sarm_reason": (info.get("sarm") or {}).get("reason"), "wall_s": time.perf_counter() - t0,
    }
    acts = {}
    if decision_acts:
        acts["decision"] = torch.stack(decision_acts)
        acts["decision_steps"] = torch.tensor(decision_steps)
    if holding_act is not None:
        acts["holding"] = holding_act
    return episode, steps, acts, frames


def run_experiment(cfg: ExperimentConfig, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) an experiment; returns the run folder. See the module docstring."""
    conditions = cfg.validate()
    resources = SteeringResources.load(cfg.sae, cfg.discovery, cfg.vector)
    check_resources(conditions, resources)
    log = RunLog(cfg.run_dir)
    if overwrite and log.root.exists():
        import shutil

        shutil.rmtree(log.root)
    log.write_config(cfg.replay_dict())
    video_seeds = set(sorted(cfg.seeds)[: cfg.videos])
    jobs = [(c.name, s, s in video_seeds) for s in cfg.seeds for c in conditions if not log.is_done(c.name, s)]
    _execute(cfg, jobs, progress)
    log.finalize()
    _side_by_side_videos(cfg, conditions, log, video_seeds)
    from rollouts.report import steering_report

    steering_report(log.root)  # report.md, summary.json, dose_response.png
    return log.root


def _execute(cfg: ExperimentConfig, jobs: list[tuple[str, int, bool]], progress: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("episodes", total=len(jobs))
        if cfg.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                _run_jobs_cached(cfg, [job])
                bar.advance(task)
            return
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            # One job per task keeps progress live; each worker process loads the model once.
            futures = [pool.submit(_worker_job, asdict(cfg), job) for job in jobs]
            for fut in as_completed(futures):
                fut.result()
                bar.advance(task)


_RUNNERS: dict[str, EpisodeRunner] = {}


def _runner_for(cfg_dict: dict[str, Any]) -> EpisodeRunner:
    key = repr(sorted(cfg_dict.items()))
    if key not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[key] = EpisodeRunner(ExperimentConfig(**cfg_dict))
    return _RUNNERS[key]


def _worker_job(cfg_dict: dict[str, Any], job: tuple[str, int, bool]) -> tuple[str, int]:
    runner = _runner_for(cfg_dict)
    return _write_job(runner, job)


def _run_jobs_cached(cfg: ExperimentConfig, jobs: list[tuple[str, int, bool]]) -> None:
    runner = _runner_for(asdict(cfg))
    for job in jobs:
        _write_job(runner, job)


def _write_job(runner: EpisodeRunner, job: tuple[str, int, bool]) -> tuple[str, int]:
    name, seed, video = job
    log = RunLog(runner.cfg.run_dir)
    episode, steps, acts, frames = runner.run(runner.conditions[name], seed, record_video=video)
    if acts:
        path = log.episode_path(name, seed, "activations", "safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in acts.items()}, str(tmp))
        tmp.replace(path)
    if frames:
        write_mp4(str(log.episode_path(name, seed, "videos", "mp4")), frames)
    log.write_episode(name, seed, episode, steps)  # last: marks the episode finished
    return name, seed


def _side_by_side_videos(cfg: ExperimentConfig, conditions: list[Condition], log: RunLog, seeds: set[int]) -> None:
    """For each recorded seed: the first condition beside each other one, in one MP4."""
    import imageio.v3 as iio

    if len(conditions) < 2:
        return
    base = conditions[0].name
    for seed in sorted(seeds):
        left_path = log.episode_path(base, seed, "videos", "mp4")
        if not left_path.exists():
            continue
        left = list(iio.imread(left_path))
        for c in conditions[1:]:
            right_path = log.episode_path(c.name, seed, "videos", "mp4")
            out = log.root / "videos" / f"side_by_side_{safe_name(base)}_vs_{safe_name(c.name)}_seed_{seed}.mp4"
            if not right_path.exists() or out.exists():
                continue
            right = list(iio.imread(right_path))
            n = max(len(left), len(right))
            # Hold each episode's last frame until the longer one ends.
            left_n, right_n = left + [left[-1]] * (n - len(left)), right + [right[-1]] * (n - len(right))
            write_mp4(str(out), [side_by_side(a, b) for a, b in zip(left_n, right_n, strict=True)])
