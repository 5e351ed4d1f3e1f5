"""`physteer run` (an experiment) and `physteer replay` (one logged episode, exactly)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from cli.config_flags import add_config_arguments, config_from_args
from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `run` and `replay`; run's flags are ExperimentConfig's fields."""
    p = subparsers.add_parser("run", help="an experiment: conditions × monitor arms × paired seeds")
    add_config_arguments(p, ExperimentConfig)
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.set_defaults(func=cmd_run)

    r = subparsers.add_parser("replay", help="re-run a logged episode and check it matches exactly")
    r.add_argument("run", help="run folder, e.g. runs/experiment")
    r.add_argument(
        "episode",
        help="<condition>/<seed>, <condition>#<monitor>/<seed>, or a row index of episodes.parquet",
    )
    r.add_argument("--video", default=None, help="also write the replay as this MP4")
    r.set_defaults(func=cmd_replay)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the experiment and print where the logs are."""
    cfg = config_from_args(ExperimentConfig, args)
    root = run_experiment(cfg, overwrite=args.overwrite)
    if len(cfg.arms()) == 1:
        from reports.steering import steering_report

        steering_report(root, console=Console())
    Console().print(f"Run folder: {os.path.abspath(root)}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay one episode; exit 1 if it does not match the log."""
    from rollouts.replay import replay
    from storage import write_mp4

    result = replay(args.run, args.episode, video=bool(args.video))
    console = Console()
    ok = result["actions_equal"] and result["outcome_equal"]
    console.print(
        f"{result['condition']}/{result['seed']}: actions {'identical' if result['actions_equal'] else 'DIFFER'}, "
        f"outcome {'identical' if result['outcome_equal'] else 'DIFFERS ' + str(result['differences'])}"
    )
    if args.video and result["frames"]:
        write_mp4(args.video, result["frames"])
        console.print(f"Video: {args.video}")
    return 0 if ok else 1
