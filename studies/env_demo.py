"""The scripted expert on every color × material combination with both handling profiles
(`physteer env-demo`): a table of outcomes and one MP4 per combination.

    rows = run_env_demo(EnvDemoConfig(seeds=3))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.protocol import ExpertAgent
from envs import COLORS, MATERIALS
from envs.expert import PROFILES
from rollouts.episode import ClosedLoop, EpisodeSpec
from storage import write_mp4


@dataclass
class EnvDemoConfig:
    """Settings of `physteer env-demo`.

    Attributes:
        out: output folder of the MP4s.
        seeds: episodes per combination and profile.
        image_size: video frame size in pixels.
        video: write one MP4 per color × material (its first seed, both profiles).
    """

    out: str = "runs/env-demo"
    seeds: int = 3
    image_size: int = 384
    video: bool = True

    def check(self) -> None:
        """ValueError naming the first bad setting."""
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} is not allowed; it must be an int >= 1")
        if self.image_size < 16:
            raise ValueError(
                f"image_size={self.image_size!r} is not allowed; it must be an int >= 16"
            )


def run_env_demo(
    cfg: EnvDemoConfig, progress: Callable[[int, int], Any] | None = None
) -> list[tuple[str, str, str, list[dict]]]:
    """Run every combination and profile through the one closed loop (an ExpertAgent per
    profile); returns (color, material, profile, episode rows) per cell; `progress(done, total)`."""
    cfg.check()
    loops = {profile: ClosedLoop(ExpertAgent(profile), image_size=cfg.image_size, record_decisions=False)
             for profile in PROFILES}  # fmt: skip
    combos = [(c, m) for c in COLORS for m in MATERIALS]
    total, done, cells = len(combos) * len(PROFILES) * cfg.seeds, 0, []
    try:
        for color, material in combos:
            frames = []
            for profile, loop in loops.items():
                outcomes = []
                for seed in range(cfg.seeds):
                    spec = EpisodeSpec(
                        seed,
                        options={"color": color, "material": material},
                        video=cfg.video and seed == 0,
                    )
                    (record,) = loop.run([spec])
                    frames.extend(record.frames)
                    outcomes.append(record.row)
                    done += 1
                    if progress is not None:
                        progress(done, total)
                cells.append((color, material, profile, outcomes))
            if frames:
                write_mp4(os.path.join(cfg.out, f"{color}_{material}.mp4"), frames)
    finally:
        for loop in loops.values():
            loop.close()
    return cells


def outcome_table(cells: list[tuple[str, str, str, list[dict]]], seeds: int) -> Any:
    """A rich table: success, breakage, mean peak force and steps per cell."""
    from rich.table import Table

    table = Table(title=f"Scripted expert outcomes ({seeds} seeds per cell)")
    for col in ("color", "material", "profile", "success", "broken", "peak force (N)", "steps"):
        table.add_column(col)
    for color, material, profile, outcomes in cells:
        n = len(outcomes)
        table.add_row(color, material, profile, f"{sum(o['success'] for o in outcomes)}/{n}",
                      f"{sum(o['broken'] for o in outcomes)}/{n}", f"{np.mean([o['peak_force'] for o in outcomes]):.1f}",
                      f"{np.mean([o['steps'] for o in outcomes]):.0f}")  # fmt: skip
    return table
