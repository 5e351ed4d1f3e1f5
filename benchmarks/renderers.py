"""EGL vs TinyRenderer, side by side in one run: speed at 384², and whether the tiny VLM decides
the same on both.

The same labelled frames are rendered twice (`rollouts.frames.render_labeled_frames`: the same
seeds, the gentle expert's episodes in the one closed loop, a frame after 0-60 steps; the
renderer does not touch physics), once with TinyRenderer (what the shipped models were trained
on), once through PyBullet's EGL plugin (`EnvConfig.renderer="egl"`: a GPU where the EGL driver
has one, else Mesa's llvmpipe on the CPU). On each pair it reports:
- frames/s of each renderer (gymnasium.utils.performance.benchmark_render, alternating rounds
  so machine noise hits both alike; the ratio of medians is the figure to quote), and the time
  of an env reset (EGL's builds a fresh client and plugin);
- pixel difference (mean |Δ| per channel, and the share of pixels differing by > 40 levels);
- the tiny VLM's answer to "is it fragile?" on both frames: agreement of the thresholded
  decisions (P ≥ 0.5) with its Wilson CI, and mean |ΔP(fragile)|; the agreement of each
  renderer's decision with the true material is shown beside it, so a drop in agreement can
  be told from both being wrong.

    nice -n 10 python benchmarks/renderers.py [--frames 48] [--seed 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from gymnasium.utils.performance import benchmark_render
from rich.console import Console
from rich.table import Table

from envs import FrankaPickEnv
from reports.stats import wilson
from rollouts.frames import render_labeled_frames

RENDERERS = ("tiny", "egl")


def paired_frames(n: int, seed: int, size: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """{renderer: n frames} of the same scenes and steps (rollouts.frames.render_labeled_frames:
    the gentle expert's episodes, a frame after 0-60 steps), and each frame's true material."""
    frames, labels = {}, []
    for r in RENDERERS:
        frames[r], labels = render_labeled_frames(n, seed, image_size=size, renderer=r)
    return frames, [label["material"] for label in labels]


def speeds(rounds: int, seconds: float, size: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median frames/s and median reset seconds of each renderer over `rounds` alternating
    rounds (an EGL reset builds a fresh client and plugin: envs.sim.Sim.reset says why)."""
    rates: dict[str, list[float]] = {r: [] for r in RENDERERS}
    resets: dict[str, list[float]] = {r: [] for r in RENDERERS}
    for _ in range(rounds):
        for r in RENDERERS:
            env = FrankaPickEnv(
                render_mode="rgb_array", obs_mode="state", image_size=size, renderer=r
            )
            for seed in range(3):
                start = time.perf_counter()
                env.reset(seed=seed)
                resets[r].append(time.perf_counter() - start)
            rates[r].append(benchmark_render(env, target_duration=seconds))
            env.close()
    return (
        {r: statistics.median(v) for r, v in rates.items()},
        {r: statistics.median(v) for r, v in resets.items()},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="paired frames (one episode each)")
    parser.add_argument("--seed", type=int, default=0, help="first env seed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args(argv)
    if args.frames < 1:
        raise SystemExit(f"--frames {args.frames} must be >= 1")

    probe = FrankaPickEnv(obs_mode="state", image_size=16, renderer="auto")
    used = probe.sim.renderer
    probe.close()
    if used != "egl":
        raise SystemExit(
            "PyBullet's EGL plugin does not load on this machine (renderer 'egl'); nothing to compare"
        )

    console = Console()
    fps, reset_s = speeds(args.rounds, args.seconds, args.size)
    frames, materials = paired_frames(args.frames, args.seed, args.size)

    from agents.backend import load_vlm

    backend = load_vlm("tiny")
    p = {
        r: np.concatenate([backend.prob_yes(list(f[i : i + 16])) for i in range(0, len(f), 16)])
        for r, f in frames.items()
    }
    decided = {r: v >= 0.5 for r, v in p.items()}
    truth = np.array([m == "fragile" for m in materials])
    n = len(truth)
    diff = np.abs(frames["egl"].astype(np.int16) - frames["tiny"].astype(np.int16))

    def rate(k: int) -> str:
        e = wilson(int(k), n)
        return f"{e.value:.0%} [{e.low:.0%}, {e.high:.0%}]"

    table = Table(
        title=f"EGL vs TinyRenderer at {args.size}² ({n} paired frames, seeds {args.seed}-{args.seed + n - 1})"
    )
    for col in ("measure", "TinyRenderer", "EGL", "EGL / Tiny or paired"):
        table.add_column(col)
    table.add_row(
        "frames/s (median of rounds)",
        f"{fps['tiny']:.1f}",
        f"{fps['egl']:.1f}",
        f"{fps['egl'] / fps['tiny']:.2f}×",
    )
    table.add_row(
        "reset ms (median)",
        f"{reset_s['tiny'] * 1000:.0f}",
        f"{reset_s['egl'] * 1000:.0f}",
        f"{reset_s['egl'] / reset_s['tiny']:.2f}×",
    )
    table.add_row("pixel |Δ| (mean, levels)", "", "", f"{diff.mean():.1f}")
    table.add_row("pixels with |Δ| > 40", "", "", f"{(diff.max(-1) > 40).mean():.0%}")
    table.add_row(
        "tiny VLM says fragile = truth",
        rate((decided["tiny"] == truth).sum()),
        rate((decided["egl"] == truth).sum()),
        "",
    )
    table.add_row(
        "same decision on both (n, 95% CI)",
        "",
        "",
        f"{rate((decided['tiny'] == decided['egl']).sum())} (n={n})",
    )
    table.add_row("mean |ΔP(fragile)|", "", "", f"{np.abs(p['egl'] - p['tiny']).mean():.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
