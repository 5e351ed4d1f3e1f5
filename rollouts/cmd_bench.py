"""`physteer bench`: episodes/min of the demo's closed loop and each component's time share."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    p = subparsers.add_parser("bench", help="closed-loop episodes/min and where a step's time goes")
    p.add_argument("--episodes", type=int, default=8, help="episodes for the throughput run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="tiny")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure and print the figures."""
    from rollouts.bench import demo_wall_time, episodes_per_minute, step_time_shares

    console = Console()
    rate = episodes_per_minute(args.episodes, args.workers, args.model)
    shares = step_time_shares(model=args.model)
    total = sum(shares.values())
    table = Table(title=f"Closed loop (tiny model, 384², no video): {rate:.1f} episodes/min with {args.workers} workers (target ≥ 20)")
    table.add_column("component")
    table.add_column("s / episode")
    table.add_column("share")
    for k, v in shares.items():
        table.add_row(k, f"{v:.2f}", f"{v / total:.0%}")
    console.print(table)
    wall = demo_wall_time()
    console.print(f"demo wall time: {wall / 60:.1f} min (runs/demo/summary.json)" if wall else "demo wall time: run `physteer demo` first")
    return 0
