"""`physteer train-tiny` (train the embedded tiny VLM) and `physteer agent-eval` (closed loop)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-tiny` and `agent-eval` sub-commands."""
    from agents.train_tiny_config import TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser("train-tiny", help="train the embedded tiny VLM on fresh env renders")
    p.add_argument(
        "--n-train", type=int, default=d.n_train, help=f"training frames (default {d.n_train})"
    )
    p.add_argument(
        "--n-eval", type=int, default=d.n_eval, help=f"held-out frames (default {d.n_eval})"
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed, help="torch / data-order seed")
    p.add_argument(
        "--train-seed", type=int, default=d.train_seed, help="first env seed of training renders"
    )
    p.add_argument(
        "--eval-seed", type=int, default=d.eval_seed, help="first env seed of held-out renders"
    )
    p.add_argument(
        "--probe-layer", type=int, default=d.probe_layer, help="decoder layer of the probe"
    )
    p.add_argument(
        "--zoom-prob",
        type=float,
        default=d.zoom_prob,
        help=f"share of zoomed images (default {d.zoom_prob})",
    )
    p.add_argument(
        "--aux-weight",
        type=float,
        default=d.aux_weight,
        help="weight of the training-only fragility loss on image tokens",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default 2)")
    p.add_argument(
        "--out", default=d.out_dir, help="checkpoint directory (default agents/tiny_vlm)"
    )
    p.add_argument("--cache", default=d.cache_dir, help="render cache folder ('' for none)")
    p.set_defaults(func=run_train_tiny)

    e = subparsers.add_parser("agent-eval", help="VLMAgent in closed loop over color × material")
    e.add_argument("--model", default="tiny", help="'tiny', a local directory or a cached hub id")
    e.add_argument("--seeds", type=int, default=25, help="episodes per combination (default 25)")
    e.add_argument("--first-seed", type=int, default=2_000_000, help="first env seed")
    e.add_argument("--decide-every", type=int, default=10)
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--device", default="auto")
    e.add_argument("--dtype", default="float32")
    e.add_argument("--oracle", action="store_true", help="use the ScriptedAgent instead")
    e.add_argument("--envs", type=int, default=1, help="environments stepped together (batched decisions)")
    e.add_argument("--out", default="runs/agent-eval", help="folder for summary.json")
    e.set_defaults(func=run_agent_eval)


def run_train_tiny(args: argparse.Namespace) -> int:
    """Train the tiny model and print its held-out accuracy and probe table."""
    from agents.train_tiny import TrainConfig, train_tiny

    cfg = TrainConfig(
        n_train=args.n_train,
        n_eval=args.n_eval,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        train_seed=args.train_seed,
        eval_seed=args.eval_seed,
        probe_layer=args.probe_layer,
        zoom_prob=args.zoom_prob,
        aux_weight=args.aux_weight,
        threads=args.threads,
        out_dir=args.out,
        cache_dir=args.cache,
    )
    console = Console()
    from rollouts.frames import render_labeled_frames

    report = train_tiny(cfg, render_labeled_frames, log=console.print)
    table = Table(title="tiny VLM, held-out renders per (color, material, shade) cell")
    for col in ("cell", "n", "fragility acc", "color acc"):
        table.add_column(col)
    for cell, r in report["eval"]["cells"].items():
        table.add_row(cell, str(r["n"]), f"{r['fragility_acc']:.3f}", f"{r['color_acc']:.3f}")
    console.print(table)
    probe = Table(
        title=f"linear probe (5-fold CV), layer {report['probe']['layer']} image-token mean"
    )
    for col in ("factor", "trained", "random weights"):
        probe.add_column(col)
    for factor in ("material", "color", "shade"):
        r = report["probe"][factor]
        probe.add_row(factor, f"{r['trained']['mean']:.3f}", f"{r['random']['mean']:.3f}")
    console.print(probe)
    return 0


def run_agent_eval(args: argparse.Namespace) -> int:
    """Run the agent on every color × material combination (the one closed loop); print rates."""
    from agents.protocol import ScriptedAgent
    from agents.vlm_agent import VLMAgent
    from envs import COLORS, MATERIALS
    from rollouts.episode import ClosedLoop, EpisodeSpec

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.envs < 1:
        raise ValueError(f"--envs must be >= 1, got {args.envs}")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold {args.threshold}: must be in [0, 1]")
    console = Console()
    if args.oracle:
        agent = ScriptedAgent()
    else:
        agent = VLMAgent(args.model, decide_every=args.decide_every, threshold=args.threshold,
                         device=args.device, dtype=args.dtype)  # fmt: skip
    loop = ClosedLoop(agent, n_envs=args.envs, record_decisions=False)
    rows = []
    t0 = time.time()
    try:
        for color in COLORS:
            for material in MATERIALS:
                options = {"color": color, "material": material}
                specs = [EpisodeSpec(args.first_seed + k, options=options) for k in range(args.seeds)]
                for i in range(0, len(specs), args.envs):
                    for r in loop.run(specs[i : i + args.envs]):
                        first = next((s for s in r.steps if s["decided"]), {})
                        rows.append({"color": color, "material": material, "seed": r.spec.seed,
                                     "success": r.row["success"], "broken": r.row["broken"],
                                     "p_fragile": first.get("p_fragile"), "profile": first.get("profile")})  # fmt: skip
    finally:
        loop.close()
    table = Table(title=f"closed loop, {args.seeds} seeds per combination ({time.time() - t0:.0f}s)")
    for col in ("color", "material", "success", "intact", "gentle chosen", "right profile"):
        table.add_column(col)
    summary = {}
    for color in COLORS:
        for material in MATERIALS:
            sel = [r for r in rows if r["color"] == color and r["material"] == material]
            right = "gentle" if material == "fragile" else "firm"
            s = {
                "n": len(sel),
                "success": sum(r["success"] for r in sel) / len(sel),
                "intact": sum(not r["broken"] for r in sel) / len(sel),
                "gentle": sum(r["profile"] == "gentle" for r in sel) / len(sel),
                "right_profile": sum(r["profile"] == right for r in sel) / len(sel),
            }
            summary[f"{color}/{material}"] = s
            table.add_row(color, material, *(f"{s[k]:.2f}" for k in ("success", "intact", "gentle", "right_profile")))
    console.print(table)
    from storage import write_json

    path = write_json(Path(args.out) / "summary.json", {"summary": summary, "episodes": rows})
    console.print(f"wrote {path}")
    return 0
