"""`physteer run` (an experiment) and `physteer replay` (one logged episode, exactly)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from rollouts.runner import ExperimentConfig, run_experiment


def _seeds(text: str) -> list[int]:
    """"0-19" or "0,3,5" → list of ints."""
    try:
        if "-" in text and "," not in text:
            a, b = text.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds {text!r}: use a range like 0-19 or a list like 0,3,5") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `run` and `replay`."""
    p = subparsers.add_parser("run", help="steered vs unsteered episodes: conditions × paired seeds")
    p.add_argument("--name", default="experiment", help="run folder under --out")
    p.add_argument("--out", default="runs")
    p.add_argument("--conditions", default="unsteered", help="comma-separated, e.g. unsteered,sae:fragility:-2,dom:+4,random:+4")
    p.add_argument("--seeds", type=_seeds, default=list(range(4)), help="e.g. 0-19 or 0,3,5 (default 0-3)")
    p.add_argument("--material", choices=["fragile", "rigid"], default=None, help="force the material of every object")
    p.add_argument("--agent", choices=["vlm", "scripted"], default="vlm")
    p.add_argument("--model", default="tiny", help="'tiny', a local folder or a hub id")
    p.add_argument("--layer", type=int, default=None, help="tap/steering layer (default: 2/3 depth)")
    p.add_argument("--decide-every", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--sae", default=None, help="SAE checkpoint folder (sae:* conditions)")
    p.add_argument("--discovery", default=None, help="discovery.json (sae:fragility:* conditions)")
    p.add_argument("--vector", default=None, help="steering vector .safetensors with 'dom' (dom:/random: conditions)")
    p.add_argument("--monitor", default=None, help="saved SARM scorer folder (e.g. runs/sarm-eval/scorers/sae-mean): run every episode monitored")
    p.add_argument("--on-veto", choices=["hold", "stop"], default="hold")
    p.add_argument("--videos", type=int, default=0, help="record MP4s for the first N seeds")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.set_defaults(func=cmd_run)

    r = subparsers.add_parser("replay", help="re-run a logged episode and check it matches exactly")
    r.add_argument("run", help="run folder, e.g. runs/experiment")
    r.add_argument("episode", help="<condition>/<seed> or a row index of episodes.parquet")
    r.add_argument("--video", default=None, help="also write the replay as this MP4")
    r.set_defaults(func=cmd_replay)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the experiment and print where the logs are."""
    cfg = ExperimentConfig(
        name=args.name, out=args.out, conditions=[c for c in args.conditions.split(",") if c],
        seeds=args.seeds, material=args.material, agent=args.agent, model=args.model, layer=args.layer,
        decide_every=args.decide_every, threshold=args.threshold, sae=args.sae, discovery=args.discovery,
        vector=args.vector, monitor=args.monitor, on_veto=args.on_veto, videos=args.videos, workers=args.workers,
    )
    root = run_experiment(cfg, overwrite=args.overwrite)
    from rollouts.report import steering_report

    steering_report(root, console=Console())
    Console().print(f"Run folder: {os.path.abspath(root)}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay one episode; exit 1 if it does not match the log."""
    from rollouts.replay import replay
    from rollouts.video import write_mp4

    result = replay(args.run, args.episode, video=bool(args.video))
    console = Console()
    ok = result["actions_equal"] and result["outcome_equal"]
    console.print(
        f"{result['condition']}/{result['seed']}: actions {'identical' if result['actions_equal'] else 'DIFFER'}, "
        f"outcome {'identical' if result['outcome_equal'] else 'DIFFERS ' + str(result['differences'])}"
    )
    if args.video and result["frames"]:
        write_mp4(args.video, result["frames"])
        console.print(f"Video: {args.video}")
    return 0 if ok else 1
