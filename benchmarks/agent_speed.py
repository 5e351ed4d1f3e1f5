"""VLMAgent speed with the embedded tiny model, measured side by side in one run.

1. Step latency of `VLMAgent.act` (a VLM decision every step) with and without the residual
   tap: runs alternate (ABAB...) so drift in machine load hits both equally; medians compared.
   Target: tap overhead <= 3%.
2. Dataset-collection throughput of `VLMBackend.batched_prob_yes`: batch 16 vs one image per
   forward, alternating rounds. Target: >= 3x at batch 16.

Usage: python benchmarks/agent_speed.py [--threads 1] [--device cpu] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _fake_info() -> dict:
    return {
        "ee_pos": np.array([0.0, -0.04, 0.22]),
        "object_pos": np.array([0.05, 0.02, 0.03]),
        "bin_pos": np.array([0.1, 0.2, 0.0]),
        "finger_width": 0.08,
        "holding": False,
        "broken": False,
        "object": {"color": "red", "material": "fragile", "shade": "pale", "shape": "cube"},
    }


def _frames(n: int, seed: int = 0) -> np.ndarray:
    try:
        from envs.dataset import render_labeled_frames

        return render_labeled_frames(n, seed=seed)[0]
    except Exception:  # noqa: BLE001 - fall back to noise frames when the env is unavailable
        return np.random.default_rng(seed).integers(0, 256, (n, 384, 384, 3), dtype=np.uint8)


def _backend(device: str):
    from agents.backend import VLMBackend, load_vlm
    from agents.tiny_model import TINY_VLM_DIR, build_tiny_model

    if (TINY_VLM_DIR / "model.safetensors").is_file():
        return load_vlm("tiny", device=device)
    model, processor = build_tiny_model(seed=0)
    return VLMBackend(model.to(device), processor, name="tiny (random init)")


def step_latency(backend, frames: np.ndarray, rounds: int, steps: int) -> dict:
    """Median seconds per VLMAgent.act with and without the tap, alternating step by step.

    Also times the tap's own hook (the work the tap adds), a figure that machine-load noise
    does not blur: `hook_share` = median hook time / median step time.
    """
    from agents.vlm_agent import VLMAgent

    agents = {
        "no_tap": VLMAgent(backend, decide_every=1, tap_layer=None),
        "tap": VLMAgent(backend, decide_every=1, tap_layer="default"),
    }
    tap = agents["tap"].tap
    hook_times: list[float] = []
    inner = tap._hook

    def timed_hook(*args):  # noqa: ANN002 - forwards the torch hook arguments
        t0 = time.perf_counter()
        inner(*args)
        hook_times.append(time.perf_counter() - t0)

    tap._hook = timed_hook
    tap.remove()
    tap.attach(backend)  # re-register with the timed hook
    info = _fake_info()
    times: dict[str, list[float]] = {k: [] for k in agents}
    for agent in agents.values():
        agent.reset(0)
    tap.remove()
    for i in range(rounds * steps + 2):
        order = ("tap", "no_tap") if i % 2 else ("no_tap", "tap")
        for name in order:
            if name == "tap":  # only the measured agent's hooks are live on the shared model
                tap.attach(backend)
            t0 = time.perf_counter()
            agents[name].act({"image": frames[i % len(frames)]}, info)
            elapsed = time.perf_counter() - t0
            if name == "tap":
                tap.remove()
            if i >= 2:  # the first two pairs warm up
                times[name].append(elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}
    hook = statistics.median(hook_times[2:])
    return {
        "median_s_no_tap": med["no_tap"],
        "median_s_tap": med["tap"],
        "tap_overhead": med["tap"] / med["no_tap"] - 1.0,
        "median_s_tap_hook": hook,
        "hook_share": hook / med["tap"],
        "steps_each": len(times["tap"]),
    }


def batch_throughput(backend, frames: np.ndarray, rounds: int, batch: int = 16) -> dict:
    """Images per second, batch `batch` vs one-by-one, over the same frames, alternating."""
    frames = frames[:batch]
    backend.batched_prob_yes(frames, batch_size=batch)  # warm-up
    t_batched, t_single = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        backend.batched_prob_yes(frames, batch_size=batch)
        t_batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        backend.batched_prob_yes(frames, batch_size=1)
        t_single.append(time.perf_counter() - t0)
    b, s = statistics.median(t_batched), statistics.median(t_single)
    return {
        "images_per_s_batched": batch / b,
        "images_per_s_one_by_one": batch / s,
        "speedup": s / b,
        "batch": batch,
    }


def main() -> None:
    """Run both measurements and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="agent steps per round and variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = _backend(args.device)
    frames = _frames(16)
    result = {
        "model": backend.name,
        "device": str(backend.device),
        "threads": torch.get_num_threads(),
        "step_latency": step_latency(backend, frames, args.rounds, args.steps),
        "batch_throughput": batch_throughput(backend, frames, args.rounds),
    }
    lat, thr = result["step_latency"], result["batch_throughput"]
    print(
        f"VLMAgent step: {lat['median_s_no_tap'] * 1e3:.1f} ms without tap, "
        f"{lat['median_s_tap'] * 1e3:.1f} ms with tap: overhead {lat['tap_overhead'] * 100:+.1f}% "
        f"(target <= 3%); the tap hook itself takes {lat['median_s_tap_hook'] * 1e6:.0f} us "
        f"= {lat['hook_share'] * 100:.2f}% of a step"
    )
    print(
        f"forward throughput: {thr['images_per_s_batched']:.1f} img/s at batch {thr['batch']} vs "
        f"{thr['images_per_s_one_by_one']:.1f} img/s one by one: {thr['speedup']:.2f}x (target >= 3x)"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
