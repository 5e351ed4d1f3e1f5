"""`physteer sarm-eval`: the SARM evaluation (studies.sarm.eval) from SarmEvalConfig's flags;
`physteer shift-suite`: the policies' own failures under distribution shifts (studies.shift_suite)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.config_flags import add_config_arguments, config_from_args
from studies.monitor_bench.config import MonitorBenchConfig
from studies.sarm.config import SarmEvalConfig
from studies.sarm.eval import run_sarm_eval
from studies.sarm.tables import print_summary
from studies.shift_suite import ShiftSuiteConfig, print_suite, run_shift_suite


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sarm-eval` sub-command; its flags are SarmEvalConfig's fields."""
    p = subparsers.add_parser(
        "sarm-eval", help="evaluate the SARM monitor under injected perturbations"
    )
    add_config_arguments(p, SarmEvalConfig, skip={"out"})
    p.add_argument("--name", default="sarm-eval", help="output folder runs/<name>/")
    p.set_defaults(func=run_cli)
    p = subparsers.add_parser(
        "shift-suite", help="natural failures of a policy under scene shifts it was not trained on"
    )
    add_config_arguments(p, ShiftSuiteConfig, skip={"out"})
    p.add_argument("--name", default="shift-suite", help="output folder runs/<name>/")
    p.set_defaults(func=run_suite_cli)
    p = subparsers.add_parser(
        "monitor-bench", help="every scorer on a policy's own failures, seen and held-out shifts"
    )
    add_config_arguments(p, MonitorBenchConfig, skip={"out"})
    p.add_argument("--name", default="monitor-bench", help="output folder runs/<name>/")
    p.set_defaults(func=run_bench_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Build the config from the arguments, run, print tables."""
    cfg = config_from_args(SarmEvalConfig, args, out=str(Path("runs") / args.name))
    doc = run_sarm_eval(cfg, progress=True)
    print_summary(doc)
    print(
        f"wrote {cfg.out}/summary.json"
        + (", roc.png, sweep.png, timeline_*.png" if cfg.plots else "")
    )
    return 0


def run_suite_cli(args: argparse.Namespace) -> int:
    """Run (or resume) the shift suite; print its table."""
    cfg = config_from_args(ShiftSuiteConfig, args, out=str(Path("runs") / args.name))
    doc = run_shift_suite(cfg, progress=True)
    print_suite(doc)
    print(f"wrote {doc['run']}/summary.json" + (", failures.png" if cfg.plots else ""))
    return 0


def run_bench_cli(args: argparse.Namespace) -> int:
    """Run (or resume) the monitor benchmark; print its tables."""
    from studies.monitor_bench.report import print_bench
    from studies.monitor_bench.run import run_monitor_bench

    cfg = config_from_args(MonitorBenchConfig, args, out=str(Path("runs") / args.name))
    if cfg.leave_one_out:
        from studies.monitor_bench.folds import print_folds, run_leave_one_out

        print_folds(run_leave_one_out(cfg, progress=True))
    else:
        print_bench(run_monitor_bench(cfg, progress=True))
    print(f"wrote {cfg.out}/summary.json" + (", bench.png" if cfg.plots else ""))
    return 0
