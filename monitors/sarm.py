"""SARMMonitor: a Gymnasium wrapper that vetoes actions when the agent's activations look anomalous.

    agent = VLMAgent("tiny")
    env = SARMMonitor(FrankaPickEnv(...), tap=agent.tap, scorer=load_scorer(path), on_veto="hold")
    obs, info = env.reset(seed=0); agent.reset(0)
    action = agent.act(obs, info)          # the VLM forward fills agent.tap.latest
    obs, r, term, trunc, info = env.step(action)
    info["sarm"]  # {"score", "threshold", "veto", "reason", "new", ...}

On each step the monitor looks at `tap.latest`. When it is a new tensor (another object than the
one scored before, or the tap's `calls` counter moved) it is scored; otherwise the verdict of the
last scored activations stands (the agent is still acting on that decision). A veto happens when
the score exceeds the threshold, and the monitor fails closed: no tap, no activations, NaN/inf
activations, a scorer that raises, a non-finite score or a non-finite action all veto, with the
reason in info. Nothing the monitor does raises into the env loop.

on_veto="hold": the env steps with a safe action (no motion, gripper as in the last executed
action; open before any). Holding freezes the scene, so an agent that sees the same frame keeps
making the same (vetoed) decision: one false alarm can hold the robot until the step limit, and
once scores fall back below threshold the agent resumes with the handling it had chosen.
on_veto="stop": the env is not stepped; the episode is truncated with info["sarm"]["reason"].
on_veto="fallback": at the first enforced veto, control passes for the rest of the episode to a
conservative policy, the gentle scripted expert (`envs.expert.ScriptedExpert("gentle")`), which
takes over where the arm is (`ScriptedExpert.resume`: a held object is carried on to the bin,
not dropped). From that step on the env executes the fallback's action whatever the agent asks
for; the monitor still scores and reports every decision (score, veto) but further vetoes change
nothing. `fallback_step` (also in each report) is the step control passed; `handling` is
FALLBACK_HANDLING ("fallback-gentle") after it, else None.
With enforce=False the monitor only reports (shadow mode).
Every step's info also carries `info["executed_action"]`, the action the env executed (the
agent's, the safe action or the fallback's; None on a stop), so an agent that conditions on its
own past commands (agents.vla_agent's grip effort) follows what ran, not what it asked for.
A monitor that never vetoes passes every action through unchanged: the trajectory is identical
to the unwrapped env's.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from monitors.scorers import Scorer, all_finite, count_nonfinite

if TYPE_CHECKING:
    from envs.expert import ScriptedExpert

ON_VETO = ("hold", "stop", "fallback")
#: The conservative policy on_veto="fallback" hands control to, and its handling label.
FALLBACK_PROFILE = "gentle"
FALLBACK_HANDLING = f"fallback-{FALLBACK_PROFILE}"
TOKEN_SELECTIONS = ("image", "all")
#: info key of the action the env executed (the same key as agents.vla_agent.EXECUTED_ACTION_KEY).
EXECUTED_ACTION_KEY = "executed_action"


def _validates_input(scorer: Any) -> bool:
    """Whether `scorer.score` raises on NaN/inf activations: a Scorer whose score path is the
    base class's (it validates through as_token_matrix)."""
    cls = type(scorer)
    return (
        isinstance(scorer, Scorer)
        and cls.score is Scorer.score
        and cls.token_scores is Scorer.token_scores
    )


class SARMMonitor(gym.Wrapper):
    """Veto actions on anomalous activations (see the module docstring).

    Args:
        env: the environment (FrankaPickEnv or any env with a Box(4) action space).
        tap: anything with `.latest` (n_tokens × d tensor or None), e.g. agent.tap; None ⇒
            every step vetoes ("no tap").
        scorer: object with `score(activations) -> float` (monitors.scorers.Scorer).
        threshold: veto when score > threshold; None ⇒ scorer.calibration.threshold.
        on_veto: "hold", "stop" or "fallback" (module docstring).
        tokens: "image" scores the tap's first `n_image_tokens` rows (its image tokens) when the
            tap says how many; "all" scores every row. A scorer with `tokens = "all"` (the
            linear probe, monitors.probe: it reads the last token too) always gets every row.
        enforce: False ⇒ shadow mode (scores and reports, never changes the action).
        info_key: key of the monitor's dict in info (several monitors can be stacked).
        explainer: a monitors.explain.FeatureExplainer: an anomalous verdict then names the SAE
            latents that moved most at that decision (`info[info_key]["explanation"]`).

    Attributes:
        safety_stops: veto events so far (a veto following a step without veto), all episodes.
        veto_steps: steps vetoed so far, all episodes.
        episode_vetoes: steps vetoed in the current episode.
        first_veto_step: step index of the current episode's first veto, or None.
        fallback_step: step at which the fallback took control this episode, or None.
        overhead_s: seconds spent in the monitor's own logic (not the env), all steps.
    """

    def __init__(
        self,
        env: gym.Env,
        tap: Any,
        scorer: Any,
        threshold: float | None = None,
        on_veto: str = "hold",
        tokens: str = "image",
        enforce: bool = True,
        info_key: str = "sarm",
        explainer: Any = None,
    ) -> None:
        super().__init__(env)
        if on_veto not in ON_VETO:
            raise ValueError(f"on_veto={on_veto!r}: expected one of {ON_VETO}")
        if tokens not in TOKEN_SELECTIONS:
            raise ValueError(f"tokens={tokens!r}: expected one of {TOKEN_SELECTIONS}")
        if not callable(getattr(scorer, "score", None)):
            raise ValueError(
                f"scorer of type {type(scorer).__name__} has no score(activations) method"
            )
        if threshold is None:
            threshold = getattr(scorer, "threshold", None)
            if threshold is None:
                raise ValueError(
                    "threshold=None and the scorer is not calibrated: pass a threshold or calibrate it"
                )
        threshold = float(threshold)
        if math.isnan(threshold):
            raise ValueError(
                "threshold=nan: expected a number (inf for a monitor that never vetoes)"
            )
        self.tap, self.scorer, self.threshold, self.explainer = tap, scorer, threshold, explainer
        self.on_veto, self.tokens, self.enforce, self.info_key = (
            on_veto,
            tokens,
            bool(enforce),
            info_key,
        )
        self.safety_stops = 0
        self.veto_steps = 0
        self.overhead_s = 0.0
        self.monitor_steps = 0
        self._clear_episode()

    def _clear_episode(self) -> None:
        # a stateful scorer (a failure predictor) reads the episode's decisions so far
        self._state = self.scorer.new_state() if getattr(self.scorer, "stateful", False) else None
        self._last_tensor: torch.Tensor | None = None
        self._last_calls: Any = None
        self._verdict: dict[str, Any] = {
            "score": None,
            "veto": False,
            "reason": "no activations scored yet",
        }
        self._last_action: np.ndarray | None = None
        self._prev_veto = False
        self._step = 0
        self._obs: Any = None
        self._info: dict[str, Any] = {}
        self.episode_vetoes = 0
        self.first_veto_step: int | None = None
        self._fallback: ScriptedExpert | None = None
        self.fallback_step: int | None = None

    @property
    def handling(self) -> str | None:
        """FALLBACK_HANDLING once the fallback has control in this episode, else None."""
        return None if self._fallback is None else FALLBACK_HANDLING

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the monitor's per-episode state."""
        obs, info = self.env.reset(**kwargs)
        self._clear_episode()
        self._obs, self._info = obs, info
        return obs, info

    # --- scoring --------------------------------------------------------------------------
    def _activations(self, latest: Any) -> Any:
        """The rows of `latest` to score (see `tokens`; a scorer whose own `tokens` is "all",
        the linear probe, gets every row)."""
        if self.tokens == "all" or getattr(self.scorer, "tokens", None) == "all":
            return latest
        n_img = getattr(self.tap, "n_image_tokens", 0)
        return latest[:n_img] if isinstance(n_img, int) and n_img > 0 else latest

    def _judge(self) -> tuple[dict[str, Any], bool]:
        """The verdict for the current activations and whether they were newly scored."""
        if self.tap is None:
            return {
                "score": None,
                "veto": True,
                "reason": "no tap: the agent exposes no activations",
            }, True
        latest = getattr(self.tap, "latest", None)
        calls = getattr(self.tap, "calls", None)
        if latest is None:
            self._last_tensor, self._last_calls = None, calls
            return {
                "score": None,
                "veto": True,
                "reason": "missing activations: tap.latest is None",
            }, True
        if latest is self._last_tensor and calls == self._last_calls:
            return self._verdict, False
        self._last_tensor, self._last_calls = latest, calls
        acts = self._activations(latest)
        if not torch.is_tensor(acts):
            acts = torch.as_tensor(np.asarray(acts, dtype=np.float32))
        if acts.numel() == 0:
            return {
                "score": None,
                "veto": True,
                "reason": "missing activations: empty tensor",
            }, True
        # A Scorer refuses NaN/inf activations itself (ValueError), so the check runs here only
        # for other scorers, which might turn them into a finite score, or after a failure, to
        # name the reason: one finiteness pass per decision instead of two.
        validates = _validates_input(self.scorer)
        if not validates and not all_finite(acts):
            return self._non_finite(acts), True
        try:
            if (
                getattr(self.scorer, "reads", "activations") == "signals"
            ):  # the agent's own uncertainty
                score = float(self.scorer.score_signals(getattr(self.tap, "signals", None)))
            elif self._state is not None:
                score = float(self.scorer.score_step(acts, self._state))
            else:
                score = float(self.scorer.score(acts))
        except Exception as exc:  # noqa: BLE001 - fail closed on any scorer failure
            if validates and not all_finite(acts):
                return self._non_finite(acts), True
            return {
                "score": None,
                "veto": True,
                "reason": f"scorer raised {type(exc).__name__}: {exc}",
            }, True
        if not math.isfinite(score):
            return {"score": score, "veto": True, "reason": f"non-finite score {score}"}, True
        if score > self.threshold:
            verdict = {"score": score, "veto": True,
                       "reason": f"anomalous: score {score:.4g} > threshold {self.threshold:.4g}"}  # fmt: skip
            if self.explainer is not None:
                verdict["explanation"] = self._explain(acts)
            return verdict, True
        return {"score": score, "veto": False, "reason": ""}, True

    def _explain(self, acts: torch.Tensor) -> str:
        """The SAE latents that moved most at this decision (monitors.explain), on its image
        rows (a probe's rows end with the last token); an explainer error is named, never raised:
        an explanation does not change the verdict."""
        from monitors.explain import describe

        n_img = getattr(self.tap, "n_image_tokens", 0)
        try:
            return describe(self.explainer.explain(acts[:n_img] if n_img else acts))
        except Exception as exc:  # noqa: BLE001
            return f"explainer raised {type(exc).__name__}: {exc}"

    @staticmethod
    def _non_finite(acts: torch.Tensor) -> dict[str, Any]:
        return {
            "score": None,
            "veto": True,
            "reason": f"non-finite activations: {count_nonfinite(acts)} NaN/inf values",
        }

    def safe_action(self) -> np.ndarray:
        """No motion; the gripper as in the last executed action (open, -1, before any)."""
        last = self._last_action
        grip = (
            float(last[3]) if last is not None and last.size == 4 and np.isfinite(last[3]) else -1.0
        )
        return np.array([0.0, 0.0, 0.0, grip], dtype=np.float32)

    def _take_over(self) -> None:
        """Hand control to the fallback expert, resumed from the scene of the last info."""
        from envs.expert import ScriptedExpert  # here: importing monitors loads no physics

        self._fallback = ScriptedExpert(FALLBACK_PROFILE)
        try:
            self._fallback.resume(self._info)
        except Exception:  # noqa: BLE001 - an info without the scene: start from the top
            self._fallback.reset()
        self.fallback_step = self._step

    def _fallback_action(self) -> np.ndarray:
        """The fallback's action for the last info; the safe action if it fails (fail closed)."""
        try:
            action = np.asarray(self._fallback.act(self._info), dtype=np.float32).reshape(-1)
        except Exception:  # noqa: BLE001 - nothing the monitor does raises into the env loop
            return self.safe_action()
        return action if action.size == 4 and np.all(np.isfinite(action)) else self.safe_action()

    # --- stepping -------------------------------------------------------------------------
    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Score (if new), then step the env with the action, the safe action, or stop."""
        t0 = time.perf_counter()
        arr = None
        try:
            verdict, new = self._judge()
            # Verdict dicts are never mutated (the report below is a new dict), so the stored
            # verdict needs no copy.
            self._verdict = verdict
            arr = np.asarray(action, dtype=np.float32).reshape(-1)
            # A Python loop over the few action values is cheaper than numpy's isfinite + all
            # on a cold cache (the VLM forward and the physics step run between two calls).
            if not verdict["veto"] and not all(map(math.isfinite, arr.tolist())):
                verdict = {
                    "score": verdict["score"],
                    "veto": True,
                    "reason": "non-finite action from the agent",
                }
        except Exception as exc:  # noqa: BLE001 - the monitor itself failed: fail closed
            verdict, new = (
                {
                    "score": None,
                    "veto": True,
                    "reason": f"monitor error {type(exc).__name__}: {exc}",
                },
                True,
            )
        veto = bool(verdict["veto"])
        if veto:
            self.veto_steps += 1
            self.episode_vetoes += 1
            if not self._prev_veto:
                self.safety_stops += 1
            if self.first_veto_step is None:
                self.first_veto_step = self._step
        self._prev_veto = veto
        if veto and self.enforce and self.on_veto == "fallback" and self._fallback is None:
            self._take_over()
        report = {
            "score": verdict["score"], "threshold": self.threshold, "veto": veto,
            "reason": verdict["reason"], "new": new, "step": self._step,
            "enforced": veto and self.enforce, "action": None, "fallback_step": self.fallback_step,
        }  # fmt: skip
        if new and "explanation" in verdict:  # on the step the alarm is raised, not its repeats
            report["explanation"] = verdict["explanation"]
        self.monitor_steps += 1
        self._step += 1
        if veto and self.enforce and self.on_veto == "stop":
            info = {
                **self._info,
                self.info_key: {**report, "action": "stop"},
                EXECUTED_ACTION_KEY: None,
            }
            self.overhead_s += time.perf_counter() - t0
            return self._obs, 0.0, False, True, info
        if self._fallback is not None:
            action = arr = self._fallback_action()
            report["action"] = "fallback"
        elif veto and self.enforce:
            action = arr = self.safe_action()
            report["action"] = "hold"
        t_env = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(action)
        t_back = time.perf_counter()
        self._last_action = arr if arr is not None else np.asarray(action, np.float32).reshape(-1)
        info = {**info, self.info_key: report, EXECUTED_ACTION_KEY: self._last_action.copy()}
        self._obs, self._info = obs, info
        # Everything but the env step is the monitor's cost, the bookkeeping after it included.
        self.overhead_s += (t_env - t0) + (time.perf_counter() - t_back)
        return obs, reward, terminated, truncated, info
