"""`physteer steer-bench`: the closed-loop steering benchmark (studies.steer_bench); `physteer
cross-modal` and `physteer jsae-layers`: Joint SAE steering in closed loop (studies.cross_modal,
studies.jsae_layers)."""

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
    from studies.cross_modal import CrossModalConfig
    from studies.jsae_layers import JSAELayersConfig

    c = subparsers.add_parser(
        "cross-modal",
        help="a joint feature's language-side direction written into the image tokens, beside its vision side",
    )
    add_config_arguments(c, CrossModalConfig)
    c.set_defaults(func=cmd_cross_modal)
    j = subparsers.add_parser(
        "jsae-layers",
        help="the JSAE layer claim: add vs suppress a joint feature at every layer, image/text/both tokens",
    )
    add_config_arguments(j, JSAELayersConfig)
    j.set_defaults(func=cmd_jsae_layers)


def cmd_steer_bench(args: argparse.Namespace) -> int:
    """Validate every setting, then fit, calibrate, evaluate and write the leaderboard."""
    from studies.steer_bench.config import QUICK, SteerBenchConfig
    from studies.steer_bench.run import run_steer_bench

    base = dataclasses.replace(SteerBenchConfig(), **QUICK) if args.quick else SteerBenchConfig()
    run_steer_bench(config_from_args(SteerBenchConfig, args, base=base), Console())
    return 0


def _ci(e: dict) -> str:
    return f"{e['mean']:+.3g} [{e['low']:+.3g},{e['high']:+.3g}]"


def cmd_cross_modal(args: argparse.Namespace) -> int:
    """Calibrate, evaluate on both materials, print each material's table and verdict."""
    from rich.table import Table

    from studies.cross_modal import CrossModalConfig, run_cross_modal

    console = Console()
    doc = run_cross_modal(config_from_args(CrossModalConfig, args), console)
    metric = doc["config"]["metric"]
    for material, m in doc["materials"].items():
        effects = m["effects"][metric]
        strengths = list(next(iter(effects.values())))
        table = Table(title=f"{material}: Δ {metric} vs unsteered, {args.seeds} paired seeds; chosen strength "
                            f"{m['strength']:+.3g} (layer {doc['layer']}, latent {doc['latent']})")  # fmt: skip
        table.add_column("direction")
        for s in strengths:
            table.add_column(s)
        for name, row in effects.items():
            table.add_row(name, *(_ci(row[s]) for s in strengths))
        console.print(table)
    return 0


def cmd_jsae_layers(args: argparse.Namespace) -> int:
    """Run the sweep, print the layer table and the tests."""
    from rich.table import Table

    from studies.jsae_layers import JSAELayersConfig, run_jsae_layers

    console = Console()
    doc = run_jsae_layers(config_from_args(JSAELayersConfig, args), console)
    metric = doc["metric"]
    table = Table(
        title=f"Δ {metric} vs unsteered, paired seeds 0..{args.seeds - 1}, {args.material} objects"
    )
    table.add_column("intervention")
    for n in doc["layers"]:
        table.add_column(f"layer {n}")
    for name, row in doc["effects"][doc["metric"]].items():
        table.add_row(name, *(_ci(row[str(n)]) for n in doc["layers"]))
    console.print(table)
    return 0
