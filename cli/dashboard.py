"""`physteer dashboard`: one self-contained HTML page about an SAE's features on a store."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dashboard`."""
    p = subparsers.add_parser(
        "dashboard",
        help="SAE feature dashboard: top frames with token heatmaps, per-cell distributions, effects",
        description="Encode a store with an SAE and write OUT/dashboard.html: an index of the discovered "
        "features sortable by effect size and, per feature, its top-activating frames (re-rendered from the "
        "env seed) with its activation over the image tokens, whether that activation lies on the object, its "
        "activation per color x shade x material cell, its effect size with CI and, with --run, the steering "
        "effect. The page is self-contained (figures inline, no network).",
    )
    p.add_argument("--store", required=True, help="activation store (from `physteer collect`)")
    p.add_argument("--sae", required=True, help="SAE folder (or a train-sae output folder)")
    p.add_argument(
        "--discovery", help="discovery.json of this SAE on this store (default: run discovery here)"
    )
    p.add_argument("--run", help="run folder whose summary.json holds SAE steering effects")
    p.add_argument("--out", help="output folder (default runs/dashboard_<store name>)")
    p.add_argument(
        "--features", type=int, default=24, help="features with a detailed card (default 24)"
    )
    p.add_argument(
        "--top-frames", type=int, default=6, help="top-activating frames per feature (default 6)"
    )
    p.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap resamples if discovery runs here"
    )
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Build the dashboard and print where the page is."""
    from rich.console import Console

    from reports.dashboard import build_dashboard
    from reports.dashboard_html import write_dashboard

    console = Console()
    with console.status("encoding the store and re-rendering top frames"):
        d = build_dashboard(args.store, args.sae, discovery=args.discovery, run=args.run,
                            max_panels=args.features, top_frames=args.top_frames, n_boot=args.n_boot)  # fmt: skip
    out = Path(args.out or f"runs/dashboard_{Path(args.store).resolve().name}")
    path = write_dashboard(d, out)
    verdicts = [c.verdict for c in d.cards if c.effect["kind"] == "fragility"]
    on = sum(v in ("on the object", "partly on the object") for v in verdicts)
    console.print(
        f"{len(d.cards)} feature cards; fragility features on the object: {on} of {len(verdicts)}"
    )
    for note in d.notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print(f"Dashboard: {path.resolve()}")
    return 0
