"""VLMAgent speed with the embedded tiny model, measured side by side in one run.

1. Step latency of `VLMAgent.act` (a VLM decision every step) with and without the residual
   tap: runs alternate (ABAB...) so drift in machine load hits both equally; medians compared.
   Target: tap overhead <= 3%. Runs at the first of `--threads`.
2. Dataset-collection throughput: the VLM stage of `physteer collect`
   (`studies.collect.image_token_activations`: preprocessing, forward, tap, copy to CPU) at
   batch 16 vs one image per forward, over the same frames. Target (issue #3): >= 3x at batch 16.
   Every variant runs once per round, in an order that reverses each round: thread count
   (each of `--threads`) x inputs (the processor's own, and `VLMBackend`'s verified fast path,
   which is what collection uses) x batch (1, 16). Per thread count it reports the median over
   rounds of the paired ratio one-by-one time / batched time, and "best vs best": batched at its
   fastest thread count vs one-by-one at its fastest, the comparison that decides how to collect.
   Also reported: the cores other processes used during each run, and the ratio over the
   quiet rounds alone (on a shared machine a busy core stalls every multi-threaded op, and
   one by one runs ~15x more ops per image, so contended multi-thread ratios mostly measure
   the stalls), and the rendering time per frame (the rest of collection, the same at any
   batch size).
3. Decision latency, VLA vs planner: `VLAAgent.act` with chunk 1 (one forward per step, the
   embedded agents/tiny_vla: its prompt adds state tokens and it reads a chunk of action
   slots) beside `VLMAgent.act` (decide_every 1), both with their taps, alternating step by
   step on the same frames; medians and their ratio. `physteer bench` measures the closed
   loop of both (episodes/min, time shares); this isolates the forward.

Usage: python benchmarks/agent_speed.py [--threads 1,2] [--device cpu] [--rounds 5] [--skip-vla]
"""

from __future__ import annotations

import argparse
import json
import os
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
        "instruction": "Put the red object in the bin.",
        "holding": False,
        "broken": False,
        "object": {"color": "red", "material": "fragile", "shade": "pale", "shape": "cube"},
    }


def _frames(n: int, seed: int = 0) -> tuple[np.ndarray, float | None]:
    """`n` rendered frames and the seconds per rendered frame (None for the noise fallback)."""
    try:
        from rollouts.frames import render_labeled_frames

        t0 = time.perf_counter()
        frames = render_labeled_frames(n, seed=seed)[0]
        return frames, (time.perf_counter() - t0) / n
    except Exception:  # noqa: BLE001 - fall back to noise frames when the env is unavailable
        return np.random.default_rng(seed).integers(0, 256, (n, 384, 384, 3), dtype=np.uint8), None


class OtherLoad:
    """CPU time used by other processes between `start` and `stop`, in cores (Linux only).

    Busy time of the whole machine (/proc/stat, hypervisor steal included) minus this
    process's own CPU time (all its threads, spinning ones too).
    """

    def start(self) -> OtherLoad:
        """Start the interval."""
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), time.process_time()
        return self

    def stop(self) -> float | None:
        """Average cores used by other processes since `start`; None where unknown."""
        busy = self._busy()
        if busy is None or self._busy0 is None:
            return None
        own = time.process_time() - self._own0
        return max(0.0, (busy - self._busy0 - own) / (time.perf_counter() - self._t0))

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


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


def vla_decision_latency(backend, frames: np.ndarray, rounds: int, steps: int, device: str) -> dict:
    """Median seconds per decision of the VLA (chunk 1) and of the planner, alternating.

    Returns the two medians, their ratio (VLA / planner) and the decisions timed per agent.
    """
    from agents.vla_agent import VLAAgent
    from agents.vlm_agent import VLMAgent

    agents = {
        "planner": VLMAgent(backend, decide_every=1),
        "vla": VLAAgent("tiny-vla", chunk=1, device=device),
    }
    info = _fake_info()
    state = np.zeros(17, dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in agents}
    for agent in agents.values():
        agent.reset(0)
    try:
        for i in range(rounds * steps + 2):
            obs = {"image": frames[i % len(frames)], "state": state}
            for name in ("vla", "planner") if i % 2 else ("planner", "vla"):
                t0 = time.perf_counter()
                agents[name].act(obs, info)
                if i >= 2:  # the first two pairs warm up
                    times[name].append(time.perf_counter() - t0)
    finally:
        for agent in agents.values():
            agent.tap.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s_planner": med["planner"], "median_s_vla": med["vla"],
            "vla_over_planner": med["vla"] / med["planner"], "decisions_each": len(times["vla"])}  # fmt: skip


#: A round is "quiet" when other processes used less than this many cores during both runs.
QUIET_CORES = 0.25


def collection_throughput(
    backend, frames: np.ndarray, rounds: int, threads: list[int], batch: int = 16
) -> dict:
    """Seconds per `batch` frames of collection's VLM stage, batch `batch` vs one by one.

    Variants: thread count x inputs ("processor" or "fast") x batch size, each timed once per
    round, in an order that reverses every round; the tap is attached as in collection. Each
    run also records the cores other processes used meanwhile, so that ratios can be read
    over the quiet rounds too (a busy core stalls every multi-threaded op).
    """
    from agents.taps import ResidualTap
    from agents.vlm_agent import default_tap_layer
    from studies.collect import image_token_activations

    frames = frames[:batch]
    variants = [(t, inp, bs) for t in threads for inp in ("processor", "fast") for bs in (1, batch)]
    times: dict[tuple, list[float]] = {v: [] for v in variants}
    loads: dict[tuple, list[float | None]] = {v: [] for v in variants}
    fast_default = backend.fast_inputs

    def run(variant: tuple) -> tuple[float, float | None]:
        n_threads, inputs, bs = variant
        torch.set_num_threads(n_threads)
        backend.fast_inputs = inputs == "fast"
        load = OtherLoad().start()
        t0 = time.perf_counter()
        for _ in image_token_activations(backend, tap, frames, bs):
            pass
        return time.perf_counter() - t0, load.stop()

    tap = ResidualTap(default_tap_layer(backend.n_layers), include_last=False).attach(backend)
    try:
        for variant in variants:  # warm-up: thread pools, the fast path's recipe
            run(variant)
        for r in range(rounds):
            for variant in variants if r % 2 == 0 else variants[::-1]:
                elapsed, other = run(variant)
                times[variant].append(elapsed)
                loads[variant].append(other)
    finally:
        tap.remove()
        backend.fast_inputs = fast_default
    known = [x for v in loads.values() for x in v if x is not None]
    out: dict = {
        "batch": batch,
        "rounds": rounds,
        "other_processes_cores": statistics.mean(known) if known else None,
        "quiet_cores": QUIET_CORES,
        "threads": {},
    }
    for t in threads:
        row = {}
        for inp in ("processor", "fast"):
            single, batched = times[(t, inp, 1)], times[(t, inp, batch)]
            ratios = [s / b for s, b in zip(single, batched, strict=True)]
            other = [
                None if a is None or b is None else max(a, b)
                for a, b in zip(loads[(t, inp, 1)], loads[(t, inp, batch)], strict=True)
            ]
            quiet = [
                x for x, o in zip(ratios, other, strict=True) if o is not None and o < QUIET_CORES
            ]
            row[inp] = {
                "images_per_s_one_by_one": batch / statistics.median(single),
                "images_per_s_batched": batch / statistics.median(batched),
                "speedup": statistics.median(ratios),
                "speedup_quiet": statistics.median(quiet) if quiet else None,
                "quiet_rounds": len(quiet),
                "speedup_per_round": ratios,
                "other_cores_per_round": other,
            }
        out["threads"][t] = row
    fast = {t: out["threads"][t]["fast"] for t in threads}
    best_single = max(threads, key=lambda t: fast[t]["images_per_s_one_by_one"])
    best_batched = max(threads, key=lambda t: fast[t]["images_per_s_batched"])
    out["best_vs_best"] = {
        "one_by_one_threads": best_single,
        "batched_threads": best_batched,
        "speedup": fast[best_batched]["images_per_s_batched"]
        / fast[best_single]["images_per_s_one_by_one"],
    }
    return out


def main() -> None:
    """Run both measurements and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated torch CPU thread counts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="agent steps per round and variant")
    ap.add_argument("--skip-latency", action="store_true", help="only the throughput measurement")
    ap.add_argument("--skip-vla", action="store_true", help="no VLA vs planner decision latency")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    backend = _backend(args.device)
    frames, render_s = _frames(16)
    result = {"model": backend.name, "device": str(backend.device), "threads": threads}
    if not args.skip_latency:
        result["step_latency"] = step_latency(backend, frames, args.rounds, args.steps)
        lat = result["step_latency"]
        print(
            f"VLMAgent step ({threads[0]} thread(s)): {lat['median_s_no_tap'] * 1e3:.1f} ms "
            f"without tap, {lat['median_s_tap'] * 1e3:.1f} ms with tap: overhead "
            f"{lat['tap_overhead'] * 100:+.1f}% (target <= 3%); the tap hook itself takes "
            f"{lat['median_s_tap_hook'] * 1e6:.0f} us = {lat['hook_share'] * 100:.2f}% of a step"
        )
    from agents.vla_model import TINY_VLA_DIR

    if not args.skip_vla and (TINY_VLA_DIR / "config.json").is_file():
        result["vla_decision"] = vla = vla_decision_latency(
            backend, frames, args.rounds, args.steps, args.device
        )
        print(
            f"decision ({threads[0]} thread(s)): VLA {vla['median_s_vla'] * 1e3:.1f} ms vs planner "
            f"{vla['median_s_planner'] * 1e3:.1f} ms: {vla['vla_over_planner']:.2f}x "
            f"(medians of {vla['decisions_each']} alternating decisions each)"
        )
    elif not args.skip_vla:
        print(f"VLA decision latency skipped: no checkpoint in {TINY_VLA_DIR} (physteer train-vla)")
    thr = collection_throughput(backend, frames, args.rounds, threads)
    result["collection_throughput"] = thr
    result["render_s_per_frame"] = render_s
    for t, row in thr["threads"].items():
        for inp, r in row.items():
            rounds = ", ".join(
                f"{x:.2f}" + ("" if o is None else f" ({o:.1f})")
                for x, o in zip(r["speedup_per_round"], r["other_cores_per_round"], strict=True)
            )
            quiet = (
                f"; {r['speedup_quiet']:.2f}x over {r['quiet_rounds']} quiet round(s)"
                if r["quiet_rounds"]
                else "; no quiet round"
            )
            print(
                f"collection, {t} thread(s), {inp} inputs: {r['images_per_s_batched']:.1f} img/s "
                f"at batch {thr['batch']} vs {r['images_per_s_one_by_one']:.1f} img/s one by one: "
                f"{r['speedup']:.2f}x median of rounds [ratio (other cores): {rounds}]{quiet} "
                "(target >= 3x)"
            )
    best = thr["best_vs_best"]
    print(
        f"best vs best: batch {thr['batch']} at {best['batched_threads']} thread(s) vs one by one "
        f"at {best['one_by_one_threads']} thread(s): {best['speedup']:.2f}x"
    )
    if thr["other_processes_cores"] is not None:
        print(
            f"other processes used {thr['other_processes_cores']:.2f} cores on average meanwhile "
            f"(a quiet round: < {thr['quiet_cores']} cores during both of its runs)"
        )
    if render_s is not None:
        vlm_s = 1.0 / thr["threads"][best["one_by_one_threads"]]["fast"]["images_per_s_one_by_one"]
        print(
            f"rendering takes {render_s * 1e3:.0f} ms per frame (once, not alternated) vs "
            f"{vlm_s * 1e3:.0f} ms of VLM one by one: collection end to end is mostly rendering"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
