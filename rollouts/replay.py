"""Exact replay of a logged episode from the run's config and the episode's seed."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rollouts.experiment_config import ExperimentConfig
from rollouts.logs import RunLog
from rollouts.runner import Batch, EpisodeRunner, cell_name

COMPARED = (
    "success",
    "broken",
    "broken_cause",
    "steps",
    "peak_force",
    "impact_speed",
    "p_fragile_first",
)


def load_config(run_dir: str | Path) -> ExperimentConfig:
    """The ExperimentConfig a run was made with."""
    log = RunLog(run_dir)
    data = log.read_config()
    known = {f.name for f in fields(ExperimentConfig)}
    cfg = ExperimentConfig(**{k: v for k, v in data.items() if k in known})
    cfg.out, cfg.name, cfg.workers, cfg.executor = (
        str(Path(run_dir).parent),
        Path(run_dir).name,
        1,
        "serial",
    )
    return cfg


def parse_episode(episode: str, cfg: ExperimentConfig) -> tuple[str, str, int]:
    """Resolve EPISODE as "<condition>/<seed>", "<condition>#<monitor>/<seed>" or a row index of
    episodes.parquet; returns (condition, monitor arm, seed)."""
    if "/" in episode:
        cell, seed = episode.rsplit("/", 1)
        condition, _, arm = cell.partition("#")
        arm = arm or cfg.arms()[0]
        if condition not in cfg.conditions:
            raise ValueError(f"condition {condition!r} is not in this run; it has {cfg.conditions}")
        if arm not in cfg.arms():
            raise ValueError(f"monitor arm {arm!r} is not in this run; it has {cfg.arms()}")
        if not seed.isdigit() or int(seed) not in cfg.seeds:
            raise ValueError(f"seed {seed!r} is not in this run; it has seeds {cfg.seeds}")
        return condition, arm, int(seed)
    table = RunLog(cfg.run_dir).read_episodes().to_pylist()
    if not episode.isdigit() or not 0 <= int(episode) < len(table):
        raise ValueError(
            f"episode {episode!r}: give <condition>/<seed> or a row index 0..{len(table) - 1}"
        )
    row = table[int(episode)]
    return row["condition"], row.get("monitor", "none"), int(row["seed"])


def replay(run_dir: str | Path, episode: str, video: bool = False) -> dict[str, Any]:
    """Re-run one episode and compare actions and outcome with the log.

    Returns a dict with the condition, seed, `actions_equal`, `outcome_equal`, the differing
    fields, and the replayed episode row (and frames if `video`).
    """
    cfg = load_config(run_dir)
    recorded, now = RunLog(run_dir).read_config().get("model_weights"), cfg.model_weights()
    if recorded is not None and recorded != now:
        raise ValueError(
            f"{run_dir} was made with other weights of model {cfg.model!r} (sha1 {recorded[:12]}…, "
            f"now {now[:12]}…): replay needs the checkpoint that made the run"
        )
    condition, arm, seed = parse_episode(episode, cfg)
    log = RunLog(cfg.run_dir)
    steps_path = log.episode_path(cell_name(condition, arm), seed, "steps")
    ep_path = log.episode_path(cell_name(condition, arm), seed, "episodes")
    if not ep_path.exists():
        raise FileNotFoundError(f"episode {condition}/{seed} has not finished in {run_dir}")
    logged = pq.read_table(ep_path).to_pylist()[0]
    logged_steps = pq.read_table(steps_path).to_pydict()
    record = EpisodeRunner(cfg).run(Batch(condition, arm, (seed,), (video,)))[0]
    new, steps, frames = record.row, record.steps, record.frames
    cols = ("a_dx", "a_dy", "a_dz", "a_grip")
    old_actions = np.array([logged_steps[c] for c in cols]).T
    new_actions = np.array([[s[c] for c in cols] for s in steps])
    actions_equal = old_actions.shape == new_actions.shape and bool(
        np.array_equal(old_actions, new_actions)
    )
    diffs = {k: (logged[k], new[k]) for k in COMPARED if not _same(logged[k], new[k])}
    return {
        "condition": condition,
        "monitor": arm,
        "seed": seed,
        "actions_equal": actions_equal,
        "outcome_equal": not diffs,
        "differences": diffs,
        "episode": new,
        "frames": frames,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or a == b
    return a == b
