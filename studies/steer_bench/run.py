"""`physteer steer-bench`: every steering method, its strength chosen to reach one target effect
on calibration seeds, then scored on evaluation seeds on what the robot physically does.

    physteer steer-bench --agent vla --seeds 20
    physteer steer-bench --agent vlm --methods dom,selective,mine --method-files my_methods.py

1. Fit (studies.steer_bench.fit): labelled frames read at every layer, an SAE and discovery,
   every method fitted on the same rows and saved under methods/.
2. References: the scripted expert on the other material (its grip is where the steering aims)
   and on the steered material (the handling the model already has), on every seed.
3. Calibration (seeds from 10000): unsteered and every method at each strength of its dose
   curve, on unbreakable objects of `material` (a break would cut the grip short). The target
   grip change is `target` × (expert on the other material − unsteered); each method's strength
   is the first on its curve whose mean paired change reaches the target, interpolated between
   the bracketing strengths; a method that never reaches it runs at the strength of its largest
   change, marked "not reached". Then `refine_rounds` rounds of bisection on the same seeds:
   each runs the interpolated strengths, adds them to the curves and interpolates again between
   the measured points that bracket the target (a steep curve is not trusted to be linear).
   Controls: the random direction at the strength DiffMean chose
   (the direction methods share units, so it is norm-matched), random neurons at the neuron
   method's.
4. Evaluation (seeds 0..seeds-1): unsteered and every method at its chosen strength on three
   arms: unbreakable objects of `material` (the effect), breakable ones (breakage) and the other
   material (the side effect on objects that did not need steering); and a fourth, objects of the
   steered material drawn plain (no material pattern: frames without the concept), where any
   change of the actions is a side effect.
5. Summary (studies.steer_bench.summary) and leaderboard (studies.steer_bench.report).
Every stage is an experiment folder under episodes/ that resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from studies.steer_bench.config import CALIBRATION_SEED, SteerBenchConfig, method_condition

#: Evaluation arm → (objects of the steered material?, unbreakable, how objects are drawn).
#: "plain": the steered material without its pattern (frames without the concept).
ARMS = {"effect": (True, True, "material"), "breakage": (True, False, "material"),
        "other": (False, False, "material"), "plain": (True, True, "plain")}  # fmt: skip


def episodes(cfg: SteerBenchConfig, name: str, seeds: list[int], conditions: list[str], material: str,
             unbreakable: bool, agent: str | None = None, progress: bool = True,
             object_pattern: str = "material") -> list[dict[str, Any]]:  # fmt: skip
    """Run (or resume) one experiment of the benchmark; its episode rows."""
    from rollouts.experiment import run_experiment
    from rollouts.logs import RunLog

    exp = cfg.experiment(name, seeds, conditions, material, unbreakable,
                         None if agent == "scripted" else str(cfg.root / "methods"), agent, object_pattern)  # fmt: skip
    return RunLog(run_experiment(exp, progress=progress)).read_episodes().to_pylist()


def mean_effect(
    rows: list[dict[str, Any]], condition: str, metric: str = "peak_grip_force"
) -> float:
    """Mean paired (condition − unsteered) change of `metric` over the seeds both ran."""
    base = {
        r["seed"]: r[metric]
        for r in rows
        if r["condition"] == "unsteered" and r[metric] is not None
    }
    diffs = [r[metric] - base[r["seed"]] for r in rows if r["condition"] == condition and r[metric] is not None
             and r["seed"] in base]  # fmt: skip
    return float(np.mean(diffs)) if diffs else float("nan")


def choose_strength(curve: list[tuple[float, float]], target: float, from_zero: bool = True) -> tuple[float, bool]:  # fmt: skip
    """The strength reaching `target` on a dose curve [(strength, mean change)] ordered from the
    weakest: interpolated between the first pair that brackets it (True), else the strength of
    the largest change in the target's direction (False). With `from_zero` the curve starts at
    (0, 0) (an additive method); without it (a clamp) below its first point there is nothing to
    interpolate toward, and a first point that already reaches the target is chosen as is."""
    sign = 1.0 if target >= 0 else -1.0
    previous = (0.0, 0.0) if from_zero else None
    for strength, effect in curve:
        if np.isfinite(effect) and sign * effect >= sign * target:
            if previous is None:
                return float(strength), True
            (s0, e0), (s1, e1) = previous, (strength, effect)
            frac = 1.0 if e1 == e0 else (target - e0) / (e1 - e0)
            return float(
                f"{s0 + min(1.0, max(0.0, frac)) * (s1 - s0):.4g}"
            ), True  # as the condition prints it
        if np.isfinite(effect):
            previous = (strength, effect)
    finite = [(s, e) for s, e in curve if np.isfinite(e)]
    if not finite:
        return curve[-1][0], False
    return max(finite, key=lambda se: sign * se[1])[0], False


def run_steer_bench(
    cfg: SteerBenchConfig, console: Console | None = None, progress: bool = True
) -> Path:
    """Validate, fit, calibrate, evaluate, summarize; returns the path of leaderboard.json."""
    from steering.registry import CONTROLS
    from storage import write_json
    from studies.steer_bench.fit import (
        build_resources,
        fit_methods,
        offline_measures,
        write_fit_table,
    )
    from studies.steer_bench.report import write_leaderboard
    from studies.steer_bench.summary import summarize

    names = cfg.validate()
    console = console or Console()
    cfg.root.mkdir(parents=True, exist_ok=True)
    write_json(cfg.root / "bench_config.json", asdict(cfg))
    res = build_resources(cfg, console)
    fitted = fit_methods(cfg, names, res, console)
    fit_rows = write_fit_table(fitted, cfg.root / "methods" / "fitted.json")
    doses = {n: fitted[n].dose_strengths(cfg.other) for n in names}
    data = res["data"]
    steered_frames = data.frames[data.frame_material == cfg.material][:4]  # what the run steers
    for n in names:  # a method that moves nothing at its strongest dose stops here, before episodes
        offline_measures(fitted[n], doses[n][-1], res["backend"], steered_frames, seed=0)
    everyone = list(range(CALIBRATION_SEED, CALIBRATION_SEED + cfg.calibration_seeds)) + list(
        range(cfg.seeds)
    )
    expert = {m: episodes(cfg, f"expert-{m}", everyone, ["unsteered"], m, m == cfg.material, "scripted", progress)
              for m in (cfg.material, cfg.other)}  # fmt: skip
    calibration = list(range(CALIBRATION_SEED, CALIBRATION_SEED + cfg.calibration_seeds))
    dose_conditions = ["unsteered", *(method_condition(n, s) for n in names for s in doses[n])]
    console.print(f"calibration: {len(dose_conditions)} conditions × {len(calibration)} seeds")
    cal_rows = episodes(
        cfg, "calibration", calibration, dose_conditions, cfg.material, True, progress=progress
    )
    unsteered = np.mean([r["peak_grip_force"] for r in cal_rows if r["condition"] == "unsteered"])
    expert_other = np.mean(
        [r["peak_grip_force"] for r in expert[cfg.other] if r["seed"] in set(calibration)]
    )
    target = cfg.target * (expert_other - unsteered)
    if np.sign(target) != cfg.direction:
        raise ValueError(f"on calibration seeds the unsteered grip ({unsteered:.1f} N) is already past the scripted "
                         f"expert's on {cfg.other} objects ({expert_other:.1f} N): there is no way toward {cfg.other} "
                         "handling to calibrate to")  # fmt: skip
    curves = {
        n: [(s, mean_effect(cal_rows, method_condition(n, s))) for s in doses[n]] for n in names
    }
    chosen = {
        n: choose_strength(curves[n], target, fitted[n].from_zero)
        for n in names
        if n not in CONTROLS
    }
    for k in range(cfg.refine_rounds):  # bisection: measure the interpolated strengths, again
        todo = {n: s for n, (s, reached) in chosen.items() if reached and s not in dict(curves[n])}
        if not todo:
            break
        rows = episodes(cfg, f"calibration-refine{k + 1}", calibration,
                        ["unsteered", *(method_condition(n, s) for n, s in todo.items())], cfg.material, True,
                        progress=progress)  # fmt: skip
        for n, s in todo.items():
            curves[n] = sorted(
                [*curves[n], (s, mean_effect(rows, method_condition(n, s)))],
                key=lambda p: abs(p[0]),
            )
            chosen[n] = choose_strength(curves[n], target, fitted[n].from_zero)
    for control, reference in (("random", "dom"), ("neuron-random", "neuron")):
        if control in names:
            chosen[control] = (chosen[reference][0], None) if reference in chosen else \
                choose_strength(curves[control], target, fitted[control].from_zero)  # fmt: skip
    for n, (s, _) in chosen.items():
        lo, hi = fitted[n].strength_range
        chosen[n] = (float(min(hi, max(lo, s))), chosen[n][1])
    offline = {
        n: offline_measures(fitted[n], chosen[n][0], res["backend"], res["data"].frames, seed=0)
        for n in names
    }
    eval_seeds = list(range(cfg.seeds))
    conditions = ["unsteered", *(method_condition(n, chosen[n][0]) for n in names)]
    console.print(
        f"evaluation: {len(conditions)} conditions × {cfg.seeds} seeds × {len(ARMS)} arms"
    )
    arms = {arm: episodes(cfg, arm, eval_seeds, conditions, cfg.material if own else cfg.other, unbreakable,
                          progress=progress, object_pattern=pattern)
            for arm, (own, unbreakable, pattern) in ARMS.items()}  # fmt: skip
    summary = summarize(cfg, names, fitted, fit_rows, curves, chosen, target, float(unsteered),
                        float(expert_other), expert, offline, arms, cfg.root / "episodes")  # fmt: skip
    summary["resources"] = {k: v for k, v in res.items() if k not in ("backend", "data")}
    return write_leaderboard(summary, cfg, console)
