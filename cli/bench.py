"""`physteer bench`: episodes/min per executor (ratios to serial), the planner beside the VLA, and
each component's share of an episode's time."""

from __future__ import annotations

import argparse
import statistics

from rich.console import Console
from rich.table import Table

SECTIONS = ("executors", "agents")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    p = subparsers.add_parser(
        "bench",
        help="closed-loop episodes/min per executor and per agent, and where a step's time goes",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma list of what to measure (default: all): {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=8,
        help="episodes per executor variant and round (default 8)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating rounds of every variant and agent (default 1)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma list of executor variants (default: all): serial, '2 processes', ...",
    )
    p.add_argument(
        "--model", default="tiny", help="the planner's VLM (default: the embedded tiny VLM)"
    )
    p.add_argument(
        "--agent-episodes", type=int, default=4, help="episodes per agent and round (default 4)"
    )
    p.add_argument(
        "--agent-workers",
        type=int,
        default=2,
        help="worker processes of the agent comparison (default 2)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=200,
        help="steps before truncation in the agent comparison (default 200)",
    )
    p.add_argument(
        "--vla-model",
        default="tiny",
        help="the VLA checkpoint (default: the embedded agents/tiny_vla)",
    )
    p.add_argument(
        "--pi0-model",
        default=None,
        help='a π0 ("tiny": the shipped agents/tiny_pi0, or a checkpoint folder): adds a π0 row to the agent comparison',
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="actions the VLA executes per forward (default: its horizon)",
    )
    p.add_argument(
        "--no-monitor", action="store_true", help="agent comparison without the shadow SAE scorer"
    )
    p.add_argument(
        "--renderers",
        default="tiny,tiny-layered",
        help="comma list of camera-frame renderers each agent runs with, side by side "
        "(default: the one-pass tiny beside the default tiny-layered)",
    )
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_bench)


def _check(args: argparse.Namespace) -> list[str]:
    """ValueError naming the first bad flag; returns the sections to run."""
    from studies.bench import VARIANTS

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not sections or any(s not in SECTIONS for s in sections):
        raise ValueError(f"--sections {args.sections!r}: choose from {list(SECTIONS)}")
    for flag, value in (("--episodes", args.episodes), ("--rounds", args.rounds), ("--agent-episodes", args.agent_episodes),
                        ("--agent-workers", args.agent_workers), ("--max-steps", args.max_steps)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{flag} ({value}) must be >= 1")
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk ({args.chunk}) must be >= 1 (or left out: the VLA's horizon)")
    for n in [v.strip() for v in args.variants.split(",")] if args.variants else []:
        if n not in VARIANTS:
            raise ValueError(f"variant {n!r} is unknown; choose from {list(VARIANTS)}")
    from envs.sim import RENDERERS

    renderers = [r.strip() for r in args.renderers.split(",") if r.strip()]
    if not renderers or any(r not in RENDERERS for r in renderers):
        raise ValueError(f"--renderers {args.renderers!r}: choose from {list(RENDERERS)}")
    if "agents" in sections:  # the VLA checkpoint, before anything runs
        from rollouts.experiment_config import ExperimentConfig

        ExperimentConfig(
            agent="vla", model=args.vla_model, chunk=args.chunk, max_steps=args.max_steps
        ).validate()
    return sections


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure and print the figures."""
    from studies.bench import demo_wall_time

    sections = _check(args)
    console, doc = Console(), {}
    if "executors" in sections:
        with console.status("measuring episodes/min per executor (alternating rounds)"):
            doc["executors"] = _executors(args, console)
    if "agents" in sections:
        with console.status("measuring the planner beside the VLA (alternating rounds)"):
            doc["agents"] = _agents(args, console)
    wall = demo_wall_time()
    console.print(
        f"demo wall time: {wall / 60:.1f} min (runs/demo/summary.json)"
        if wall
        else "demo wall time: run `physteer demo` first"
    )
    if args.json:
        from storage import write_json

        console.print(f"wrote {write_json(args.json, doc)}")
    return 0


def _executors(args: argparse.Namespace, console: Console) -> dict:
    from studies.bench import VARIANTS, throughput

    names = [v.strip() for v in args.variants.split(",")] if args.variants else list(VARIANTS)
    if names[0] != "serial":
        names = ["serial", *[n for n in names if n != "serial"]]
    rates = throughput(args.episodes, args.model, args.rounds, {n: VARIANTS[n] for n in names})
    base = statistics.median(rates["serial"])
    table = Table(
        title=f"Closed loop ({args.model}, 384², no video), {args.episodes} episodes × {args.rounds} round(s), start-up included"
    )
    for col in ("variant", "episodes/min (median)", "ratio to serial"):
        table.add_column(col)
    for name, values in rates.items():
        med = statistics.median(values)
        table.add_row(name, f"{med:.1f}", f"{med / base:.2f}×")
    console.print(table)
    return {"episodes": args.episodes, "rounds": args.rounds, "episodes_per_min": rates}


def _agents(args: argparse.Namespace, console: Console) -> dict:
    from studies.bench import COMPONENTS, VLA_TARGET, compare_agents

    renderers = tuple(r.strip() for r in args.renderers.split(",") if r.strip())
    runs = compare_agents(args.agent_episodes, args.rounds, args.agent_workers, args.max_steps,
                          models={"vlm": args.model, "vla": args.vla_model, "pi0": args.pi0_model}, chunk=args.chunk,
                          monitor=not args.no_monitor, renderers=renderers)  # fmt: skip
    base = next(iter(runs.values()))
    first = {r.agent: r for r in reversed(list(runs.values())) if r.renderer == renderers[0]}
    shadow = "no monitor" if args.no_monitor else "SAE scorer in shadow mode"
    table = Table(title=f"Planner vs VLA: {args.agent_workers} worker process(es), 384², no video, {shadow}; "
                        f"{args.agent_episodes} episodes × {args.rounds} round(s), same seeds")  # fmt: skip
    table.caption = (
        "eps/min: episodes/min; wall: start-up included; in loop: workers × 60 / mean episode s"
    )
    for col in (
        "agent",
        "eps/min wall",
        "ratio",
        f"vs {renderers[0]}",
        "eps/min in loop",
        "ratio",
        "steps/ep",
        "ms/step",
    ):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for name, run in runs.items():
        same = first[run.agent]
        table.add_row(name, f"{run.rate:.1f}", f"{run.rate / base.rate:.2f}×", f"{run.rate / same.rate:.2f}×",
                      f"{run.loop_rate:.1f}", f"{run.loop_rate / base.loop_rate:.2f}×", f"{run.steps_per_episode:.0f}",
                      f"{run.ms_per_step:.1f}")  # fmt: skip
    console.print(table)
    table = Table(
        title="Share of episode wall time per component (rows' own timings)",
        caption="(ms per step)",
    )
    table.add_column("component")
    for name in runs:
        table.add_column(name, justify="right")
    doc = {name: run.summary() for name, run in runs.items()}
    for comp in [*COMPONENTS, "other"]:
        cells = [
            f"{doc[n]['shares'][comp]:.0%} ({doc[n]['shares'][comp] * r.ms_per_step:.1f})"
            for n, r in runs.items()
        ]
        table.add_row(comp, *cells)
    console.print(table)
    vla = next(r for r in reversed(list(runs.values())) if r.agent == "vla")  # the last renderer's
    verdict = (
        ("met" if vla.rate >= VLA_TARGET else "not met")
        if args.agent_workers == 2
        else "measure with 2 workers"
    )
    console.print(f"VLA: {vla.rate:.1f} episodes/min with {args.agent_workers} worker(s), start-up included "
                  f"({vla.loop_rate:.1f} in loop); target >= {VLA_TARGET:.0f} with 2 workers: {verdict}")  # fmt: skip
    return doc
