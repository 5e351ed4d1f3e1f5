"""`physteer bench`: episodes/min per executor (ratios to serial) and each component's time share."""

from __future__ import annotations

import argparse
import statistics

from rich.console import Console
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    p = subparsers.add_parser("bench", help="closed-loop episodes/min per executor and where a step's time goes")
    p.add_argument("--episodes", type=int, default=8, help="episodes per throughput measurement (default 8)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of every variant (default 1)")
    p.add_argument("--variants", default=None, help="comma list of variants (default: all): serial, '2 processes', ...")
    p.add_argument("--model", default="tiny")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure and print the figures."""
    from rollouts.bench import VARIANTS, demo_wall_time, step_time_shares, throughput

    if args.episodes < 1 or args.rounds < 1:
        raise ValueError(f"--episodes ({args.episodes}) and --rounds ({args.rounds}) must be >= 1")
    names = [v.strip() for v in args.variants.split(",")] if args.variants else list(VARIANTS)
    for n in names:
        if n not in VARIANTS:
            raise ValueError(f"variant {n!r} is unknown; choose from {list(VARIANTS)}")
    if names[0] != "serial":
        names = ["serial", *[n for n in names if n != "serial"]]
    console = Console()
    rates = throughput(args.episodes, args.model, args.rounds, {n: VARIANTS[n] for n in names})
    base = statistics.median(rates["serial"])
    table = Table(title=f"Closed loop ({args.model}, 384², no video), {args.episodes} episodes × {args.rounds} round(s), start-up included")
    for col in ("variant", "episodes/min (median)", "ratio to serial"):
        table.add_column(col)
    for name, values in rates.items():
        med = statistics.median(values)
        table.add_row(name, f"{med:.1f}", f"{med / base:.2f}×")
    console.print(table)
    shares = step_time_shares(model=args.model)
    total = sum(shares.values())
    table = Table(title="Where an episode's time goes (one process, SAE scorer in shadow mode)")
    for col in ("component", "s / episode", "share"):
        table.add_column(col)
    for k, v in shares.items():
        table.add_row(k, f"{v:.2f}", f"{v / total:.0%}")
    console.print(table)
    wall = demo_wall_time()
    console.print(f"demo wall time: {wall / 60:.1f} min (runs/demo/summary.json)" if wall else "demo wall time: run `physteer demo` first")
    return 0
