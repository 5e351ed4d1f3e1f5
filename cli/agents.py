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

    e = subparsers.add_parser("agent-eval", help="an agent (VLM planner or VLA) in closed loop over color × material")
    e.add_argument("--agent", default="vlm", choices=("vlm", "vla"), help="vlm (planner + expert) or vla (own action tokens)")
    e.add_argument("--model", default=None, help="'tiny' / 'tiny-vla' (the defaults), a local directory or a cached hub id")
    e.add_argument("--chunk", type=int, default=None, help="VLA actions executed per forward (default: its horizon)")
    from agents.action_tokens import (  # torch is loaded with the CLI already (runner)
        DECODING_RULES,
        DEFAULT_DECODING,
    )

    e.add_argument("--decoding", default=DEFAULT_DECODING, choices=DECODING_RULES,
                   help="how the VLA decodes its action tokens (gated: the gripper decided open/closed first)")
    e.add_argument("--object-pattern", default="material", help="material (default) or plain: the material cue removed")
    e.add_argument("--pattern-control", action="store_true",
                   help="also run the same seeds with plain, unbreakable objects and report the grip-force gap ratio")
    e.add_argument("--unbreakable", action="store_true",
                   help="fragile objects never break: peak grip force not cut short at the breaking threshold")
    e.add_argument("--max-steps", type=int, default=200)
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
    """Run the agent on every color × material combination (the one closed loop); print rates
    and the peak grip force per material with 95% intervals (studies.agent_eval)."""
    from envs.objects import check_pattern
    from studies.agent_eval import run_cells, run_pattern_control, summarize

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.envs < 1:
        raise ValueError(f"--envs must be >= 1, got {args.envs}")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold {args.threshold}: must be in [0, 1]")
    if args.max_steps < 1:
        raise ValueError(f"--max-steps {args.max_steps}: must be >= 1")
    check_pattern(args.object_pattern)
    if args.pattern_control and args.object_pattern != "material":
        raise ValueError("--pattern-control compares with the material pattern: leave --object-pattern at material")
    console = Console()
    agent = _agent(args)
    t0 = time.time()
    run = dict(seeds=args.seeds, first_seed=args.first_seed, envs=args.envs, max_steps=args.max_steps,
               unbreakable=args.unbreakable)  # fmt: skip
    rows = run_cells(agent, object_pattern=args.object_pattern, **run)
    control = run_pattern_control(agent, **run) if args.pattern_control else None
    summary = summarize(rows, control)
    table = Table(title=f"{args.agent} closed loop, {args.seeds} seeds per combination ({time.time() - t0:.0f}s)")
    for col in ("cell", "n", "success", "intact", "peak grip N"):
        table.add_column(col)

    def add(name: str, c: dict) -> None:
        f = c["peak_grip_force"]
        table.add_row(name, str(c["n"]), _rate(c["success"]), _rate(c["intact"]),
                      f"{f['value']:.1f} [{f['low']:.1f}, {f['high']:.1f}]")  # fmt: skip

    for name, c in [*summary["cells"].items(), *summary["materials"].items()]:
        add(name, c)
    for name, c in (summary.get("control") or {}).get("materials", {}).items():
        add(f"plain {name}", c)
    console.print(table)
    g = summary["grip_gap"]
    console.print(f"rigid − fragile peak grip force: {g['value']:.1f} N [{g['low']:.1f}, {g['high']:.1f}]")
    if control is not None:
        g, r = summary["control"]["grip_gap"], summary["control"]["gap_ratio"]
        console.print(f"plain, unbreakable objects: gap {g['value']:.1f} N [{g['low']:.1f}, {g['high']:.1f}]; "
                      f"plain / trained gap {r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]")  # fmt: skip
        c, r = summary["command_gap"], summary["control"]["command_gap_ratio"]
        console.print(f"commanded grip (mean closing command): gap {c['value']:.2f} [{c['low']:.2f}, {c['high']:.2f}]; "
                      f"plain / trained {r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]")  # fmt: skip
    from storage import write_json

    config = {k: getattr(args, k) for k in ("agent", "model", "chunk", "decoding", "seeds", "first_seed", "decide_every",
                                            "threshold", "object_pattern", "pattern_control", "unbreakable", "max_steps", "oracle")}  # fmt: skip
    path = write_json(Path(args.out) / "summary.json",
                      {"config": config, "summary": summary, "episodes": rows, "control_episodes": control or []})  # fmt: skip
    console.print(f"wrote {path}")
    return 0


def _rate(e: dict) -> str:
    return f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"


def _agent(args: argparse.Namespace) -> object:
    """The agent agent-eval runs (validated before any episode)."""
    if args.oracle:
        from agents.protocol import ScriptedAgent

        return ScriptedAgent()
    if args.agent == "vla":
        from agents.vla_agent import VLAAgent

        return VLAAgent(args.model or "tiny-vla", chunk=args.chunk, decoding=args.decoding, tap_layer=None, device=args.device, dtype=args.dtype)
    from agents.vlm_agent import VLMAgent

    return VLMAgent(args.model or "tiny", decide_every=args.decide_every, threshold=args.threshold,
                    device=args.device, dtype=args.dtype)  # fmt: skip
