"""`physteer demo`: the main job, end to end on the embedded tiny model."""

from __future__ import annotations

import argparse

from rich.console import Console

from cli.config_flags import add_config_arguments, config_from_args
from studies.demo.run import DemoConfig, run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo`; its flags are DemoConfig's fields."""
    p = subparsers.add_parser(
        "demo", help="collect → SAE → discover → steer → SARM → probe → report (≤ 15 min)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few-minute smoke version (DemoConfig.quick); other flags override it",
    )
    add_config_arguments(p, DemoConfig, only_given=True)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Validate every setting, then run the demo."""
    base = DemoConfig.quick() if args.quick else DemoConfig()
    cfg = config_from_args(DemoConfig, args, base=base)
    cfg.validate()
    run_demo(cfg, Console())
    return 0
