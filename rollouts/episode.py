"""The one closed loop: every command runs its episodes through `ClosedLoop.run`.

One control step, for every environment (lane) of a batch at once:

    condition.update(step)                  steering / perturbation switched on at its onset
    frame = env.render()                    only when the agent needs it or a recorder asks
    actions = agent.act_batch(...)          the lanes due a decision answered in ONE forward
    lane tap views ← tap.latest_batch rows  what each lane's monitors score
    recorders.after_act(view)               e.g. the holding state, a labelled frame
    env.step(action)                        through the lane's monitors (shadow, or enforcing)
    step row, video frame, recorders.after_step(view)

Each lane has its own env (own PyBullet client), its own per-episode agent state (lanes of the
agent), its own monitors and its own *tap view*: the activations of the forward that made its
last decision. Monitors read only that view, so a forward made to record (the holding state,
which runs under the episode's condition like every forward of the agent) never reaches a
monitor and never changes what it scores. Lanes of one batch share the condition (its model
edit is one set of hooks) and step in lockstep from step 0, so an onset means the same step in
every lane; a lane whose episode ends drops out. An episode's result does not depend on the
batch it ran in (up to the float summation order of a batched matmul).

    loop = ClosedLoop(VLMAgent("tiny"), n_envs=4)
    records = loop.run([EpisodeSpec(seed=s, condition=parse_condition("dom:+2")) for s in range(4)])
    records[0].row["success"], records[0].steps[0], records[0].activations["decision"].shape
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from envs import FrankaPickEnv
from envs.expert import BIN_REACH
from envs.fragility import FragilityConfig
from envs.sim import DEFAULT_RENDERER
from rollouts.conditions import Condition, ConditionEffect, SteeringResources, parse_condition
from rollouts.recorders import HoldingState, Recorder, StepView, TapView
from rollouts.video import annotate

UNSTEERED = parse_condition("unsteered")
#: Timing columns of an episode row: they differ between runs and are left out of comparisons.
TIMING_COLUMNS = ("wall_s", "render_s", "agent_s", "monitor_s", "physics_s")
#: Step-row columns of an agent's own uncertainty at its decisions, where it reports them (the
#: VLA: agents.vla_agent.action_entropy, chunk_change; NaN between decisions).
SIGNAL_COLUMNS = ("action_entropy", "chunk_change", "sample_variance")
#: Step-row columns of the action the env executed, where a monitor may replace the agent's.
EXECUTED_COLUMNS = ("x_dx", "x_dy", "x_dz", "x_grip")


@dataclass(frozen=True)
class EpisodeSpec:
    """What defines one episode (with the loop's settings): its seed, condition, env options,
    the monitor whose vetoes are enforced ("none": every monitor only scores) and whether to
    record video frames."""

    seed: int
    condition: Condition = UNSTEERED
    options: dict[str, Any] | None = None
    monitor: str = "none"
    video: bool = False


@dataclass
class EpisodeRecord:
    """The result of one episode.

    Attributes:
        spec: what was run.
        row: one dict of outcomes (success, broken, peak force, P(fragile), vetoes, timings...).
        steps: one dict per step (action, P(fragile), holding, force, each monitor's score...).
        activations: "decision" (n_decisions × n_tokens × d), "decision_steps",
            "n_image_tokens", and "holding" (n_tokens × d) when recorded.
        frames: annotated video frames (when spec.video).
        extra: what each recorder returned, by recorder name.
    """

    spec: EpisodeSpec
    row: dict[str, Any]
    steps: list[dict[str, Any]]
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    frames: list[np.ndarray] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class ClosedLoop:
    """N environments, one agent, optional monitors: runs batches of episodes (module docstring).

    Args:
        agent: an agent with the lanes protocol (agents.protocol).
        n_envs: environments stepped together (the largest batch).
        image_size: camera frame side.
        max_steps: steps before truncation.
        resources: SteeringResources for the conditions (None: only unsteered and frame/prompt
            perturbations).
        layer: decoder layer of residual edits (default: the agent's tap layer).
        scorers: monitor name → fitted, calibrated scorer. Every scorer scores every decision
            (shadow mode); the one named by a spec's `monitor` also enforces its vetoes.
        on_veto: "hold", "stop" or "fallback" (monitors.sarm.SARMMonitor).
        tokens: rows a monitor scores: "image" or "all" (+ the last token).
        record_decisions: keep each decision's activations.
        record_holding: add the HoldingState recorder.
        recorders: callable(spec) → list of extra Recorder instances for an episode.
        object_pattern: how objects are drawn, "material" or "plain" (envs EnvConfig).
        renderer: camera frames from "tiny-layered" (default), "tiny", "egl" or "auto" (envs EnvConfig).
        explainer: a monitors.explain.FeatureExplainer naming the SAE latents behind each alarm
            (step column `explain:<monitor>`), or None.
        unbreakable: fragile objects never break (envs FragilityConfig threshold = inf; forces
            are still tracked): a fragile object's peak grip force is then the whole grip, not
            cut short at the breaking threshold. Everything else is unchanged.
    """

    def __init__(self, agent: Any, n_envs: int = 1, image_size: int = 384, max_steps: int = 200,
                 resources: SteeringResources | None = None, layer: int | None = None,
                 scorers: dict[str, Any] | None = None, on_veto: str = "hold", tokens: str = "image",
                 record_decisions: bool = True, record_holding: bool = False,
                 recorders: Any = None, object_pattern: str = "material", renderer: str = DEFAULT_RENDERER,
                 unbreakable: bool = False, explainer: Any = None) -> None:  # fmt: skip
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs={n_envs!r}: expected an int >= 1")
        self.agent = agent
        physics = {"fragility": FragilityConfig(threshold=math.inf)} if unbreakable else {}
        self.envs = [FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=image_size,
                                   max_steps=max_steps, object_pattern=object_pattern, renderer=renderer, **physics)
                     for _ in range(n_envs)]  # fmt: skip
        self.resources = resources or SteeringResources()
        tap = getattr(agent, "tap", None)
        self.layer = layer if layer is not None else getattr(tap, "layer", None)
        self.scorers = dict(sorted((scorers or {}).items()))
        self.explainer = explainer
        self.on_veto, self.tokens = on_veto, tokens
        self.record_decisions, self.record_holding = record_decisions, record_holding
        self.recorders = recorders
        self._render_s = [0.0] * n_envs

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()

    def render(self, k: int) -> np.ndarray:
        """A frame of lane k's env (timed)."""
        t = time.perf_counter()
        frame = self.envs[k].render()
        self._render_s[k] += time.perf_counter() - t
        return frame

    def _monitored(self, k: int, view: TapView, enforce: str) -> tuple[Any, list[Any]]:
        """Lane k's env wrapped in its monitors: shadow monitors inside, the enforcing one out."""
        from monitors.sarm import SARMMonitor

        env, monitors = self.envs[k], []
        for name in sorted(self.scorers, key=lambda n: n == enforce):
            env = SARMMonitor(env, view, self.scorers[name], on_veto=self.on_veto, tokens=self.tokens,
                              enforce=name == enforce, info_key=f"sarm:{name}", explainer=self.explainer)  # fmt: skip
            monitors.append(env)
        return env, monitors

    def run(self, specs: list[EpisodeSpec]) -> list[EpisodeRecord]:
        """Run a batch of episodes together (same condition and monitor; at most n_envs)."""
        if not 1 <= len(specs) <= len(self.envs):
            raise ValueError(f"a batch holds 1..{len(self.envs)} episodes, got {len(specs)}")
        first = specs[0]
        if any(s.condition != first.condition or s.monitor != first.monitor for s in specs):
            raise ValueError("the episodes of one batch must share their condition and monitor")
        if first.monitor != "none" and first.monitor not in self.scorers:
            raise ValueError(
                f"monitor {first.monitor!r} is not among the loop's scorers {list(self.scorers)} or 'none'"
            )
        effect = ConditionEffect(
            first.condition, self.resources, self.agent, self.layer, [s.seed for s in specs]
        )
        lanes = [_Lane(self, k, spec) for k, spec in enumerate(specs)]
        try:
            self._step_until_done(lanes, effect)
        finally:
            effect.end()
        return [lane.record() for lane in lanes]

    def _step_until_done(self, lanes: list[_Lane], effect: ConditionEffect) -> None:
        agent, step = self.agent, 0
        tap = getattr(agent, "tap", None)
        while active := [lane for lane in lanes if not lane.done]:
            effect.update(step)
            asking = [lane for lane in active if agent.needs_image_for(lane.k)]
            observations = []
            for lane in active:
                frame = lane.frame() if lane in asking or lane.spec.video else None
                observations.append(
                    lane.obs
                    if frame is None
                    else {**lane.obs, "image": effect.frame(lane.k, frame)}
                )
            t = time.perf_counter()
            actions = agent.act_batch(
                observations, [lane.info for lane in active], [lane.k for lane in active]
            )
            share = (time.perf_counter() - t) / len(active)
            if asking and tap is not None and tap.latest_batch is not None:
                for row, lane in enumerate(asking):
                    decision = agent.decision_for(lane.k) or {}
                    signals = {k: decision[k] for k in SIGNAL_COLUMNS if k in decision}
                    lane.tap_view.set(
                        tap.latest_batch[row], tap.positions_batch[row], tap.n_image_tokens, signals
                    )
            for lane, obs, action in zip(active, observations, actions, strict=True):
                lane.agent_s += share
                lane.step(action, obs.get("image"), step)
            step += 1


class _Lane:
    """One episode's state inside a batch (see ClosedLoop)."""

    def __init__(self, loop: ClosedLoop, k: int, spec: EpisodeSpec) -> None:
        self.loop, self.k, self.spec = loop, k, spec
        self.tap_view = TapView()
        self.env, self.monitors = loop._monitored(k, self.tap_view, spec.monitor)
        self.recorders: list[Recorder] = [HoldingState()] if loop.record_holding else []
        self.recorders += list(loop.recorders(spec)) if loop.recorders else []
        self.t0 = time.perf_counter()
        loop._render_s[k] = 0.0
        self.agent_s = self.physics_s = 0.0
        self.obs, self.info = self.env.reset(seed=spec.seed, options=spec.options)
        loop.agent.reset(spec.seed, lane=k)
        self.done = self.stopped = self.truncated = False
        self.steps: list[dict[str, Any]] = []
        self.frames: list[np.ndarray] = []
        self.decision_acts: list[torch.Tensor] = []
        self.decision_steps: list[int] = []
        self.first_alarm: dict[str, int | None] = dict.fromkeys(loop.scorers)
        self.vetoes, self.first_veto, self.p_last, self.reward = 0, None, float("nan"), 0.0
        self.release_height: float | None = None  # gripper above the bin floor where it let go
        self._frame: np.ndarray | None = None
        self._frame_step = -1

    def frame(self) -> np.ndarray:
        """The pre-step frame of the current step (rendered once)."""
        step = self.info["step"]
        if self._frame_step != step:
            self._frame, self._frame_step = self.loop.render(self.k), step
        return self._frame

    def step(self, action: np.ndarray, seen: np.ndarray | None, step: int) -> None:
        """Record the decision, step the env through the monitors, record the step."""
        loop, spec = self.loop, self.spec
        decision = loop.agent.decision_for(self.k) or {}
        decided = bool(decision.get("decided")) and self.tap_view.latest is not None
        if decided and loop.record_decisions and self.tap_view.calls > len(self.decision_acts):
            self.decision_acts.append(self.tap_view.latest.detach().to(torch.float32).clone())
            self.decision_steps.append(step)
        view = StepView(self, step, self.info)
        view.action = action
        for r in self.recorders:
            r.after_act(view)
        self.p_last = float(decision.get("p_fragile", self.p_last))
        overhead = sum(m.overhead_s for m in self.monitors)
        t = time.perf_counter()
        self.obs, reward, terminated, truncated, info = self.env.step(action)
        elapsed = time.perf_counter() - t
        monitor_s = sum(m.overhead_s for m in self.monitors) - overhead
        self.physics_s += elapsed - monitor_s
        self.info, self.reward = info, self.reward + float(reward)
        view.next_info = info
        row = {
            "condition": spec.condition.name, "monitor": spec.monitor, "seed": spec.seed, "step": step,
            "a_dx": float(action[0]), "a_dy": float(action[1]), "a_dz": float(action[2]), "a_grip": float(action[3]),
            "p_fragile": self.p_last, "decided": bool(decision.get("decided", False)), "profile": decision.get("profile"),
            "holding": bool(info["holding"]), "broken": bool(info["broken"]),
            "grip_force": float(self.env.unwrapped.forces.grip),
            "ee_z": float(info["ee_pos"][2]), "object_z": float(info["object_pos"][2]), "reward": float(reward),
            "ee_speed": float(np.linalg.norm(self.obs["state"][3:6])), "vetoed": False,  # state[3:6]: ee velocity
        }  # fmt: skip
        for key in SIGNAL_COLUMNS:  # an agent's uncertainty signals (the VLA's), at its decisions
            if key in decision:
                row[key] = float(decision[key]) if row["decided"] else float("nan")
        if (
            "executed_action" in info
        ):  # behind a monitor: what the env ran (a veto's or fallback's action)
            executed = info["executed_action"]  # None where the monitor stopped the episode
            row.update(
                zip(
                    EXECUTED_COLUMNS,
                    [None] * 4 if executed is None else map(float, executed),
                    strict=True,
                )
            )
        over_bin = (
            np.linalg.norm(np.subtract(info["object_pos"][:2], info["bin_pos"][:2])) < BIN_REACH
        )
        if (
            self.steps
            and self.steps[-1]["holding"]
            and not row["holding"]
            and self.release_height is None
            and over_bin
        ):
            # let go above the bin (a drop on the table is not a release)
            self.release_height = float(self.steps[-1]["ee_z"] - info["bin_pos"][2])
        banner = None
        for name in loop.scorers:
            sarm = info.get(f"sarm:{name}") or {}
            score = sarm.get("score")
            row[f"score:{name}"] = float("nan") if score is None else float(score)
            row[f"veto:{name}"] = bool(sarm.get("veto", False))
            if self.loop.explainer is not None:
                row[f"explain:{name}"] = sarm.get("explanation")
            if sarm.get("veto") and self.first_alarm[name] is None:
                self.first_alarm[name] = step
            if name == spec.monitor and sarm.get("veto"):
                row["vetoed"], banner = True, "VETO"
                self.vetoes += 1
                self.first_veto = step if self.first_veto is None else self.first_veto
        self.steps.append(row)
        if spec.video:  # the frame the agent saw, with THIS step's verdict
            obj = info["object"]
            lines = [
                f"{spec.condition.name} | seed {spec.seed} | {obj['color']} {obj['material']}",
                f"step {step}  P(fragile) {self.p_last:.2f}  {decision.get('profile') or ''}  grip {row['grip_force']:.1f} N",
            ]
            if spec.monitor != "none":
                sarm = info.get(f"sarm:{spec.monitor}") or {}
                score = sarm.get("score")
                lines.append(
                    f"monitor {score if score is None else f'{score:.3g}'} / {sarm.get('threshold', math.nan):.3g}"
                )
            self.frames.append(
                annotate(
                    seen if seen is not None else self.frame(),
                    lines,
                    "BROKEN" if info["broken"] else banner,
                )
            )
        stop = any([r.after_step(view) for r in self.recorders])
        self.stopped = stop and not (terminated or truncated)
        self.truncated = bool(truncated) or self.stopped
        self.done = bool(terminated) or self.truncated
        if self.done:
            self._finish()

    def _finish(self) -> None:
        end = StepView(self, self.info["step"], self.info)
        for r in self.recorders:
            r.finish(end)
        if self.spec.video:
            info = self.info
            banner = "BROKEN" if info["broken"] else ("SUCCESS" if info["success"] else "TIMEOUT")
            self.frames.extend(
                [
                    annotate(
                        self.frame(),
                        [f"{self.spec.condition.name} | seed {self.spec.seed}"],
                        banner,
                    )
                ]
                * 8
            )
        self.wall_s = time.perf_counter() - self.t0

    def record(self) -> EpisodeRecord:
        """The finished episode's record."""
        info, spec, steps = self.info, self.spec, self.steps
        p = np.array([s["p_fragile"] for s in steps if s["decided"]], dtype=float)
        profiles = [s["profile"] for s in steps if s["decided"]]
        enforced = (info.get(f"sarm:{spec.monitor}") or {}) if spec.monitor != "none" else {}
        enforcer = self.monitors[-1] if spec.monitor != "none" else None  # wrapped outermost
        closing = [s["a_grip"] for s in steps if s["a_grip"] > 0]
        grip_command = float(np.mean(closing)) if closing else None  # the agent's own grip effort
        held = [s["ee_speed"] for s in steps if s["holding"]]
        carry_speed = float(np.mean(held)) if held else None  # m/s while holding; None: never held
        row = {
            "condition": spec.condition.name, "monitor": spec.monitor, "seed": spec.seed,
            "onset": spec.condition.onset, **info["object"],
            "success": bool(info["success"]), "broken": bool(info["broken"]), "broken_cause": info["broken_cause"],
            "broken_step": info.get("broken_step"),  # the step during which the object broke (None: unbroken)
            "peak_force": float(info["peak_force"]), "impact_speed": float(info["impact_speed"]),
            "peak_grip_force": float(info["peak_grip_force"]), "grip_command": grip_command, "carry_speed": carry_speed,
            "release_height": self.release_height,  # None: never let go of a held object
            "steps": int(info["step"]), "truncated": self.truncated, "reward": self.reward,
            "p_fragile_first": float(p[0]) if len(p) else float("nan"),
            "p_fragile_mean": float(p.mean()) if len(p) else float("nan"),
            "decisions": len(p), "profile_first": profiles[0] if profiles else None,
            "profile_last": profiles[-1] if profiles else None,
            "final_object_z": float(info["object_pos"][2]), "vetoes": self.vetoes, "first_veto_step": self.first_veto,
            "sarm_reason": enforced.get("reason"), "fallback_step": getattr(enforcer, "fallback_step", None),
            "committed_handling": getattr(enforcer, "handling", None) or agent_handling(self.loop.agent, self.k),
            **{f"first_alarm:{name}": step for name, step in self.first_alarm.items()},
            "wall_s": self.wall_s, "render_s": self.loop._render_s[self.k], "agent_s": self.agent_s,
            "monitor_s": sum(m.overhead_s for m in self.monitors), "physics_s": self.physics_s,
        }  # fmt: skip
        acts: dict[str, torch.Tensor] = {}
        if self.decision_acts:
            acts["decision"] = torch.stack(self.decision_acts)
            acts["decision_steps"] = torch.tensor(self.decision_steps)
            acts["n_image_tokens"] = torch.tensor(self.tap_view.n_image_tokens)
            acts["layer"] = torch.tensor(self.loop.layer)
        extra = {r.name: r.result() for r in self.recorders}
        if extra.get("holding") is not None:
            acts["holding"] = extra["holding"]
        return EpisodeRecord(spec, row, steps, acts, self.frames, extra)


def agent_handling(agent: Any, lane: int) -> str:
    """The handling in force in an agent's lane: its scripted expert's profile name (planner,
    oracle), or "vla" for an agent whose own actions move the arm."""
    lanes = getattr(agent, "lane", None)
    expert = getattr(lanes(lane), "expert", None) if callable(lanes) else None
    return "vla" if expert is None else expert.profile.name
