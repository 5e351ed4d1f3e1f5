"""`physteer sarm-eval`: the SARM evaluation (studies.sarm.eval) from SarmEvalConfig's flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.config_flags import add_config_arguments, config_from_args
from studies.sarm.config import SarmEvalConfig
from studies.sarm.eval import run_sarm_eval
from studies.sarm.tables import print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sarm-eval` sub-command; its flags are SarmEvalConfig's fields."""
    p = subparsers.add_parser(
        "sarm-eval", help="evaluate the SARM monitor under injected perturbations"
    )
    add_config_arguments(p, SarmEvalConfig, skip={"out"})
    p.add_argument("--name", default="sarm-eval", help="output folder runs/<name>/")
    p.set_defaults(func=run_cli)


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
