"""Run an experiment: conditions × monitor arms × seeds, paired by seed, resumable, on any executor.

Read top to bottom: `ExperimentConfig` (rollouts.experiment_config) is the whole configuration; `run_experiment` validates
it, writes config.json, groups every unfinished episode into batches, lets an executor
(rollouts.executors: serial, local processes or Ray) run them through the one closed loop
(rollouts.episode) and writes each returned episode atomically; then it merges the logs
(`run_experiment`: rollouts.experiment; the caller writes reports: reports.steering).

Every episode is a pure function of (config, condition, monitor arm, seed): the env is rebuilt
from the seed, torch runs single-threaded in the loop, random control directions and image
noise are seeded per episode. That is what makes resume, replay, every executor and every
batch size give the same results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rollouts.conditions import Condition, SteeringResources, parse_conditions
from rollouts.episode import ClosedLoop, EpisodeRecord, EpisodeSpec
from rollouts.experiment_config import ExperimentConfig
from rollouts.logs import RunLog


def cell_name(condition: str, monitor: str) -> str:
    """The log folder key of a (condition, monitor arm) cell."""
    return condition if monitor == "none" else f"{condition}#{monitor}"


@dataclass(frozen=True)
class Batch:
    """Episodes a worker runs together: one condition and arm, several seeds."""

    condition: str
    monitor: str
    seeds: tuple[int, ...]
    videos: tuple[bool, ...]


class EpisodeRunner:
    """Holds the agent, the closed loop and the steering resources of one worker."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        torch.set_num_threads(1)  # determinism across processes, and one core per worker
        self.cfg = cfg
        self.conditions = {c.name: c for c in parse_conditions(cfg.conditions)}
        resources = SteeringResources.load(
            cfg.sae, cfg.discovery, cfg.vector, cfg.methods, cfg.method_files
        )
        scorers: dict[str, Any] = {}
        explainer: Any = None
        layer = "default" if cfg.layer is None else cfg.layer
        if cfg.agent == "vla":
            from agents.vla_agent import VLAAgent

            self.agent = VLAAgent("tiny-vla" if cfg.model == "tiny" else cfg.model, chunk=cfg.chunk, decoding=cfg.decoding,
                                  tap_layer=layer, device=cfg.device, dtype=cfg.dtype)  # fmt: skip
        elif cfg.agent == "pi0":
            from agents.pi0_agent import PI0Agent

            self.agent = PI0Agent(cfg.model, chunk=cfg.chunk, steps=cfg.denoise_steps, tap_layer=layer,
                                  device=cfg.device, dtype=cfg.dtype, stream=cfg.stream,
                                  variance_draws=cfg.variance_draws, noise_scale=cfg.noise_scale, blend=cfg.blend)  # fmt: skip
        elif cfg.agent == "vlm":
            from agents.vlm_agent import VLMAgent

            self.agent = VLMAgent(cfg.model, decide_every=cfg.decide_every, threshold=cfg.threshold,
                                  tap_layer=layer, device=cfg.device, dtype=cfg.dtype)  # fmt: skip
        if cfg.agent != "scripted":
            if cfg.monitors:
                from monitors.scorers import load_scorer

                d = self.agent.backend.hidden_size
                scorers = {
                    Path(p).name: load_scorer(p, layer=self.agent.tap.layer, d=d)
                    for p in cfg.monitors
                }
                if cfg.explainer:
                    from monitors.explain import FeatureExplainer
                    from sae import MatryoshkaSAE

                    sae = MatryoshkaSAE.from_pretrained(Path(cfg.explainer) / "sae", expected_d_in=d)  # fmt: skip
                    explainer = FeatureExplainer.load(cfg.explainer, sae)
        else:
            from agents.protocol import ScriptedAgent

            self.agent = ScriptedAgent()
        self.loop = ClosedLoop(self.agent, n_envs=cfg.envs_per_worker, image_size=cfg.image_size,
                               max_steps=cfg.max_steps, resources=resources, layer=cfg.layer,
                               scorers=scorers, on_veto=cfg.on_veto, tokens=cfg.tokens,
                               record_holding=cfg.holding and _asks_questions(self.agent),
                               object_pattern=cfg.object_pattern, renderer=cfg.renderer,
                               unbreakable=cfg.unbreakable, explainer=explainer)  # fmt: skip

    def spec(self, condition: str, monitor: str, seed: int, video: bool = False) -> EpisodeSpec:
        """The EpisodeSpec of one episode of this experiment."""
        cond = self.conditions[condition]
        return EpisodeSpec(seed, cond, cond.reset_options(self.cfg.material), monitor, video)

    def run(self, batch: Batch) -> list[EpisodeRecord]:
        """Run one batch of episodes through the closed loop."""
        specs = [
            self.spec(batch.condition, batch.monitor, s, v)
            for s, v in zip(batch.seeds, batch.videos, strict=True)
        ]
        return self.loop.run(specs)


def plan_batches(cfg: ExperimentConfig, conditions: list[Condition], log: RunLog,
                 arms: list[str] | None = None) -> list[Batch]:  # fmt: skip
    """Unfinished episodes, grouped into batches of up to envs_per_worker (same condition and arm;
    a condition whose model edit is drawn per seed runs one episode per batch). `arms`: only
    these monitor arms (None: all of cfg.arms())."""
    video_seeds = cfg.video_seeds()
    batches = []
    for c in conditions:
        size = 1 if c.per_seed else cfg.envs_per_worker
        for arm in cfg.arms() if arms is None else arms:
            todo = [s for s in cfg.seeds if not log.is_done(cell_name(c.name, arm), s)]
            for i in range(0, len(todo), size):
                seeds = tuple(todo[i : i + size])
                batches.append(Batch(c.name, arm, seeds, tuple(s in video_seeds for s in seeds)))
    return batches


def _asks_questions(agent: object) -> bool:
    """Whether the agent's model answers a question (the holding-state probe asks the fragility
    question): the planner and the token VLA; not the scripted expert, nor a π0 (no text head)."""
    return callable(getattr(getattr(agent, "backend", None), "prob_yes", None))
