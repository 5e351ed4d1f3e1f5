"""VLMAgent: a vision-language model decides the handling, the scripted expert executes it.

Planner mode: every `decide_every` steps the agent asks the VLM "Is the object fragile? Answer
yes or no." about the current camera frame (through the processor's chat template), reads
P(yes) from the next-token distribution over the spellings of "yes" and "no", and sets the
expert's handling profile: gentle when P(fragile) >= threshold, firm otherwise. The profile is
committed at the grasp: queries after the approach (`COMMIT_PHASES`) are still made and logged
(monitors and steering see every forward) but no longer switch the handling, because once the
gripper covers the object or carries it out of view, the frame says little about its material
(measured: the tiny model then answers "rigid" over the bin and the firm release height drops
fragile objects). The decision and
P(fragile) are in `agent.last_decision` for logging; `agent.tap` holds the residual stream of
the last VLM forward at the image tokens and the last token.

    agent = VLMAgent("tiny", decide_every=10, threshold=0.5, tap_layer=2)
    with AddVector(v, 4.0, layer=2).attach(agent.backend):
        action = agent.act(obs, info)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.backend import VLMBackend, load_vlm
from agents.protocol import DEFAULT_PROFILE_FOR, LaneAgent, check_profile_map
from agents.taps import ResidualTap
from agents.tiny_model import FRAGILE_QUESTION
from envs.expert import HandlingProfile

#: Expert phases in which a VLM answer may still change the handling profile.
COMMIT_PHASES = ("approach", "descend")


def default_tap_layer(n_layers: int) -> int:
    """Two thirds of the way up the decoder (16 of SmolVLM-Instruct's 24; 2 of the tiny 4)."""
    return max(0, min(n_layers - 1, (2 * n_layers) // 3))


class VLMAgent(LaneAgent):
    """A VLM planner over the scripted expert (see module docstring), in one or many lanes."""

    def __init__(
        self,
        model: VLMBackend | str = "tiny",
        decide_every: int = 10,
        threshold: float = 0.5,
        tap_layer: int | None | str = "default",
        question: str = FRAGILE_QUESTION,
        profile_for: dict[str, str | HandlingProfile] | None = None,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        """Args:
        model: a loaded VLMBackend, "tiny", a local directory or a hub id (see load_vlm).
        decide_every: steps between VLM queries (1 = every step); the first step always asks.
        threshold: P(fragile) at or above which the object is handled as fragile.
        tap_layer: decoder layer of the residual tap, "default" (2/3 depth) or None (no tap).
        question: the yes/no question asked about the frame.
        profile_for: material → handling profile (default gentle for fragile, firm for rigid).
        device, dtype: used when `model` is not already loaded.
        """
        if isinstance(decide_every, bool) or not isinstance(decide_every, int) or decide_every < 1:
            raise ValueError(f"decide_every={decide_every!r}: must be an int >= 1")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold={threshold!r}: must be in [0, 1]")
        self.backend = model if isinstance(model, VLMBackend) else load_vlm(model, device, dtype)
        self.decide_every = decide_every
        self.threshold = float(threshold)
        self.question = question
        self.profile_for = check_profile_map(profile_for or DEFAULT_PROFILE_FOR)
        self.tap: ResidualTap | None = None
        if tap_layer == "default":
            tap_layer = default_tap_layer(self.backend.n_layers)
        from agents.image_check import check_image_reaches

        check_image_reaches(self.backend, tap_layer)  # refuses a model whose image misses the taps
        if tap_layer is not None:
            self.tap = ResidualTap(tap_layer).attach(self.backend)
        super().__init__(self.profile_for["rigid"])

    def needs_image_for(self, lane: int = 0) -> bool:
        """True when the lane's next `act` queries the VLM (a runner may render only then)."""
        return self.lane(lane).step % self.decide_every == 0

    def p_fragile(self, image: np.ndarray) -> float:
        """P(yes) to the fragility question for one H×W×3 uint8 frame."""
        return float(self.backend.prob_yes([image], self.question)[0])

    def _decide(self, lane: int, p: float) -> dict[str, Any]:
        """Set the lane's expert profile from P(fragile) `p`; returns the decision."""
        state = self.lane(lane)
        fragile = p >= self.threshold
        committed = state.expert.phase not in COMMIT_PHASES
        if committed:
            profile = state.expert.profile  # grasped: keep the handling chosen before
        else:
            profile = self.profile_for["fragile" if fragile else "rigid"]
            state.expert.profile = profile
        decision = {
            "committed": committed,
            "step": state.step,
            "p_fragile": p,
            "fragile": bool(fragile),
            "profile": profile.name,
            "threshold": self.threshold,
            "decided": True,
        }
        state.decisions.append(decision)
        return decision

    def decide(self, image: np.ndarray, lane: int = 0) -> dict[str, Any]:
        """Query the VLM about `image` and set the lane's expert profile; returns the decision."""
        return self._decide(lane, self.p_fragile(np.asarray(image)))

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """Decide for the lanes due a query (one batched VLM forward), then each expert's action."""
        asking = [k for k, i in enumerate(lanes) if self.needs_image_for(i)]
        images = []
        for k in asking:
            obs = observations[k]
            image = obs.get("image") if isinstance(obs, dict) else obs
            if image is None:
                raise ValueError("obs has no 'image': VLMAgent needs a frame at its decision steps")
            images.append(np.asarray(image))
        probs = self.backend.prob_yes(images, self.question) if images else []
        answered = dict(zip(asking, probs, strict=True))
        actions = []
        for k, (info, i) in enumerate(zip(infos, lanes, strict=True)):
            state = self.lane(i)
            if k in answered:
                state.last_decision = self._decide(i, float(answered[k]))
            else:
                state.last_decision = {
                    **(state.last_decision or {}),
                    "step": state.step,
                    "decided": False,
                }
            state.step += 1
            actions.append(state.expert.act(info))
        return actions

    def close(self) -> None:
        """Detach the tap from the model."""
        if self.tap is not None:
            self.tap.remove()
