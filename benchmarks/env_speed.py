"""Env speed, ours vs panda-gym's PandaPickAndPlace-v3, measured side by side in one run.

Prints steps/s without rendering and frames/s at 384×384 for both, and their ratios. Rounds
alternate between the two envs so machine noise hits both alike; the ratio of medians is the
figure to quote. Uses gymnasium.utils.performance for the timing loops.

    python benchmarks/env_speed.py [--rounds 3] [--seconds 3]

Targets: step rate ≥ 1.5× panda-gym; 384² render rate ≥ 3× panda-gym.
"""

from __future__ import annotations

import argparse
import statistics

import gymnasium as gym
from gymnasium.utils.performance import benchmark_render, benchmark_step
from rich.console import Console
from rich.table import Table

import envs


def make_ours(render: bool) -> gym.Env:
    return gym.make(
        envs.ENV_ID, obs_mode="state", render_mode="rgb_array" if render else None, image_size=384
    )


def make_panda(render: bool) -> gym.Env:
    import panda_gym  # noqa: F401  (registers the envs)

    kwargs = (
        {"render_mode": "rgb_array", "render_width": 384, "render_height": 384} if render else {}
    )
    return gym.make("PandaPickAndPlace-v3", **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    try:
        import panda_gym  # noqa: F401
    except ImportError:
        raise SystemExit(
            "panda-gym is not installed: pip install -c constraints.txt -e '.[bench]'"
        ) from None

    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, make in (("physteer", make_ours), ("panda-gym", make_panda)):
            env = make(render=False)
            results.setdefault((name, "steps/s"), []).append(
                benchmark_step(env, target_duration=args.seconds, seed=0)
            )
            env.close()
            env = make(render=True)
            env.reset(seed=0)
            results.setdefault((name, "frames/s"), []).append(
                benchmark_render(env, target_duration=args.seconds)
            )
            env.close()

    table = Table(
        title=f"Env speed ({args.rounds} alternating rounds of {args.seconds:.0f} s; medians)"
    )
    for col in ("metric", "physteer", "panda-gym", "ratio", "target"):
        table.add_column(col)
    for metric, target in (("steps/s", 1.5), ("frames/s", 3.0)):
        ours = statistics.median(results["physteer", metric])
        peer = statistics.median(results["panda-gym", metric])
        table.add_row(metric, f"{ours:.1f}", f"{peer:.1f}", f"{ours / peer:.2f}×", f"≥ {target}×")
    Console().print(table)


if __name__ == "__main__":
    main()
