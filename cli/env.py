"""`physteer env-demo`: the scripted expert over color × material × profile (studies.env_demo)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.progress import Progress

from cli.config_flags import add_config_arguments, config_from_args
from studies.env_demo import EnvDemoConfig, outcome_table, run_env_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `env-demo` sub-command; its flags are EnvDemoConfig's fields."""
    p = subparsers.add_parser(
        "env-demo", help="scripted expert over color × material × profile, with videos"
    )
    add_config_arguments(p, EnvDemoConfig)
    p.set_defaults(func=cmd_env_demo)


def cmd_env_demo(args: argparse.Namespace) -> int:
    """Run the demo with a progress bar, print the table and where the videos are."""
    cfg = config_from_args(EnvDemoConfig, args)
    cfg.check()  # before the progress bar: a refused command prints nothing but its error
    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("episodes", total=None)
        cells = run_env_demo(
            cfg, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    console.print(outcome_table(cells, cfg.seeds))
    if cfg.video:
        console.print(f"Videos: {os.path.abspath(cfg.out)}/<color>_<material>.mp4")
    return 0
