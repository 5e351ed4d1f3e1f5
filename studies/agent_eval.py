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

or the whole study as `physteer agent-eval` runs it (validation, episodes with a progress bar,
summary.json): `evaluate_agent(AgentEvalConfig(agent="vla", seeds=25))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.action_tokens import DECODING_RULES, DEFAULT_DECODING
from envs import COLORS, MATERIALS
from rollouts.episode import ClosedLoop, EpisodeSpec


def run_cells(agent: Any, seeds: int, first_seed: int = 2_000_000, envs: int = 1,
              object_pattern: str = "material", max_steps: int = 200,
              unbreakable: bool = False, progress: Callable[[int], Any] | None = None,
              handling: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run `seeds` episodes per color × material; one row per episode.

    Args:
        agent: any lanes-protocol agent (VLMAgent, VLAAgent, ScriptedAgent).
        seeds: episodes per combination (seeds first_seed .. first_seed + seeds - 1).
        envs: lanes stepped together (one batched forward for the lanes due a decision).
        object_pattern: "material" or "plain" (the material cue removed from the frame).
        max_steps: steps before truncation.
        unbreakable: fragile objects never break (ClosedLoop): the peak grip force is the whole
            grip, not cut short at the breaking threshold.
        progress: optional callable(episodes done) after each batch.
        handling: the instructions' handling word (envs.language; None: the plain instruction).
    """
    loop = ClosedLoop(agent, n_envs=envs, record_decisions=False, object_pattern=object_pattern, max_steps=max_steps,
                      unbreakable=unbreakable)  # fmt: skip
    rows = []
    try:
        for color in COLORS:
            for material in MATERIALS:
                options = {"color": color, "material": material}
                if handling is not None:
                    options["handling"] = handling
                specs = [EpisodeSpec(first_seed + k, options=options) for k in range(seeds)]
                for i in range(0, len(specs), envs):
                    for r in loop.run(specs[i : i + envs]):
                        first = next((s for s in r.steps if s["decided"]), {})
                        rows.append({
                            "color": color, "material": material, "seed": r.spec.seed, "pattern": object_pattern,
                            "handling": handling,
                            "success": r.row["success"], "broken": r.row["broken"], "steps": r.row["steps"],
                            "peak_grip_force": r.row["peak_grip_force"], "grip_command": r.row["grip_command"],
                            "carry_speed": r.row["carry_speed"],
                            "release_height": r.row["release_height"],
                            "p_fragile": first.get("p_fragile"), "profile": first.get("profile"),
                        })  # fmt: skip
                    if progress is not None:
                        progress(len(rows))
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
    from reports import stats  # scipy: imported when a summary is made, not with the CLI

    return {
        "n": n,
        "success": stats.wilson(sum(r["success"] for r in sel), n).to_dict(),
        "intact": stats.wilson(sum(not r["broken"] for r in sel), n).to_dict(),
        "peak_grip_force": stats.bootstrap_mean(
            np.array([r["peak_grip_force"] for r in sel], float)
        ).to_dict(),
        "grip_command": stats.bootstrap_mean(
            np.array([r.get("grip_command") for r in sel], float)
        ).to_dict(),
        "carry_speed": stats.bootstrap_mean(
            np.array([r["carry_speed"] for r in sel], float)
        ).to_dict(),
        "release_height": stats.bootstrap_mean(
            np.array([r["release_height"] for r in sel], float)
        ).to_dict(),
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
    from reports import stats

    low, high = stats.cluster_bootstrap(metric, cols["group"], *arrays)
    return stats.Estimate(float(metric(*arrays)), low, high, len(cols["group"])).to_dict()


def summarize(
    rows: list[dict[str, Any]], control: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
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
            out.setdefault("control", {})[name] = _paired_estimate(
                _gap_of, c_cols, "values", "rigid"
            )
            both = {k: np.concatenate([cols[k], c_cols[k]]) for k in cols}
            out["control"][f"{name}_ratio"] = _paired_estimate(
                _gap_ratio, both, "values", "rigid", "plain"
            )
    if control:
        out["control"]["materials"] = {
            m: _cell([r for r in control if r["material"] == m]) for m in MATERIALS
        }
        # Peak grip force is censored where a fragile object breaks (the episode ends at ~15 N);
        # the agent's own commanded grip is not, so its gap ratio is the cleaner control.
        out["control"]["gap_ratio"] = out["control"]["grip_gap_ratio"]
    return out


@dataclass
class AgentEvalConfig:
    """Settings of `physteer agent-eval`.

    Attributes:
        agent: vlm (the planner over the scripted expert), vla (its own action tokens) or pi0
            (a π0 checkpoint's flow-matching chunks; `model` is its folder).
        model: 'tiny' / 'tiny-vla' (the defaults, by agent), a local directory or a cached hub id.
        chunk: VLA or π0 actions executed per forward (None: its horizon or chunk).
        denoise_steps: a π0's flow-matching steps per decision (None: its config's).
        noise_scale: a π0's starting-noise scale in [0, 2] (None: its checkpoint's, else 1).
        blend: a π0's share of the previous decision in each overlapping action, in [0, 1)
            (None: its checkpoint's, else 0; agents.pi0_agent).
        decoding: how the VLA decodes its action tokens (gated: the gripper decided open/closed first).
        object_pattern: material, or plain: the material cue removed from the frame.
        pattern_control: also run the same seeds with plain, unbreakable objects and report the
            grip-force gap ratio.
        unbreakable: fragile objects never break (peak grip force not cut short at the threshold).
        max_steps: steps before truncation.
        seeds: episodes per color × material.
        first_seed: first env seed.
        decide_every: the planner's decision period in steps.
        threshold: the planner's P(fragile) threshold for the gentle profile.
        device: auto, cpu or cuda.
        dtype: float32, float16 or bfloat16.
        oracle: use the ScriptedAgent (reads the true material) instead of a model.
        handling: a handling word in every instruction ("gently", "firmly", ...:
            envs.language.HANDLING_WORDS); None: the plain instruction.
        envs: environments stepped together (batched decisions).
        out: folder for summary.json.
    """

    agent: str = "vlm"
    model: str | None = None
    chunk: int | None = None
    denoise_steps: int | None = None
    noise_scale: float | None = None
    blend: float | None = None
    decoding: str = DEFAULT_DECODING
    object_pattern: str = "material"
    pattern_control: bool = False
    unbreakable: bool = False
    max_steps: int = 200
    seeds: int = 25
    first_seed: int = 2_000_000
    decide_every: int = 10
    threshold: float = 0.5
    device: str = "auto"
    dtype: str = "float32"
    oracle: bool = False
    handling: str | None = None
    envs: int = 1
    out: str = "runs/agent-eval"

    def check(self) -> None:
        """ValueError naming the first bad setting (before any episode)."""
        from envs.language import check_handling_word
        from envs.objects import check_pattern

        check_handling_word(self.handling)
        if self.agent not in ("vlm", "vla", "pi0"):
            raise ValueError(f"agent {self.agent!r}: expected vlm, vla or pi0")
        if self.agent == "pi0" and not self.oracle:
            from agents.pi0_folder import check_pi0_folder

            if self.model is None:
                raise ValueError(
                    "agent pi0 needs --model DIR: a π0 checkpoint folder (agents.pi0_model)"
                )
            check_pi0_folder(
                self.model, self.chunk, self.denoise_steps, self.noise_scale, self.blend
            )
        elif (self.noise_scale, self.blend) != (None, None):
            raise ValueError(f"noise_scale={self.noise_scale!r}, blend={self.blend!r}: only a π0 samples from noise and "
                             f"blends its chunks (agent {self.agent!r})")  # fmt: skip
        if self.decoding not in DECODING_RULES:
            raise ValueError(f"decoding {self.decoding!r}: expected one of {list(DECODING_RULES)}")
        for name in ("seeds", "envs", "max_steps", "decide_every"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not allowed; it must be an int >= 1"
                )
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"chunk={self.chunk!r} is not allowed; it must be an int >= 1 or none")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold!r} is not allowed; it must be in [0, 1]")
        check_pattern(self.object_pattern)
        if self.pattern_control and self.object_pattern != "material":
            raise ValueError(
                "pattern_control compares with the material pattern: leave object_pattern at material"
            )

    def build_agent(self) -> Any:
        """The agent to evaluate (loading a model raises a ValueError naming what is missing)."""
        if self.oracle:
            from agents.protocol import ScriptedAgent

            return ScriptedAgent()
        if self.agent == "pi0":
            from agents.pi0_agent import PI0Agent

            return PI0Agent(self.model, chunk=self.chunk, steps=self.denoise_steps, tap_layer=None,
                            device=self.device, dtype=self.dtype, noise_scale=self.noise_scale, blend=self.blend)  # fmt: skip
        if self.agent == "vla":
            from agents.vla_agent import VLAAgent

            return VLAAgent(self.model or "tiny-vla", chunk=self.chunk, decoding=self.decoding, tap_layer=None,
                            device=self.device, dtype=self.dtype)  # fmt: skip
        from agents.vlm_agent import VLMAgent

        return VLMAgent(self.model or "tiny", decide_every=self.decide_every, threshold=self.threshold,
                        device=self.device, dtype=self.dtype)  # fmt: skip


def evaluate_agent(
    cfg: AgentEvalConfig, progress: Callable[[int, int], Any] | None = None
) -> dict[str, Any]:
    """Check the config, run every cell (and the pattern control), summarize, write
    `<out>/summary.json` (atomically); returns its content. `progress(done, total)` after each batch."""
    import time

    from storage import write_json

    cfg.check()
    agent = cfg.build_agent()
    t0 = time.time()
    total = 4 * cfg.seeds * (2 if cfg.pattern_control else 1)
    run = dict(seeds=cfg.seeds, first_seed=cfg.first_seed, envs=cfg.envs, max_steps=cfg.max_steps,
               unbreakable=cfg.unbreakable, handling=cfg.handling)  # fmt: skip
    rows = run_cells(agent, object_pattern=cfg.object_pattern, **run,
                     progress=progress and (lambda n: progress(n, total)))  # fmt: skip
    control = (run_pattern_control(agent, **run, progress=progress and (lambda n: progress(len(rows) + n, total)))
               if cfg.pattern_control else None)  # fmt: skip
    keys = ("agent", "model", "chunk", "denoise_steps", "noise_scale", "blend", "decoding", "seeds", "first_seed", "decide_every", "threshold",
            "object_pattern", "pattern_control", "unbreakable", "max_steps", "oracle", "handling")  # fmt: skip
    config = {k: v for k, v in asdict(cfg).items() if k in keys}
    doc = {"config": config, "summary": summarize(rows, control), "episodes": rows, "control_episodes": control or [],
           "seconds": time.time() - t0}  # fmt: skip
    write_json(Path(cfg.out) / "summary.json", doc)
    return doc


def print_summary(doc: dict[str, Any], console: Any) -> None:
    """The terminal table of an agent evaluation: rates and peak grip per cell and material."""
    from rich.table import Table

    cfg, summary = doc["config"], doc["summary"]

    def rate(e: dict) -> str:
        return f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"

    table = Table(
        title=f"{cfg['agent']} closed loop, {cfg['seeds']} seeds per combination ({doc.get('seconds', 0):.0f}s)"
    )
    for col in ("cell", "n", "success", "intact", "peak grip N"):
        table.add_column(col)
    cells = [*summary["cells"].items(), *summary["materials"].items(),
             *((f"plain {n}", c) for n, c in (summary.get("control") or {}).get("materials", {}).items())]  # fmt: skip
    for name, c in cells:
        f = c["peak_grip_force"]
        table.add_row(
            name,
            str(c["n"]),
            rate(c["success"]),
            rate(c["intact"]),
            f"{f['value']:.1f} [{f['low']:.1f}, {f['high']:.1f}]",
        )
    console.print(table)
    g = summary["grip_gap"]
    console.print(
        f"rigid − fragile peak grip force: {g['value']:.1f} N [{g['low']:.1f}, {g['high']:.1f}]"
    )
    if summary.get("control"):
        g, r = summary["control"]["grip_gap"], summary["control"]["gap_ratio"]
        console.print(f"plain, unbreakable objects: gap {g['value']:.1f} N [{g['low']:.1f}, {g['high']:.1f}]; "
                      f"plain / trained gap {r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]")  # fmt: skip
        c, r = summary["command_gap"], summary["control"]["command_gap_ratio"]
        console.print(f"commanded grip (mean closing command): gap {c['value']:.2f} [{c['low']:.2f}, {c['high']:.2f}]; "
                      f"plain / trained {r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]")  # fmt: skip
