"""`physteer train-vla`: demonstrations through the one closed loop, then behaviour cloning.

    physteer train-vla --episodes 192 --epochs 3 --out-dir agents/tiny_vla

1. `collect_demonstrations` (rollouts.vla_demos): noisy-oracle episodes from `--demo-seed`,
   cached as a Demonstrations folder (`--demos`, reused when it exists).
2. `agents.train_vla.train_vla`: the tiny VLM fine-tuned into a VLA, held-out figures in
   `training_report.json` beside the checkpoint. Seeded end to end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train-vla`: collection flags, then TrainVLAConfig's fields."""
    from rollouts.config_cli import add_config_arguments

    p = subparsers.add_parser("train-vla", help="collect noisy-oracle demonstrations and fine-tune the tiny VLA")
    p.add_argument("--episodes", type=int, default=192, help="demonstration episodes (default 192)")
    p.add_argument("--demo-seed", type=int, default=7_000_000, help="first env seed of the demonstrations")
    p.add_argument("--horizon", type=int, default=4, help="actions per chunk the model predicts (default 4)")
    p.add_argument("--frame-every", type=int, default=3, help="keep a frame every N steps after the first 16 (default 3)")
    p.add_argument("--noise-sigma", type=float, default=0.3, help="executed-motion noise std (default 0.3)")
    p.add_argument("--noise-prob", type=float, default=0.5, help="share of steps with noise (default 0.5)")
    p.add_argument("--demos", default="runs/train-vla/demos", help="demonstrations folder (reused when it exists)")
    add_config_arguments(p, _config_class())
    p.set_defaults(func=cmd_train_vla)
    register_rewiring(subparsers)


def _config_class() -> type:
    from agents.train_vla_config import TrainVLAConfig

    return TrainVLAConfig


def cmd_train_vla(args: argparse.Namespace) -> int:
    """Validate everything, collect (or reuse) demonstrations, train, print the held-out figures."""
    from agents.vla_data import Demonstrations
    from rollouts.config_cli import config_from_args
    from rollouts.vla_demos import collect_demonstrations

    cfg = config_from_args(_config_class(), args)
    cfg.validate()
    for name in ("episodes", "horizon", "frame_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if not (0 <= args.noise_sigma <= 1 and 0 <= args.noise_prob <= 1):
        raise ValueError(f"--noise-sigma {args.noise_sigma} and --noise-prob {args.noise_prob}: each must be in [0, 1]")
    console = Console()
    demos_dir = Path(args.demos)
    if (demos_dir / "frames.npy").is_file():
        demos = Demonstrations.load(demos_dir)
        console.print(f"reusing {len(demos)} demonstration rows from {demos_dir}")
    else:
        demos = collect_demonstrations(args.episodes, seed=args.demo_seed, horizon=args.horizon, frame_every=args.frame_every,
                                       sigma=args.noise_sigma, prob=args.noise_prob)  # fmt: skip
        demos.save(demos_dir)
        console.print(f"collected {len(demos)} rows from {args.episodes} episodes into {demos_dir}")
    from agents.train_vla import train_vla

    report = train_vla(demos, cfg, log=console.print)
    held = report["eval"]
    console.print({k: held[k] for k in ("frag_slot_acc", "cotrain_acc") if k in held})
    console.print(f"checkpoint: {cfg.out_dir} (training_report.json beside it)")
    return 0


def register_rewiring(subparsers: argparse._SubParsersAction) -> None:
    """Add `vla-rewiring`."""
    p = subparsers.add_parser("vla-rewiring", help="Häon's claims on the tiny VLA: value vectors rewired, action-token share")
    p.add_argument("--vla", default="tiny-vla", help="VLA checkpoint folder (default: the embedded agents/tiny_vla)")
    p.add_argument("--base", default="tiny", help="the VLM it was fine-tuned from (default: the embedded tiny VLM)")
    p.add_argument("--k", type=int, default=10, help="top tokens per value vector (default 10)")
    p.add_argument("--out", default="runs/vla-rewiring", help="folder for rewiring.json")
    p.set_defaults(func=cmd_rewiring)


def cmd_rewiring(args: argparse.Namespace) -> int:
    """Measure and print per layer, beside the random-weight reference."""
    from rich.table import Table

    from agents.backend import load_vlm
    from agents.rewiring import rewiring_report
    from agents.vla_model import TINY_VLA_DIR, load_vla
    from storage import write_json

    if args.k < 1:
        raise ValueError(f"--k {args.k}: must be >= 1")
    vla, _ = load_vla(TINY_VLA_DIR if args.vla == "tiny-vla" else args.vla, "cpu", "float32")
    report = rewiring_report(load_vlm(args.base, "cpu", "float32"), vla, k=args.k)
    table = Table(title=f"FFN value vectors, VLM → VLA (top-{args.k} tokens under the unembedding)")
    for col in ("layer", "top-1 changed", "overlap < half", "action share top-k", "(vocab)", "random: top-1 changed"):
        table.add_column(col)
    for row, ref in zip(report["vla"], report["random_reference"], strict=True):
        table.add_row(str(row["layer"]), f"{row['top1_changed']:.0%}", f"{row['overlap_below_half']:.0%}",
                      f"{row['action_share_topk']:.1%}", f"{row['action_share_vocab']:.1%}", f"{ref['top1_changed']:.0%}")  # fmt: skip
    Console().print(table)
    path = write_json(Path(args.out) / "rewiring.json", report)
    Console().print(f"wrote {path}")
    return 0
