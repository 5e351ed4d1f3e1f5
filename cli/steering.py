"""`physteer steer-bench`: the closed-loop steering benchmark (studies.steer_bench)."""

from __future__ import annotations

import argparse
import dataclasses

from rich.console import Console

from cli.config_flags import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `steer-bench`; its flags are SteerBenchConfig's fields."""
    from studies.steer_bench.config import SteerBenchConfig

    p = subparsers.add_parser(
        "steer-bench",
        help="every steering method, matched by effect on calibration seeds, scored on the robot",
    )
    p.add_argument("--quick", action="store_true",
                   help="a test-sized run (three methods, 2 seeds, short episodes); other flags override it")  # fmt: skip
    add_config_arguments(p, SteerBenchConfig, only_given=True)
    p.set_defaults(func=cmd_steer_bench)


def cmd_steer_bench(args: argparse.Namespace) -> int:
    """Validate every setting, then fit, calibrate, evaluate and write the leaderboard."""
    from studies.steer_bench.config import QUICK, SteerBenchConfig
    from studies.steer_bench.run import run_steer_bench

    base = dataclasses.replace(SteerBenchConfig(), **QUICK) if args.quick else SteerBenchConfig()
    run_steer_bench(config_from_args(SteerBenchConfig, args, base=base), Console())
    return 0
