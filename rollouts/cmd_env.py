"""`physteer env-demo`: the scripted expert on every color × material combination with both
handling profiles, a table of outcomes, and one MP4 per combination."""

from __future__ import annotations

import argparse
import os

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from envs import COLORS, MATERIALS, FrankaPickEnv
from envs.expert import PROFILES, ScriptedExpert
from rollouts.video import annotate, write_mp4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `env-demo` sub-command."""
    p = subparsers.add_parser("env-demo", help="scripted expert over color × material × profile, with videos")
    p.add_argument("--out", default="runs/env-demo", help="output folder (default: runs/env-demo)")
    p.add_argument("--seeds", type=int, default=3, help="episodes per combination and profile (default: 3)")
    p.add_argument("--image-size", type=int, default=384, help="video frame size (default: 384)")
    p.add_argument("--no-video", action="store_true", help="skip the MP4s")
    p.set_defaults(func=run_env_demo)


def run_episode(env: FrankaPickEnv, seed: int, options: dict, profile: str, record: bool) -> tuple[dict, list]:
    """Run the expert for one episode; return the final info and (optionally) annotated frames."""
    expert = ScriptedExpert(profile)
    _, info = env.reset(seed=seed, options=options)
    frames = []
    label = f"{options['color']} {options['material']} | {profile}"
    done = False
    while not done:
        if record:
            frames.append(annotate(env.render(), [label, f"step {info['step']}  grip {env.forces.grip:5.1f} N"]))
        _, _, terminated, truncated, info = env.step(expert.act(info))
        done = terminated or truncated
    if record:
        banner = "BROKEN" if info["broken"] else ("SUCCESS" if info["success"] else "TIMEOUT")
        last = annotate(env.render(), [label, f"step {info['step']}"], banner=banner)
        frames.extend([last] * 12)  # hold the outcome for a second
    return info, frames


def run_env_demo(args: argparse.Namespace) -> int:
    """Run the demo and print the table; returns the exit code."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {args.seeds}")
    console = Console()
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=args.image_size)
    rows = []
    combos = [(c, m) for c in COLORS for m in MATERIALS]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("episodes", total=len(combos) * len(PROFILES) * args.seeds)
        for color, material in combos:
            frames = []
            for profile in PROFILES:
                outcomes = []
                for seed in range(args.seeds):
                    record = not args.no_video and seed == 0
                    info, f = run_episode(env, seed, {"color": color, "material": material}, profile, record)
                    frames.extend(f)
                    outcomes.append(info)
                    progress.advance(task)
                rows.append((color, material, profile, outcomes))
            if frames:
                write_mp4(os.path.join(args.out, f"{color}_{material}.mp4"), frames)
    env.close()

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
            f"{np.mean([o['step'] for o in outcomes]):.0f}",
        )
    console.print(table)
    if not args.no_video:
        console.print(f"Videos: {os.path.abspath(args.out)}/<color>_<material>.mp4")
    return 0
