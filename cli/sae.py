"""`physteer train-sae` and `physteer discover`: SAE training and decorrelated feature discovery.

Both read an activation store written by `physteer collect` (or `sae.ActivationStore.append`).
Outputs go to runs/<name>/ unless --out is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

import storage
from cli.config_flags import add_config_arguments, config_from_args
from sae import ActivationStore, MatryoshkaSAE, TrainConfig, default_config, evaluate, train_sae
from sae.discovery import discover_store
from sae.discovery_report import render_table, save_plot, write_json


def _prefixes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--prefixes must be comma-separated ints, got {text!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-sae` and `discover` sub-commands."""
    p = subparsers.add_parser(
        "train-sae",
        help="train a Matryoshka top-k SAE on an activation store",
        description="Train a Matryoshka top-k SAE (defaults scale the reference 2048->8192, k 16, "
        "prefixes 64/256/1024/4096/8192 to the store's width). Writes OUT/sae/, OUT/checkpoints/, "
        "OUT/history.json and OUT/metrics.json.",
    )
    p.add_argument("--store", required=True, help="activation store directory")
    p.add_argument("--out", help="output directory (default runs/sae_<store name>)")
    p.add_argument("--k", type=int, help="active latents per token (default: scaled reference)")
    p.add_argument("--n-latents", type=int, help="dictionary size (default 4 x d)")
    p.add_argument(
        "--prefixes", type=_prefixes, help="Matryoshka prefixes, e.g. 64,256,1024,4096,8192"
    )
    p.add_argument("--batch-topk", action="store_true", help="BatchTopK selection at train time")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per step (default 1024)")
    p.add_argument("--lr", type=float, default=TrainConfig.lr,
                   help=f"peak learning rate (default {TrainConfig.lr:g}, sae.TrainConfig's)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of init and data order (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--eval-rows", type=int, default=100_000, help="rows used for final metrics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    from studies.joint_sae import JointSAEStudyConfig

    j = subparsers.add_parser(
        "train-jsae",
        help="Joint SAEs on paired vision and language activations, every alignment side by side",
    )
    add_config_arguments(j, JointSAEStudyConfig)
    j.set_defaults(func=run_joint)

    from studies.jsae_study import JSAEStudyConfig

    s = subparsers.add_parser(
        "jsae-study",
        help="is a Joint SAE's fragility feature shared by frames and texts? beside baselines and controls",
    )
    add_config_arguments(s, JSAEStudyConfig)
    s.set_defaults(func=run_jsae_study)

    q = subparsers.add_parser(
        "discover",
        help="decorrelated fragility-feature discovery over color x material",
        description="Encode a labelled store with an SAE, find features whose material effect "
        "(Cohen's d) has the same sign and |d| >= threshold within every color (and shade), "
        "exclude color/shade features, and report bootstrap CIs. Writes OUT/discovery.json and "
        "OUT/discovery.png.",
    )
    q.add_argument("--store", required=True, help="activation store with color/material metadata")
    q.add_argument("--sae", required=True, help="SAE directory (or a train-sae output directory)")
    q.add_argument("--out", help="output directory (default runs/discover_<store name>)")
    q.add_argument("--threshold", type=float, default=0.5, help="min |Cohen's d| per context (0.5)")
    q.add_argument("--top", type=int, default=20, help="features in the table (default 20)")
    q.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    q.add_argument("--aggregate", choices=("token", "image"), default="token",
                   help="use tokens, or per-image mean latents")  # fmt: skip
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.set_defaults(func=run_discover)


def run_train(args: argparse.Namespace) -> int:
    """Train, evaluate, and write the SAE and its metrics."""
    store = ActivationStore.open(args.store)
    overrides = {k: v for k, v in (("k", args.k), ("n_latents", args.n_latents),
                                   ("prefixes", args.prefixes)) if v is not None}  # fmt: skip
    if args.batch_topk:
        overrides["batch_topk"] = True
    config = default_config(store.d, **overrides)
    config.metadata = {"store": str(Path(args.store).resolve()), "d": store.d}
    out = Path(args.out or f"runs/sae_{Path(args.store).resolve().name}")
    train = TrainConfig(lr=args.lr, steps=args.steps, batch_size=min(args.batch_size, len(store)),
                        seed=args.seed, checkpoint_every=args.checkpoint_every, out_dir=str(out))  # fmt: skip
    result = train_sae(store, config, train, progress=not args.no_progress, resume=args.resume)
    ev = evaluate(result.sae, store, max_rows=args.eval_rows)
    storage.write_json(out / "metrics.json", ev.to_dict())
    table = Table(title=f"SAE {config.d_in} -> {config.n_latents}, k {config.k}: {out / 'sae'}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("FVE", f"{ev.fve:.4f}")
    for m, v in ev.fve_prefix.items():
        table.add_row(f"FVE prefix {m}", f"{v:.4f}")
    table.add_row("L0", f"{ev.l0:.2f}")
    table.add_row("dead latents", f"{ev.n_dead} ({ev.dead_fraction:.1%})")
    table.add_row(
        "error p50 / p99", f"{ev.error_quantiles[0.5]:.4f} / {ev.error_quantiles[0.99]:.4f}"
    )
    Console().print(table)
    return 0


def run_discover(args: argparse.Namespace) -> int:
    """Run decorrelated discovery and write the table, JSON and plot."""
    store = ActivationStore.open(args.store)
    sae_dir = Path(args.sae)
    if not (sae_dir / "config.json").is_file() and (sae_dir / "sae" / "config.json").is_file():
        sae_dir = sae_dir / "sae"  # accept the train-sae output directory too
    sae = MatryoshkaSAE.from_pretrained(sae_dir, expected_d_in=store.d)
    result = discover_store(sae, store, threshold=args.threshold, top=args.top,
                            n_boot=args.n_boot, aggregate=args.aggregate, seed=args.seed)  # fmt: skip
    out = Path(args.out or f"runs/discover_{Path(args.store).resolve().name}")
    render_table(result, top=args.top)
    write_json(result, out / "discovery.json")
    save_plot(result, out / "discovery.png")
    Console().print(f"wrote {out / 'discovery.json'} and {out / 'discovery.png'}")
    return 0


def run_joint(args: argparse.Namespace) -> int:
    """Pairs, a Joint SAE per alignment and weight, and the table of held-out figures."""
    from studies.joint_sae import JointSAEStudyConfig, run_joint_sae_study

    console = Console()
    doc = run_joint_sae_study(config_from_args(JointSAEStudyConfig, args), console)
    table = Table(
        title=f"Joint SAEs at layer {doc['layer']}: held-out scenes ({doc['runs'][0]['pairs']} pairs)"
    )
    for col in ("alignment", "weight", "retrieval (chance)", "cos matched / mismatched", "FVE vision / language",
                "dead v / l", "one-sided v / l", "usage entropy"):  # fmt: skip
        table.add_column(col, justify="left" if col == "alignment" else "right")
    for r in doc["runs"]:
        v, lang = r["vision"], r["language"]
        table.add_row(r["alignment"], f"{r['weight']:g}", f"{r['retrieval']:.2f} ({r['chance']:.2f})",
                      f"{r['matched_cosine']:.2f} / {r['mismatched_cosine']:.2f}", f"{v['fve']:.3f} / {lang['fve']:.3f}",
                      f"{v['dead']} / {lang['dead']}", f"{v['one_sided']} / {lang['one_sided']}",
                      f"{r['usage_entropy']:.2f} of {r['max_entropy']:.2f}")  # fmt: skip
    console.print(table)
    console.print(f"wrote {Path(args.out) / args.name / 'summary.json'}")
    return 0


def run_jsae_study(args: argparse.Namespace) -> int:
    """Fit every candidate, test its latents for a shared fragility feature, print the table."""
    from studies.jsae_study import JSAEStudyConfig
    from studies.jsae_study import run_jsae_study as run_study

    console = Console()
    doc = run_study(config_from_args(JSAEStudyConfig, args), console)
    table = Table(title=f"shared fragility features at layer {doc['layer']}: "
                        f"{doc['held_scenes']} held-out scenes, held-out synonyms")  # fmt: skip
    for col in ("candidate", "passing", "best latent: frames AUROC", "texts / synonyms / color swap / effect",
                "material retrieval, synonyms (chance)"):  # fmt: skip
        table.add_column(col)
    for r in doc["candidates"]:
        b, ret = r["best"], r["material_retrieval"]
        marks = "/".join(
            "yes" if b.get(k) else "no"
            for k in ("texts", "held_out_synonyms", "color_swap", "effect")
        )
        table.add_row(r["candidate"], f"{len(r['passing'])} of {r['n_tested']}",
                      f"{b.get('min_auroc', float('nan')):.2f}", marks,
                      f"{ret['retrieval']:.2f} [{ret['low']:.2f}, {ret['high']:.2f}] ({ret['chance']:.2f})")  # fmt: skip
    console.print(table)
    floor = doc["effect_floor"]
    console.print(f"effect: material move > {floor['material_move']:.3g}, the largest passing move of "
                  f"{floor['null_shuffles']} Joint SAEs on shuffled pairs")  # fmt: skip
    console.print(f"wrote {Path(args.out) / args.name / 'summary.json'}")
    return 0
