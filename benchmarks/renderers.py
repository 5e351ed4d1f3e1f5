"""The camera-frame renderers side by side in one run: speed at 384², and whether the tiny VLM
decides the same on each as on one TinyRenderer pass (the frames every shipped model was
trained on).

Renderers: "tiny" (TinyRenderer, one pass over the world: the reference), "tiny-layered" (the
default: the static scene drawn once per camera and size and relit per episode's light, what
moves drawn per frame, joined by depth; envs.layers, envs.relight) and "egl" (PyBullet's EGL plugin: a GPU where the EGL driver has one, else Mesa's
llvmpipe; left out where it does not load). The same labelled frames are rendered by each
(`rollouts.frames.render_labeled_frames`: the same seeds, the gentle expert's episodes in the one
closed loop, a frame after 0-60 steps; the renderer does not touch physics). Per renderer:
- frames/s (gymnasium.utils.performance.benchmark_render, alternating rounds so machine noise
  hits all alike; the ratio of medians to "tiny" is the figure to quote), and the time of an env
  reset with its first frame;
- pixel difference from "tiny" (mean |Δ| per channel, the share of pixels differing at all and
  by > 40 levels);
- the tiny VLM's answer to "is it fragile?": agreement of its thresholded decision (P ≥ 0.5)
  with its decision on the "tiny" frame (Wilson CI), mean |ΔP(fragile)|, and agreement with the
  true material (so a drop can be told from both being wrong). Identical pixels give every
  model identical inputs, the VLA's included.

    nice -n 10 python benchmarks/renderers.py [--frames 200] [--seed 0] [--rounds 3]
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

REFERENCE = "tiny"


def paired_frames(
    renderers: list[str], n: int, seed: int, size: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """{renderer: n frames} of the same scenes and steps (rollouts.frames.render_labeled_frames:
    the gentle expert's episodes, a frame after 0-60 steps), and each frame's true material."""
    frames, labels = {}, []
    for r in renderers:
        frames[r], labels = render_labeled_frames(n, seed, image_size=size, renderer=r)
    return frames, [label["material"] for label in labels]


def speeds(
    renderers: list[str], rounds: int, seconds: float, size: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median frames/s and median seconds of a reset and its first frame (where a renderer
    catches up with a new scene) of each renderer over `rounds` alternating rounds."""
    rates: dict[str, list[float]] = {r: [] for r in renderers}
    resets: dict[str, list[float]] = {r: [] for r in renderers}
    for _ in range(rounds):
        for r in renderers:
            env = FrankaPickEnv(
                render_mode="rgb_array", obs_mode="state", image_size=size, renderer=r
            )
            for seed in range(3):
                start = time.perf_counter()
                env.reset(seed=seed)
                env.render()
                resets[r].append(time.perf_counter() - start)
            rates[r].append(benchmark_render(env, target_duration=seconds))
            env.close()
    return (
        {r: statistics.median(v) for r, v in rates.items()},
        {r: statistics.median(v) for r, v in resets.items()},
    )


def available_renderers() -> list[str]:
    """ "tiny", "tiny-layered", and "egl" where PyBullet's EGL plugin loads."""
    probe = FrankaPickEnv(obs_mode="state", image_size=16, renderer="auto")
    egl = probe.sim.renderer == "egl"
    probe.close()
    return ["tiny", "tiny-layered", *(["egl"] if egl else [])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="paired frames (one episode each)")
    parser.add_argument("--seed", type=int, default=0, help="first env seed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args(argv)
    if args.frames < 1:
        raise SystemExit(f"--frames {args.frames} must be >= 1")

    console = Console()
    renderers = available_renderers()
    fps, reset_s = speeds(renderers, args.rounds, args.seconds, args.size)
    frames, materials = paired_frames(renderers, args.frames, args.seed, args.size)

    from agents.backend import load_vlm

    backend = load_vlm("tiny")
    p = {
        r: np.concatenate([backend.prob_yes(list(f[i : i + 16])) for i in range(0, len(f), 16)])
        for r, f in frames.items()
    }
    decided = {r: v >= 0.5 for r, v in p.items()}
    truth = np.array([m == "fragile" for m in materials])
    n = len(truth)

    def rate(k: int) -> str:
        e = wilson(int(k), n)
        return f"{e.value:.0%} [{e.low:.0%}, {e.high:.0%}]"

    table = Table(title=f"Renderers at {args.size}² ({n} paired frames, seeds {args.seed}-{args.seed + n - 1}; "
                        f"reference: one TinyRenderer pass)")  # fmt: skip
    table.add_column("measure")
    for r in renderers:
        table.add_column(r)
    ref = REFERENCE
    diffs = {
        r: np.abs(frames[r].astype(np.int16) - frames[ref].astype(np.int16)) for r in renderers
    }
    rows = {
        "frames/s (median of rounds)": [f"{fps[r]:.1f}" for r in renderers],
        "frames/s / tiny's": [f"{fps[r] / fps[ref]:.2f}×" for r in renderers],
        "reset + first frame ms (median)": [f"{reset_s[r] * 1000:.0f}" for r in renderers],
        "pixel |Δ| from tiny (mean, levels)": [f"{diffs[r].mean():.2f}" for r in renderers],
        "pixels differing from tiny": [f"{(diffs[r].max(-1) > 0).mean():.2%}" for r in renderers],
        "pixels with |Δ| > 40": [f"{(diffs[r].max(-1) > 40).mean():.2%}" for r in renderers],
        "tiny VLM says fragile = truth": [rate((decided[r] == truth).sum()) for r in renderers],
        "same decision as on tiny (n, 95% CI)": [
            f"{rate((decided[r] == decided[ref]).sum())} (n={n})" for r in renderers
        ],
        "mean |ΔP(fragile)| from tiny": [f"{np.abs(p[r] - p[ref]).mean():.4f}" for r in renderers],
    }
    for name, cells in rows.items():
        table.add_row(name, *cells)
    console.print(table)


if __name__ == "__main__":
    main()
