"""`physteer env-demo`: the scripted expert on every color × material combination with both
handling profiles, a table of outcomes, and one MP4 per combination."""

from __future__ import annotations

import argparse
import os

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from agents.protocol import ExpertAgent
from envs import COLORS, MATERIALS
from envs.expert import PROFILES
from rollouts.episode import ClosedLoop, EpisodeSpec
from storage import write_mp4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `env-demo` sub-command."""
    p = subparsers.add_parser("env-demo", help="scripted expert over color × material × profile, with videos")
    p.add_argument("--out", default="runs/env-demo", help="output folder (default: runs/env-demo)")
    p.add_argument("--seeds", type=int, default=3, help="episodes per combination and profile (default: 3)")
    p.add_argument("--image-size", type=int, default=384, help="video frame size (default: 384)")
    p.add_argument("--no-video", action="store_true", help="skip the MP4s")
    p.set_defaults(func=run_env_demo)


def run_env_demo(args: argparse.Namespace) -> int:
    """Run the demo (the one closed loop, an ExpertAgent per profile) and print the table."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {args.seeds}")
    if args.image_size < 16:
        raise ValueError(f"--image-size must be ≥ 16, got {args.image_size}")
    console = Console()
    loops = {profile: ClosedLoop(ExpertAgent(profile), image_size=args.image_size, record_decisions=False)
             for profile in PROFILES}  # fmt: skip
    rows = []
    combos = [(c, m) for c in COLORS for m in MATERIALS]
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("episodes", total=len(combos) * len(PROFILES) * args.seeds)
            for color, material in combos:
                frames = []
                for profile, loop in loops.items():
                    outcomes = []
                    for seed in range(args.seeds):
                        spec = EpisodeSpec(seed, options={"color": color, "material": material},
                                           video=not args.no_video and seed == 0)  # fmt: skip
                        (record,) = loop.run([spec])
                        frames.extend(record.frames)
                        outcomes.append(record.row)
                        progress.advance(task)
                    rows.append((color, material, profile, outcomes))
                if frames:
                    write_mp4(os.path.join(args.out, f"{color}_{material}.mp4"), frames)
    finally:
        for loop in loops.values():
            loop.close()

    table = Table(title=f"Scripted expert outcomes ({args.seeds} seeds per cell)")
    for col in ("color", "material", "profile", "success", "broken", "peak force (N)", "steps"):
        table.add_column(col)
    for color, material, profile, outcomes in rows:
        n = len(outcomes)
        table.add_row(
            color, material, profile,
            f"{sum(o['success'] for o in outcomes)}/{n}",
            f"{sum(o['broken'] for o in outcomes)}/{n}",
            f"{np.mean([o['peak_force'] for o in outcomes]):.1f}",
            f"{np.mean([o['steps'] for o in outcomes]):.0f}",
        )
    console.print(table)
    if not args.no_video:
        console.print(f"Videos: {os.path.abspath(args.out)}/<color>_<material>.mp4")
    return 0
