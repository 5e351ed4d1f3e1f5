"""`physteer export-lerobot`: a run folder's episodes as a LeRobot v3.0 dataset."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export-lerobot`."""
    p = subparsers.add_parser(
        "export-lerobot",
        help="export a run's episodes as a LeRobot v3.0 dataset (Parquet, MP4, meta/info.json)",
        description="Re-simulate every episode of RUN from its seed and logged actions (checked step by step "
        "against the log) and write OUT as a LeRobot v3.0 dataset: data/chunk-000/file-000.parquet (state, "
        "action, physteer signals per step), videos/observation.images.front/chunk-000/file-000.mp4, "
        "meta/info.json, meta/episodes/, meta/tasks.parquet and meta/stats.json.",
    )
    p.add_argument("run", help="run folder, e.g. runs/fragile")
    p.add_argument("out", help="dataset folder to create, e.g. runs/fragile_lerobot")
    p.add_argument(
        "--no-video", action="store_true", help="tabular data only (no camera feature, faster)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export and print the dataset's size."""
    from rich.console import Console
    from rich.progress import Progress

    from rollouts.lerobot import export_lerobot

    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("episodes", total=None)
        result = export_lerobot(args.run, args.out, video=not args.no_video, overwrite=args.overwrite,
                                progress=lambda n, total: bar.update(task, completed=n, total=total))  # fmt: skip
    console.print(f"LeRobot v3.0 dataset: {result.episodes} episodes, {result.frames} frames at {result.fps} fps"
                  f"{', with video' if result.video else ', no video'} -> {result.root.resolve()}")  # fmt: skip
    return 0
