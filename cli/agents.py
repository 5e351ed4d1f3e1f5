"""`physteer train-tiny` (train the embedded tiny VLM) and `physteer agent-eval` (closed loop)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cli.config_flags import add_config_arguments, config_from_args
from studies.agent_eval import AgentEvalConfig, evaluate_agent, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-tiny`, `train-pi0` and `agent-eval` sub-commands."""
    from agents.train_tiny_config import TrainConfig
    from studies.train_pi0 import TrainPI0RecipeConfig

    t = subparsers.add_parser(
        "train-pi0", help="a tiny π0 by flow matching on the env's demonstrations (+ DAgger)"
    )
    add_config_arguments(t, TrainPI0RecipeConfig)
    t.set_defaults(func=cmd_train_pi0)

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
    p.add_argument(
        "--language",
        action="store_true",
        help="the language recipe: descriptions, claims, handling questions and instructions "
        "(agents.language_tasks) beside the two questions",
    )
    p.add_argument(
        "--language-weight",
        type=float,
        default=d.language_weight,
        help=f"weight of the language tasks' loss (default {d.language_weight})",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default 2)")
    p.add_argument(
        "--out", default=d.out_dir, help="checkpoint directory (default agents/tiny_vlm)"
    )
    p.add_argument("--cache", default=d.cache_dir, help="render cache folder ('' for none)")
    p.set_defaults(func=run_train_tiny)

    e = subparsers.add_parser(
        "agent-eval", help="an agent (VLM planner or VLA) in closed loop over color × material"
    )
    add_config_arguments(e, AgentEvalConfig)
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
        language=args.language,
        language_weight=args.language_weight,
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
    if "language" in report:
        lang = Table(title="language tasks, held-out renders: answer preferred to its foil")
        for col in ("item", "trained", "fragile", "rigid", "random weights"):
            lang.add_column(col)
        for name, r in report["language"].items():
            rand = report["language_random_weights"][name]["accuracy"]
            lang.add_row(name, f"{r['accuracy']:.3f}", f"{r['fragile']:.3f}", f"{r['rigid']:.3f}",
                         f"{rand:.3f}")  # fmt: skip
        console.print(lang)
    return 0


def run_agent_eval(args: argparse.Namespace) -> int:
    """Run the agent on every color × material combination (studies.agent_eval) with a progress
    bar; print rates and the peak grip force per material with 95% intervals."""
    from rich.progress import Progress

    cfg = config_from_args(AgentEvalConfig, args)
    cfg.check()  # before the progress bar: a refused command prints nothing but its error
    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("episodes", total=None)
        doc = evaluate_agent(
            cfg, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    print_summary(doc, console)
    console.print(f"wrote {Path(cfg.out) / 'summary.json'}")
    return 0


def cmd_train_pi0(args: argparse.Namespace) -> int:
    """Demonstrations, flow-matching training, DAgger rounds, the checkpoint and its report."""
    from rich.console import Console

    from cli.config_flags import config_from_args
    from studies.train_pi0 import TrainPI0RecipeConfig, train_pi0_recipe

    train_pi0_recipe(config_from_args(TrainPI0RecipeConfig, args), Console())
    return 0
