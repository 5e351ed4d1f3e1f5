"""Run (or resume) an experiment: validate the config, write config.json, plan the unfinished
episodes into batches, hand them to an executor and write each returned episode atomically.

`ExperimentConfig`, the batches and the per-process `EpisodeRunner` are in rollouts.runner;
the executors (serial, processes, Ray) in rollouts.executors. This module is the only one that
joins the two, so neither imports the other's caller.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

from rollouts.conditions import Condition
from rollouts.episode import EpisodeRecord
from rollouts.executors import execute
from rollouts.experiment_config import ExperimentConfig
from rollouts.logs import RunLog, safe_name
from rollouts.resources import SteeringResources, check_resources
from rollouts.runner import cell_name, plan_batches
from rollouts.shadow_arms import SHADOW_ARM, copy_unalarmed, reusable_arms


def write_record(log: RunLog, record: EpisodeRecord) -> None:
    """Write one episode's files, each atomically; the episode row last (it marks it done)."""
    from storage import write_mp4, write_safetensors

    spec = record.spec
    cell = cell_name(spec.condition.name, spec.monitor)
    if record.activations:
        write_safetensors(
            log.episode_path(cell, spec.seed, "activations", "safetensors"), record.activations
        )
    if record.frames:
        write_mp4(log.episode_path(cell, spec.seed, "videos", "mp4"), record.frames)
    log.write_episode(cell, spec.seed, record.row, record.steps)


def run_experiment(cfg: ExperimentConfig, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) an experiment; returns the run folder. See the module docstring.

    It writes episodes, logs and side-by-side videos, not a report: call
    `reports.steering.steering_report(folder)` (as `physteer run` does) for report.md,
    summary.json and the dose-response plot.
    """
    conditions = cfg.validate()
    resources = SteeringResources.load(
        cfg.sae, cfg.discovery, cfg.vector, cfg.methods, cfg.method_files
    )
    check_resources(conditions, resources)
    log = RunLog(cfg.run_dir)
    if overwrite and log.root.exists():
        import shutil

        shutil.rmtree(log.root)
    # A run made before weights were recorded has no "model_weights": it is refused (which
    # checkpoint made it cannot be told), not resumed with whatever "tiny" is now.
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(ExperimentConfig) if MISSING in (f.default, f.default_factory)
                and (f.default, f.default_factory) != (MISSING, MISSING)}  # fmt: skip
    log.write_config({**cfg.replay_dict(), "model_weights": cfg.model_weights()}, defaults=defaults)

    def sink(records: list[EpisodeRecord]) -> None:
        for r in records:
            write_record(log, r)

    if cfg.shadow_reuse and reusable_arms(cfg.arms()):
        # The shadow arm first: an enforcing arm whose monitor never alarmed in it is a copy.
        execute(cfg, plan_batches(cfg, conditions, log, arms=[SHADOW_ARM]), sink, progress)
        copy_unalarmed(cfg, conditions, log)
    execute(cfg, plan_batches(cfg, conditions, log), sink, progress)
    log.finalize()
    if len(cfg.arms()) == 1:
        _side_by_side_videos(cfg, conditions, log, cfg.video_seeds())
    return log.root


def _side_by_side_videos(
    cfg: ExperimentConfig, conditions: list[Condition], log: RunLog, seeds: set[int]
) -> None:
    """For each recorded seed: the first condition beside each other one, in one MP4."""
    import imageio.v3 as iio

    from rollouts.video import side_by_side
    from storage import write_mp4

    if len(conditions) < 2:
        return
    arm = cfg.arms()[0]
    base = conditions[0].name
    for seed in sorted(seeds):
        left_path = log.episode_path(cell_name(base, arm), seed, "videos", "mp4")
        if not left_path.exists():
            continue
        left = list(iio.imread(left_path))
        for c in conditions[1:]:
            right_path = log.episode_path(cell_name(c.name, arm), seed, "videos", "mp4")
            out = (
                log.root
                / "videos"
                / f"side_by_side_{safe_name(base)}_vs_{safe_name(c.name)}_seed_{seed}.mp4"
            )
            if not right_path.exists() or out.exists():
                continue
            right = list(iio.imread(right_path))
            n = max(len(left), len(right))
            # Hold each episode's last frame until the longer one ends.
            left_n, right_n = (
                left + [left[-1]] * (n - len(left)),
                right + [right[-1]] * (n - len(right)),
            )
            write_mp4(out, [side_by_side(a, b) for a, b in zip(left_n, right_n, strict=True)])
