"""What the one closed loop (rollouts.episode.ClosedLoop) shows per-episode recorders, and the
view of a lane's decision activations its monitors score (`TapView`).

A recorder sees each step of one lane's episode through a `StepView` and keeps what it needs
(a labelled frame, the holding state, demonstration rows); `EpisodeRecord.extra[name]` holds
its `result()`. Pass `recorders=lambda spec: [MyRecorder()]` to ClosedLoop.

    class Peak(Recorder):
        name = "peak"
        def __init__(self): self.peak = 0.0
        def after_step(self, view): self.peak = view.next_info["peak_grip_force"]; return False
        def result(self): return self.peak
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs import FrankaPickEnv


class StepView:
    """What recorders see of one lane at one step: the spec, the step, the pre-step `obs` (the
    env's state observation, without the frame) and `info`, the chosen `action`, `next_info`
    after the env step, `frame()`, the pre-step camera frame (rendered at most once per step,
    shared with the agent and the video), and `env`, the lane's unwrapped env (read it only)."""

    def __init__(self, lane: Any, step: int, info: dict[str, Any]) -> None:
        self._lane, self.lane, self.spec, self.step, self.info = lane, lane.k, lane.spec, step, info
        self.obs: dict[str, np.ndarray] = lane.obs
        self.agent = lane.loop.agent
        self.action: np.ndarray | None = None
        self.next_info: dict[str, Any] | None = None

    def frame(self) -> np.ndarray:
        """The camera frame of the state before this step's action."""
        return self._lane.frame()

    @property
    def env(self) -> FrankaPickEnv:
        """The lane's env, unwrapped (no monitors): for reading more of the scene than `info`
        holds (e.g. a segmentation render); stepping or resetting it breaks the episode."""
        return self._lane.env.unwrapped


class Recorder:
    """Per-episode hooks of the loop; subclass what you need. One instance per episode."""

    name = "recorder"

    def after_act(self, view: StepView) -> None:
        """After the agent chose `view.action`, before the env steps."""

    def after_step(self, view: StepView) -> bool:
        """After the env step (`view.next_info`); return True to end the episode here."""
        return False

    def finish(self, view: StepView) -> None:
        """Once the episode is over (`view.info` is the final info)."""

    def result(self) -> Any:
        """What goes into `EpisodeRecord.extra[name]`."""
        return None


class HoldingState(Recorder):
    """The holding state h_t just before release (for the world-model probe): one extra agent
    forward (the fragility question, whatever the agent's own prompt) on the frame of the first
    step that holds the object and opens the gripper (the expert's release phase when the agent
    has one). Its activations go to the record only."""

    name = "holding"

    def __init__(self) -> None:
        self.h: torch.Tensor | None = None

    def after_act(self, view: StepView) -> None:
        """Capture once, at the release."""
        agent = view.agent
        if self.h is not None or not view.info["holding"] or getattr(agent, "tap", None) is None:
            return
        phase_for = getattr(agent, "phase_for", None)
        releasing = phase_for(view.lane) == "release" if phase_for else float(view.action[3]) <= 0.0
        if releasing:
            from agents.tiny_model import FRAGILE_QUESTION

            agent.backend.prob_yes([view.frame()], FRAGILE_QUESTION)
            self.h = agent.tap.latest.detach().to(torch.float32).clone()

    def result(self) -> torch.Tensor | None:
        """(n_tokens × d) or None when the episode never released a held object."""
        return self.h


class TapView:
    """The activations a lane's monitors score: those of the forward that made the lane's last
    decision (same attributes as agents.taps.ResidualTap that monitors read)."""

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.n_image_tokens = 0
        self.calls = 0
        self.signals: dict[str, float] = {}  # the agent's uncertainty at this decision (the VLA's)

    def set(self, latest: torch.Tensor, positions: torch.Tensor | None, n_image_tokens: int,
            signals: dict[str, float] | None = None) -> None:  # fmt: skip
        """Point the view at a new decision's activations (and the agent's signals for it)."""
        self.latest, self.positions, self.n_image_tokens = latest, positions, n_image_tokens
        self.signals = dict(signals or {})
        self.calls += 1

    @property
    def image_activations(self) -> torch.Tensor | None:
        """The image-token rows of `latest`."""
        return None if self.latest is None else self.latest[: self.n_image_tokens]
