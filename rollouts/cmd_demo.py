"""`physteer demo`: the main job, end to end on the embedded tiny model."""

from __future__ import annotations

import argparse

from rich.console import Console

from rollouts.demo import DemoConfig, run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo`."""
    d = DemoConfig()
    p = subparsers.add_parser("demo", help="collect → SAE → discover → steer → SARM → probe → report (≤ 15 min)")
    p.add_argument("--name", default=d.name, help="run folder runs/<name>/ (rerun to resume)")
    p.add_argument("--out", default=d.out)
    p.add_argument("--model", default=d.model, help="'tiny', a local folder or a hub id")
    p.add_argument("--seeds", type=int, default=d.seeds, help="paired seeds per steering experiment")
    p.add_argument("--images", type=int, default=d.images, help="frames collected for the SAE")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--quick", action="store_true", help="a few-minute smoke version")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    kwargs = dict(name=args.name, out=args.out, model=args.model, workers=args.workers)
    if args.quick:
        cfg = DemoConfig.quick(**kwargs)
    else:
        cfg = DemoConfig(seeds=args.seeds, images=args.images, **kwargs)
    run_demo(cfg, Console())
    return 0
