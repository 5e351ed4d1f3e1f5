"""The steering benchmark's figures, per method, paired by seed with 95% intervals
(reports.stats): the effect at the chosen strength, success retained, breakage, side effects,
motion quality, cost and persistence. Controls sit in the same rows, marked as controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from studies.steer_bench.config import SteerBenchConfig, method_condition

METRICS = ("peak_grip_force", "grip_command", "release_height", "carry_speed")


def paired(rows: list[dict[str, Any]], condition: str, metric: str) -> dict[str, Any]:
    """Mean paired change (condition − unsteered) of `metric` with its bootstrap interval."""
    from reports.stats import paired_difference

    def known(v: Any) -> bool:
        return v is not None and np.isfinite(v)

    base = {r["seed"]: r[metric] for r in rows if r["condition"] == "unsteered"}
    pairs = [(base[r["seed"]], r[metric]) for r in rows if r["condition"] == condition and r["seed"] in base
             and known(r[metric]) and known(base[r["seed"]])]  # fmt: skip
    if len(pairs) < 2:
        return {"value": None, "low": None, "high": None, "n": len(pairs)}
    a, b = (np.array(x, dtype=float) for x in zip(*pairs, strict=True))
    return paired_difference(a, b).to_dict()


def rate(rows: list[dict[str, Any]], condition: str, flag: str) -> dict[str, Any]:
    """The share of `condition`'s episodes with `flag` true, with its Wilson interval."""
    from reports.stats import wilson

    values = [bool(r[flag]) for r in rows if r["condition"] == condition]
    return wilson(sum(values), len(values)).to_dict()


def mcnemar_p(rows: list[dict[str, Any]], condition: str, flag: str) -> float | None:
    """Exact McNemar p of `flag` between unsteered and `condition`, paired by seed."""
    from reports.stats import mcnemar

    base = {r["seed"]: bool(r[flag]) for r in rows if r["condition"] == "unsteered"}
    pairs = [
        (base[r["seed"]], bool(r[flag]))
        for r in rows
        if r["condition"] == condition and r["seed"] in base
    ]
    if not pairs:
        return None
    a, b = (np.array(x) for x in zip(*pairs, strict=True))
    return float(mcnemar(a, b))


def motion(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Motion quality of one episode: commanded path length, mean |jerk| of the end-effector
    speed (second difference per step) and gripper chatter (open/close switches)."""
    if len(steps) < 3:
        return {"path_length": float("nan"), "jerk": float("nan"), "chatter": float("nan")}
    a = np.array([[s["a_dx"], s["a_dy"], s["a_dz"]] for s in steps], dtype=float)
    speed = np.array([s["ee_speed"] for s in steps], dtype=float)
    closing = np.array([s["a_grip"] > 0 for s in steps])
    return {"path_length": float(np.linalg.norm(a, axis=1).sum()), "jerk": float(np.abs(np.diff(speed, 2)).mean()),
            "chatter": float(np.count_nonzero(closing[1:] != closing[:-1]))}  # fmt: skip


def action_change(
    by_episode: dict[tuple[str, int], list[dict[str, Any]]], condition: str
) -> dict[str, Any]:
    """Mean |Δ action| per step between `condition` and unsteered on the same seed (the four
    action dimensions, steps both episodes ran), with its bootstrap interval over seeds."""
    from reports.stats import bootstrap_mean

    keys = ("a_dx", "a_dy", "a_dz", "a_grip")
    per_seed = []
    for (cond, seed), steps in by_episode.items():
        base = by_episode.get(("unsteered", seed))
        if cond != condition or not base:
            continue
        n = min(len(steps), len(base))
        a = np.array([[s[k] for k in keys] for s in steps[:n]], dtype=float)
        b = np.array([[s[k] for k in keys] for s in base[:n]], dtype=float)
        per_seed.append(float(np.abs(a - b).mean()))
    if len(per_seed) < 2:
        return {"value": None, "low": None, "high": None, "n": len(per_seed)}
    return bootstrap_mean(np.array(per_seed)).to_dict()


def persistence(
    by_episode: dict[tuple[str, int], list[dict[str, Any]]], condition: str
) -> dict[str, Any]:
    """Does the commanded grip drift back while the steering stays on? The paired change of the
    mean commanded grip over the first and the second half of each episode's closing steps; the
    retained fraction is late / early (1: the effect holds; toward 0: it fades)."""
    early, late = [], []
    for (cond, seed), steps in by_episode.items():
        if cond != condition or ("unsteered", seed) not in by_episode:
            continue
        halves = []
        for episode in (steps, by_episode[("unsteered", seed)]):
            grip = [s["a_grip"] for s in episode if s["a_grip"] > 0]
            if len(grip) < 2:
                break
            half = len(grip) // 2
            halves.append((np.mean(grip[:half]), np.mean(grip[half:])))
        if len(halves) == 2:
            early.append(halves[0][0] - halves[1][0])
            late.append(halves[0][1] - halves[1][1])
    if not early:
        return {"early": None, "late": None, "retained": None, "n": 0}
    e, lt = float(np.mean(early)), float(np.mean(late))
    return {"early": e, "late": lt, "retained": lt / e if abs(e) > 1e-9 else None, "n": len(early)}


def trace(
    by_episode: dict[tuple[str, int], list[dict[str, Any]]], condition: str, key: str = "a_grip"
) -> list:
    """Mean `key` per step index over `condition`'s episodes still running at that step."""
    episodes = [steps for (c, _), steps in by_episode.items() if c == condition]
    length = max((len(e) for e in episodes), default=0)
    return [float(np.mean([e[i][key] for e in episodes if i < len(e)])) for i in range(length)]


def read_steps(run_dir: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(condition, seed) → its step rows, from a finished experiment folder."""
    import pyarrow.parquet as pq

    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in pq.read_table(run_dir / "steps.parquet").to_pylist():
        out.setdefault((row["condition"], int(row["seed"])), []).append(row)
    return out


def summarize(cfg: SteerBenchConfig, names: list[str], fitted: dict[str, Any], fit_rows: list[dict[str, Any]],
              curves: dict[str, list], chosen: dict[str, tuple], target: float, unsteered: float,
              expert_other: float, expert: dict[str, list], offline: dict[str, dict], arms: dict[str, list],
              episodes_dir: Path) -> dict[str, Any]:  # fmt: skip
    """The leaderboard: one row per method and control, and the benchmark's references."""
    from steering.registry import CONTROLS

    steps = read_steps(episodes_dir / "effect")
    other_steps = read_steps(episodes_dir / "other")
    plain_steps = read_steps(episodes_dir / "plain")
    fit = {r["method"]: r for r in fit_rows}
    rows = []
    for name in names:
        cond = method_condition(name, chosen[name][0])
        quality = [motion(s) for (c, _), s in steps.items() if c == cond]
        base_quality = [motion(s) for (c, _), s in steps.items() if c == "unsteered"]
        row = {
            "method": name, "control": name in CONTROLS, "paper": fit[name]["paper"], "condition": cond,
            "strength": chosen[name][0], "target_reached": chosen[name][1],
            "effect": {m: paired(arms["effect"], cond, m) for m in METRICS},
            "effect_by_color": {c: paired([r for r in arms["effect"] if r["color"] == c], cond, "peak_grip_force")
                                for c in sorted({r["color"] for r in arms["effect"]})},
            "p_fragile": paired(arms["effect"], cond, "p_fragile_mean"),
            "success": rate(arms["effect"], cond, "success"),
            "success_unsteered": rate(arms["effect"], "unsteered", "success"),
            "success_p": mcnemar_p(arms["effect"], cond, "success"),
            "broken": rate(arms["breakage"], cond, "broken"),
            "broken_unsteered": rate(arms["breakage"], "unsteered", "broken"),
            "broken_p": mcnemar_p(arms["breakage"], cond, "broken"),
            "other_material": {m: paired(arms["other"], cond, m) for m in ("peak_grip_force", "carry_speed")},
            "other_success": rate(arms["other"], cond, "success"),
            "plain": {"action_change": action_change(plain_steps, cond),
                      "grip_command": paired(arms["plain"], cond, "grip_command"),
                      "carry_speed": paired(arms["plain"], cond, "carry_speed")},
            "motion": {k: float(np.nanmean([q[k] for q in quality])) - float(np.nanmean([q[k] for q in base_quality]))
                       for k in ("path_length", "jerk", "chatter")} if quality and base_quality else {},
            "persistence": persistence(steps, cond),
            "trace": trace(steps, cond),
            "other_persistence": persistence(other_steps, cond),
            "cost": {"units": fit[name].get("units", 1), "fit_rows": fit[name].get("n_rows"),
                     "fit_seconds": fit[name].get("fit_seconds"), "acts_on": fit[name]["acts_on"],
                     "supervision": fit[name]["supervision"], "overhead_ratio": offline[name]["overhead_ratio"]},
            "displacement": {"layer": offline[name]["displacement_layer"], "last": offline[name]["displacement_last"]},
            "dose": [{"strength": s, "effect": e} for s, e in curves[name]],
            "fit_info": {k: v for k, v in fit[name].items() if k not in ("method", "paper")},
        }  # fmt: skip
        rows.append(row)
    references = {
        f"expert on {m} objects": {"peak_grip_force": float(np.mean([r["peak_grip_force"] for r in rs])),
                                   "success": float(np.mean([r["success"] for r in rs])), "n": len(rs)}
        for m, rs in expert.items()
    }  # fmt: skip
    return {"config": cfg.to_dict(), "target_change_N": target, "unsteered_calibration_grip_N": unsteered,
            "expert_other_calibration_grip_N": expert_other, "references": references, "methods": rows,
            "unsteered_trace": trace(steps, "unsteered"),
            "prompting": "not run: the shipped models never read a handling word (issue: language grounding)"}  # fmt: skip
