"""Closed-loop evaluation of an agent over color × material (`physteer agent-eval`).

Every combination gets the same number of episodes (env seeds first_seed.., the combination
forced through reset options), run through the one closed loop. The summary gives, per
combination and per material, success and intact rates (Wilson intervals) and the mean peak
grip force (bootstrap interval), and the fragile − rigid gap in peak grip force: how much the
agent's handling depends on the material.

The pattern control (`object_pattern="plain"`): the same seeds with the material pattern
removed from the frame (envs EnvConfig). If the handling comes from what the agent sees, the
gap shrinks; `gap_ratio` = plain gap / trained gap, with a bootstrap interval over episodes.

    rows = run_cells(VLAAgent("tiny-vla"), seeds=25)
    summary = summarize(rows)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import COLORS, MATERIALS
from rollouts.episode import ClosedLoop, EpisodeSpec
from rollouts.stats import Estimate, bootstrap_ci, bootstrap_mean, wilson


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


def _estimate(statistic: Any, samples: list[np.ndarray]) -> dict[str, float]:
    low, high = bootstrap_ci(statistic, samples)
    return Estimate(float(statistic(*samples)), low, high, int(sum(map(len, samples)))).to_dict()


def _gap_of(rigid: np.ndarray, fragile: np.ndarray) -> float:
    rigid, fragile = rigid[np.isfinite(rigid)], fragile[np.isfinite(fragile)]
    return float(rigid.mean() - fragile.mean()) if len(rigid) and len(fragile) else float("nan")


def _gap_ratio(rigid: np.ndarray, fragile: np.ndarray, c_rigid: np.ndarray, c_fragile: np.ndarray) -> float:
    # |plain gap| / trained gap: a gap reversed on plain objects is still a gap, not a shrink.
    trained = _gap_of(rigid, fragile)
    return abs(_gap_of(c_rigid, c_fragile)) / trained if trained != 0 else float("nan")


def _gap(rows: list[dict[str, Any]], key: str = "peak_grip_force") -> tuple[np.ndarray, np.ndarray]:
    values = {m: np.array([r.get(key) for r in rows if r["material"] == m], float) for m in MATERIALS}
    return values["fragile"], values["rigid"]


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
        fragile, rigid = _gap(rows, key)
        out[name] = _estimate(_gap_of, [rigid, fragile])  # unpaired: the episodes differ
        if control:
            c_fragile, c_rigid = _gap(control, key)
            out.setdefault("control", {})[name] = _estimate(_gap_of, [c_rigid, c_fragile])
            out["control"][f"{name}_ratio"] = _estimate(_gap_ratio, [rigid, fragile, c_rigid, c_fragile])
    if control:
        out["control"]["materials"] = {m: _cell([r for r in control if r["material"] == m]) for m in MATERIALS}
        # Peak grip force is censored where a fragile object breaks (the episode ends at ~15 N);
        # the agent's own commanded grip is not, so its gap ratio is the cleaner control.
        out["control"]["gap_ratio"] = out["control"]["grip_gap_ratio"]
    return out
