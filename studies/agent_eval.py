"""Closed-loop evaluation of an agent over color × material (`physteer agent-eval`).

Every combination gets the same number of episodes (env seeds first_seed.., the combination
forced through reset options), run through the one closed loop. The summary gives, per
combination and per material, success and intact rates (Wilson intervals) and the mean peak
grip force (bootstrap interval), and the fragile − rigid gap in peak grip force: how much the
agent's handling depends on the material. The same seed and color draw the same scene for both
materials, so the gap's interval resamples scenes, each with its fragile and rigid episode
(a paired bootstrap).

The pattern control (`object_pattern="plain"`): the same seeds with the material pattern
removed from the frame (envs EnvConfig). If the handling comes from what the agent sees, the
gap shrinks; `gap_ratio` = plain gap / trained gap, with a bootstrap interval over scenes (each
scene's four episodes resampled together).

    rows = run_cells(VLAAgent("tiny-vla"), seeds=25)
    summary = summarize(rows)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import COLORS, MATERIALS
from reports.stats import Estimate, bootstrap_mean, cluster_bootstrap, wilson
from rollouts.episode import ClosedLoop, EpisodeSpec


def run_cells(agent: Any, seeds: int, first_seed: int = 2_000_000, envs: int = 1,
              object_pattern: str = "material", max_steps: int = 200,
              unbreakable: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Run `seeds` episodes per color × material; one row per episode.

    Args:
        agent: any lanes-protocol agent (VLMAgent, VLAAgent, ScriptedAgent).
        seeds: episodes per combination (seeds first_seed .. first_seed + seeds - 1).
        envs: lanes stepped together (one batched forward for the lanes due a decision).
        object_pattern: "material" or "plain" (the material cue removed from the frame).
        max_steps: steps before truncation.
        unbreakable: fragile objects never break (ClosedLoop): the peak grip force is the whole
            grip, not cut short at the breaking threshold.
    """
    loop = ClosedLoop(agent, n_envs=envs, record_decisions=False, object_pattern=object_pattern, max_steps=max_steps,
                      unbreakable=unbreakable)  # fmt: skip
    rows = []
    try:
        for color in COLORS:
            for material in MATERIALS:
                options = {"color": color, "material": material}
                specs = [EpisodeSpec(first_seed + k, options=options) for k in range(seeds)]
                for i in range(0, len(specs), envs):
                    for r in loop.run(specs[i : i + envs]):
                        first = next((s for s in r.steps if s["decided"]), {})
                        rows.append({
                            "color": color, "material": material, "seed": r.spec.seed, "pattern": object_pattern,
                            "success": r.row["success"], "broken": r.row["broken"], "steps": r.row["steps"],
                            "peak_grip_force": r.row["peak_grip_force"], "grip_command": r.row["grip_command"],
                            "carry_speed": r.row["carry_speed"],
                            "release_height": r.row["release_height"],
                            "p_fragile": first.get("p_fragile"), "profile": first.get("profile"),
                        })  # fmt: skip
    finally:
        loop.close()
    return rows


def run_pattern_control(agent: Any, **run: Any) -> list[dict[str, Any]]:
    """The pattern control: `run_cells` on the same seeds with plain objects that never break (a
    break would cut the plain fragile grip short, and the control measures handling); `run`:
    run_cells's other arguments (its `unbreakable` is overridden)."""
    return run_cells(agent, **{**run, "object_pattern": "plain", "unbreakable": True})


def _cell(sel: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(sel)
    return {
        "n": n,
        "success": wilson(sum(r["success"] for r in sel), n).to_dict(),
        "intact": wilson(sum(not r["broken"] for r in sel), n).to_dict(),
        "peak_grip_force": bootstrap_mean(np.array([r["peak_grip_force"] for r in sel], float)).to_dict(),
        "grip_command": bootstrap_mean(np.array([r.get("grip_command") for r in sel], float)).to_dict(),
        "carry_speed": bootstrap_mean(np.array([r["carry_speed"] for r in sel], float)).to_dict(),
        "release_height": bootstrap_mean(np.array([r["release_height"] for r in sel], float)).to_dict(),
    }


def _columns(rows: list[dict[str, Any]], key: str, plain: bool) -> dict[str, np.ndarray]:
    """Row-aligned arrays of one measure: values, is-rigid, is-control and the scene group."""
    return {
        "values": np.array([r.get(key) for r in rows], float),
        "rigid": np.array([r["material"] == "rigid" for r in rows]),
        "plain": np.full(len(rows), plain),
        # The same seed and color draw the same scene for both materials and both patterns.
        "group": np.array([f"{r['color']}/{r['seed']}" for r in rows]),
    }


def _gap_of(values: np.ndarray, rigid: np.ndarray) -> float:
    """Mean rigid value − mean fragile value (finite values only)."""
    ok = np.isfinite(values)
    r, f = values[ok & rigid], values[ok & ~rigid]
    return float(r.mean() - f.mean()) if len(r) and len(f) else float("nan")


def _gap_ratio(values: np.ndarray, rigid: np.ndarray, plain: np.ndarray) -> float:
    # |plain gap| / trained gap: a gap reversed on plain objects is still a gap, not a shrink.
    trained = _gap_of(values[~plain], rigid[~plain])
    return abs(_gap_of(values[plain], rigid[plain])) / trained if trained != 0 else float("nan")


def _paired_estimate(metric: Any, cols: dict[str, np.ndarray], *names: str) -> dict[str, float]:
    """`metric` over the columns `names`, with a bootstrap interval that resamples whole scenes
    (color, seed): the fragile and rigid (and plain) episodes of a scene stay together."""
    arrays = [cols[n] for n in names]
    low, high = cluster_bootstrap(metric, cols["group"], *arrays)
    return Estimate(float(metric(*arrays)), low, high, len(cols["group"])).to_dict()


def summarize(rows: list[dict[str, Any]], control: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per combination and per material: success, intact, peak grip force, carry speed, release
    height (95% intervals); the rigid − fragile gap in mean peak grip force; with `control`
    (the same agent on plain objects), its gap and the ratio of the two gaps."""
    if not rows:
        raise ValueError("no episodes to summarize")
    out: dict[str, Any] = {"cells": {}, "materials": {}}
    for color in COLORS:
        for material in MATERIALS:
            sel = [r for r in rows if r["color"] == color and r["material"] == material]
            if sel:
                out["cells"][f"{color}/{material}"] = _cell(sel)
    for material in MATERIALS:
        out["materials"][material] = _cell([r for r in rows if r["material"] == material])
    for key, name in (("peak_grip_force", "grip_gap"), ("grip_command", "command_gap")):
        cols = _columns(rows, key, plain=False)
        out[name] = _paired_estimate(_gap_of, cols, "values", "rigid")
        if control:
            c_cols = _columns(control, key, plain=True)
            out.setdefault("control", {})[name] = _paired_estimate(_gap_of, c_cols, "values", "rigid")
            both = {k: np.concatenate([cols[k], c_cols[k]]) for k in cols}
            out["control"][f"{name}_ratio"] = _paired_estimate(_gap_ratio, both, "values", "rigid", "plain")
    if control:
        out["control"]["materials"] = {m: _cell([r for r in control if r["material"] == m]) for m in MATERIALS}
        # Peak grip force is censored where a fragile object breaks (the episode ends at ~15 N);
        # the agent's own commanded grip is not, so its gap ratio is the cleaner control.
        out["control"]["gap_ratio"] = out["control"]["grip_gap_ratio"]
    return out
