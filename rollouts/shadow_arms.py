"""Monitor arms that need no episode of their own: the enforcing monitor never alarmed.

An experiment with monitor arms runs each (condition, seed) once per arm: "none" (the shadow
arm: every monitor scores, none enforces) and one arm per enforcing monitor. A monitor that
never vetoes passes every action through unchanged (monitors.sarm), and the shadow arm scores
every decision with the same monitors, so where the shadow episode shows no alarm of monitor X
(its row's `first_alarm:X` is null), X's arm would play the same episode step for step. Such an
episode is written from the shadow episode's files with the arm's name in them instead of being
run again. The row keeps the shadow episode's timing columns (what the episode took to run).

Left to run: video seeds (their frames print the enforcing monitor's score), episodes whose
shadow episode is not finished or lacks the monitor's column. `ExperimentConfig.shadow_reuse =
False` runs every arm (tests/rollouts/test_one_loop.py checks both write the same tables).
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from rollouts.conditions import Condition
from rollouts.experiment_config import ExperimentConfig
from rollouts.logs import RunLog
from rollouts.runner import cell_name

SHADOW_ARM = "none"


def reusable_arms(arms: list[str]) -> list[str]:
    """The enforcing arms an experiment could copy from its shadow arm (none without one)."""
    return [a for a in arms if a != SHADOW_ARM] if SHADOW_ARM in arms else []


def _rows(path: Any) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def copy_unalarmed(cfg: ExperimentConfig, conditions: list[Condition], log: RunLog) -> int:
    """Write every unfinished enforcing-arm episode whose shadow episode had no alarm of that
    arm's monitor from the shadow episode's files; returns how many were written.

    Args:
        cfg: the experiment (its arms, seeds and video seeds, which always run).
        conditions: the experiment's conditions.
        log: the run folder.
    """
    from storage import write_bytes

    video_seeds = cfg.video_seeds()
    copied = 0
    for c in conditions:
        shadow = cell_name(c.name, SHADOW_ARM)
        for arm in reusable_arms(cfg.arms()):
            cell = cell_name(c.name, arm)
            for seed in cfg.seeds:
                if seed in video_seeds or log.is_done(cell, seed) or not log.is_done(shadow, seed):
                    continue
                (row,) = _rows(log.episode_path(shadow, seed))
                key = f"first_alarm:{arm}"
                if key not in row or row[key] is not None:
                    continue
                # What the enforcing monitor reports at the end of an episode it never vetoed:
                # its last verdict, scored and clean (monitors.sarm: reason "").
                row.update(monitor=arm, sarm_reason="")
                steps = [
                    {**s, "monitor": arm} for s in _rows(log.episode_path(shadow, seed, "steps"))
                ]
                acts = log.episode_path(shadow, seed, "activations", "safetensors")
                if acts.exists():
                    write_bytes(
                        log.episode_path(cell, seed, "activations", "safetensors"),
                        acts.read_bytes(),
                    )
                log.write_episode(cell, seed, row, steps)  # the episode row last: marks it done
                copied += 1
    return copied
