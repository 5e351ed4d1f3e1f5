"""`physteer train-vla`: demonstrations through the one closed loop, then behaviour cloning.

    # the shipped checkpoint (README, VLA section):
    physteer train-vla --episodes 256 --epochs 3 --dagger-rounds 1 --dagger-episodes 256
        --dagger-epochs 2 --threads 2 --out-dir agents/tiny_vla

1. `collect_demonstrations` (rollouts.vla_demos): noisy-oracle episodes from `--demo-seed`,
   cached as a Demonstrations folder (`--demos`, reused when it exists).
2. `agents.train_vla.train_vla`: the tiny VLM fine-tuned into a VLA, held-out figures in
   `training_report.json` beside the checkpoint. Seeded end to end.
3. `--dagger-rounds R`: R times, the checkpoint drives its own episodes, the oracle labels the
   states it reaches (rollouts.vla_demos.dagger_demonstrations, cached beside `--demos`), and
   fine-tuning continues from the checkpoint on everything collected (Demonstrations.concat).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

#: train-vla flags that make the oracle's demonstrations, and those of the DAgger rounds
#: (recorded with each cached folder and in the checkpoint's recipe).
DEMO_SETTINGS = (
    "episodes",
    "demo_seed",
    "horizon",
    "frame_every",
    "noise_sigma",
    "noise_prob",
    "rigid_release",
    "handling_words",
    "release_frames",
)
DAGGER_SETTINGS = (
    "dagger_rounds",
    "dagger_episodes",
    "dagger_epochs",
    "dagger_envs",
    "dagger_release",
)
#: The planner's rigid release height, the demonstrations' default: rollouts.vla_demos.RIGID_RELEASE
#: (not imported: the CLI builds its flags without loading the env; a test keeps them equal).
PLANNER_RIGID_RELEASE = 0.15
#: Training settings added after cached folders were made, with the value such folders had.
SETTINGS_ADDED_LATER = {
    "holding_swap": 0.0,
    "rigid_release": PLANNER_RIGID_RELEASE,
    "handling_words": "plain",
    "dagger_release": False,
    "release_frames": False,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train-vla`: collection flags, then TrainVLAConfig's fields."""
    from cli.config_flags import add_config_arguments

    p = subparsers.add_parser(
        "train-vla", help="collect noisy-oracle demonstrations and fine-tune the tiny VLA"
    )
    p.add_argument("--episodes", type=int, default=192, help="demonstration episodes (default 192)")
    p.add_argument(
        "--demo-seed", type=int, default=7_000_000, help="first env seed of the demonstrations"
    )
    p.add_argument(
        "--horizon", type=int, default=4, help="actions per chunk the model predicts (default 4)"
    )
    p.add_argument(
        "--frame-every",
        type=int,
        default=3,
        help="keep a frame every N steps after the first 16 (default 3)",
    )
    p.add_argument(
        "--noise-sigma", type=float, default=0.3, help="executed-motion noise std (default 0.3)"
    )
    p.add_argument(
        "--noise-prob", type=float, default=0.5, help="share of steps with noise (default 0.5)"
    )
    p.add_argument(
        "--rigid-release",
        type=float,
        default=PLANNER_RIGID_RELEASE,
        help=f"the oracle's rigid release height above the bin floor, m (default {PLANNER_RIGID_RELEASE}, the planner's)",
    )
    p.add_argument(
        "--handling-words",
        default="plain",
        help="the instructions' handling words, one per block of 16 episodes in turn, comma "
        "separated: 'plain' (no word) or envs.language's words (gently, carefully, firmly, ...); "
        "the oracle follows the word (default plain)",
    )
    p.add_argument(
        "--release-frames",
        action="store_true",
        help="also keep every step's frame while the gripper is low over the bin (the gentle "
        "release; rollouts.vla_demos.low_over_bin), in the demonstrations and the DAgger rounds "
        "(default off: every --frame-every steps, as the shipped checkpoints were made)",
    )
    p.add_argument(
        "--demos",
        default="runs/train-vla/demos",
        help="demonstrations folder (reused when it exists)",
    )
    p.add_argument(
        "--dagger-rounds",
        type=int,
        default=0,
        help="DAgger rounds after the first training (default 0)",
    )
    p.add_argument(
        "--dagger-episodes",
        type=int,
        default=128,
        help="policy-driven episodes per DAgger round (default 128)",
    )
    p.add_argument(
        "--dagger-epochs",
        type=int,
        default=2,
        help="epochs of each DAgger round's fine-tuning (default 2)",
    )
    p.add_argument(
        "--dagger-envs",
        type=int,
        default=8,
        help="lanes per batched forward in DAgger rounds (default 8)",
    )
    p.add_argument(
        "--dagger-release",
        action="store_true",
        help="DAgger labels let go where the policy holds the object at the oracle's release "
        "height over the bin (agents.dagger; default off: every held state is labelled 'keep "
        "holding', as the shipped checkpoints were made)",
    )
    add_config_arguments(p, _config_class())
    p.set_defaults(func=cmd_train_vla)
    register_rewiring(subparsers)
    register_study(subparsers)


def _config_class() -> type:
    from agents.train_vla_config import TrainVLAConfig

    return TrainVLAConfig


def cmd_train_vla(args: argparse.Namespace) -> int:
    """Validate everything, collect (or reuse) demonstrations, train, run the DAgger rounds,
    print the held-out figures."""
    from dataclasses import asdict, replace

    from agents.dagger import DAGGER_LABELS_VERSION
    from agents.vla_data import Demonstrations
    from cli.config_flags import config_from_args
    from rollouts.vla_demos import (
        ORACLE_VERSION,
        collect_demonstrations,
        dagger_demonstrations,
        oracle_profiles,
    )
    from storage import write_json

    cfg = config_from_args(_config_class(), args)
    cfg.validate()
    for name in (
        "episodes",
        "horizon",
        "frame_every",
        "dagger_episodes",
        "dagger_epochs",
        "dagger_envs",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.dagger_rounds < 0:
        raise ValueError(f"--dagger-rounds {args.dagger_rounds}: must be >= 0")
    if not (0 <= args.noise_sigma <= 1 and 0 <= args.noise_prob <= 1):
        raise ValueError(
            f"--noise-sigma {args.noise_sigma} and --noise-prob {args.noise_prob}: each must be in [0, 1]"
        )
    try:
        oracle_profiles(args.rigid_release)
    except ValueError as exc:
        raise ValueError(f"--rigid-release {args.rigid_release}: {exc}") from None
    words = handling_word_list(args.handling_words)
    console = Console()
    import torch

    torch.set_num_threads(cfg.threads)
    demos_dir = Path(args.demos)
    # What each cached folder must have been made with: a folder made with other settings is
    # refused here, before any work, rather than trained on silently.
    base = {"oracle": ORACLE_VERSION, **{k: getattr(args, k) for k in DEMO_SETTINGS}}
    policy = {
        **base,
        **{
            k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "threads", "feature_batch")
        },
    }
    folders = [(demos_dir, base)] + [
        (demos_dir.with_name(f"{demos_dir.name}-dagger{r}"),
         {**policy, "dagger_round": r, "dagger_labels": DAGGER_LABELS_VERSION, "dagger_episodes": args.dagger_episodes,
          "dagger_epochs": args.dagger_epochs, "dagger_envs": args.dagger_envs, "dagger_release": args.dagger_release})
        for r in range(1, args.dagger_rounds + 1)]  # fmt: skip
    for folder, made_with in folders:
        check_cached_demos(folder, made_with)

    def cached(r: int, what: str, make) -> Demonstrations:
        folder, made_with = folders[r]
        if (folder / "frames.npy").is_file():
            console.print(f"reusing {what} from {folder}")
            return Demonstrations.load(folder)
        made = make()
        made.save(folder, made_with=made_with)
        console.print(f"{what}: {len(made)} rows into {folder}")
        return Demonstrations.load(folder)  # memory-mapped frames

    parts = [cached(0, f"{args.episodes} noisy-oracle episodes", lambda: collect_demonstrations(
        args.episodes, seed=args.demo_seed, horizon=args.horizon, frame_every=args.frame_every,
        sigma=args.noise_sigma, prob=args.noise_prob, rigid_release=args.rigid_release,
        handling_words=words, release_frames=args.release_frames))]  # fmt: skip
    from agents.train_vla import train_vla

    # Each folder caches its frames' frozen image features (agents.vla_features): a DAgger round
    # computes only its own frames'.
    report = train_vla(parts[0], cfg, log=console.print, feature_folders=[folders[0][0]])
    rounds = [{"round": 0, "episodes": args.episodes, "rows": len(parts[0]), "epochs": cfg.epochs,
               "eval": report["eval"]}]  # fmt: skip
    for r in range(1, args.dagger_rounds + 1):
        # Round r: the checkpoint drives its own episodes (seeds apart from every other round's),
        # the oracle labels them, and training continues on everything collected so far.
        seed = args.demo_seed + 100_000 * r
        parts.append(cached(r, f"DAgger round {r}",
                            lambda seed=seed: dagger_demonstrations(cfg.out_dir, args.dagger_episodes, seed,
                                                                    horizon=args.horizon, frame_every=args.frame_every,
                                                                    n_envs=args.dagger_envs,
                                                                    rigid_release=args.rigid_release,
                                                                    handling_words=words,
                                                                    label_release=args.dagger_release,
                                                                    release_frames=args.release_frames)))  # fmt: skip
        # Same seed: the held-out split is drawn from it, and must hold out the same episodes.
        round_cfg = replace(cfg, init=cfg.out_dir, epochs=args.dagger_epochs)
        report = train_vla(Demonstrations.concat(parts), round_cfg, log=console.print,
                           feature_folders=[folder for folder, _ in folders[: r + 1]])  # fmt: skip
        rounds.append({"round": r, "episodes": args.dagger_episodes, "rows": len(parts[-1]),
                       "epochs": args.dagger_epochs, "eval": report["eval"]})  # fmt: skip
    # The report beside the checkpoint says how to make it again, every round included.
    recipe = {k: getattr(args, k) for k in DEMO_SETTINGS + DAGGER_SETTINGS}
    write_json(
        Path(cfg.out_dir) / "training_report.json", {**report, "recipe": recipe, "rounds": rounds}
    )
    held = report["eval"]
    console.print({k: held[k] for k in ("frag_slot_acc", "cotrain_acc") if k in held})
    console.print(f"checkpoint: {cfg.out_dir} (training_report.json beside it)")
    return 0


def handling_word_list(text: str) -> tuple[str | None, ...]:
    """'plain,gently,firmly' → (None, 'gently', 'firmly'); ValueError naming a word not allowed."""
    from envs.language import HANDLING_WORDS

    words = [w.strip() for w in str(text).split(",")]
    bad = [w for w in words if w != "plain" and w not in HANDLING_WORDS]
    if bad or not words:
        raise ValueError(f"--handling-words {text!r}: {bad} not allowed; use 'plain' or "
                         f"{', '.join(HANDLING_WORDS)}, comma separated")  # fmt: skip
    return tuple(None if w == "plain" else w for w in words)


def check_cached_demos(folder: Path, made_with: dict) -> None:
    """ValueError when `folder` holds demonstrations made with other settings than `made_with`
    (each differing setting named, with both values); a folder without recorded settings (made
    before they were kept) is reused as it is."""
    from agents.vla_data import Demonstrations

    if not (folder / "frames.npy").is_file():
        return
    have = Demonstrations.made_with_of(folder)
    if have is None:
        return
    have = {
        **SETTINGS_ADDED_LATER,
        **have,
    }  # a folder made before a setting existed had its default
    differ = {k: (have.get(k), v) for k, v in made_with.items() if have.get(k) != v}
    if differ:
        listed = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in differ.items())
        raise ValueError(f"{folder} holds demonstrations made with other settings ({listed}); "
                         "pass another --demos folder or delete it")  # fmt: skip


def register_rewiring(subparsers: argparse._SubParsersAction) -> None:
    """Add `vla-rewiring`."""
    p = subparsers.add_parser(
        "vla-rewiring",
        help="Häon's claims on the tiny VLA: value vectors rewired, action-token share",
    )
    p.add_argument(
        "--vla",
        default="tiny-vla",
        help="VLA checkpoint folder (default: the embedded agents/tiny_vla)",
    )
    p.add_argument(
        "--base",
        default="tiny",
        help="the VLM it was fine-tuned from (default: the embedded tiny VLM)",
    )
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
    for col in (
        "layer",
        "top-1 changed",
        "overlap < half",
        "action share top-k",
        "(vocab)",
        "random: top-1 changed",
    ):
        table.add_column(col)
    for row, ref in zip(report["vla"], report["random_reference"], strict=True):
        table.add_row(str(row["layer"]), f"{row['top1_changed']:.0%}", f"{row['overlap_below_half']:.0%}",
                      f"{row['action_share_topk']:.1%}", f"{row['action_share_vocab']:.1%}", f"{ref['top1_changed']:.0%}")  # fmt: skip
    Console().print(table)
    path = write_json(Path(args.out) / "rewiring.json", report)
    Console().print(f"wrote {path}")
    return 0


def register_study(subparsers: argparse._SubParsersAction) -> None:
    """Add `vla-study`; its flags are VLAStudyConfig's fields (studies.vla.study)."""
    from cli.config_flags import add_config_arguments
    from studies.vla.config import VLAStudyConfig

    p = subparsers.add_parser(
        "vla-study",
        help="graded steering of the VLA's handling: SAE dose response beside its controls",
    )
    add_config_arguments(p, VLAStudyConfig)
    p.set_defaults(func=cmd_vla_study)
    from studies.decodability import DecodabilityConfig

    p = subparsers.add_parser(
        "pi0-decodability",
        help="where a π0 carries material, stream × layer: a cross-color probe and discovery, beside random weights",
    )
    add_config_arguments(p, DecodabilityConfig)
    p.set_defaults(func=cmd_decodability)


def cmd_vla_study(args: argparse.Namespace) -> int:
    """Validate every setting, then build (or reuse) the resources, run (or resume), summarize."""
    from cli.config_flags import config_from_args
    from studies.vla.study import VLAStudyConfig, run_vla_study

    run_vla_study(config_from_args(VLAStudyConfig, args), Console())
    return 0


def cmd_decodability(args: argparse.Namespace) -> int:
    """Validate, then collect (or reuse) the inputs, tap both models, probe and discover."""
    from cli.config_flags import config_from_args
    from studies.decodability import DecodabilityConfig, run_decodability

    run_decodability(config_from_args(DecodabilityConfig, args), Console())
    return 0
