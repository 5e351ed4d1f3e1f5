"""The agent protocol, lanes for batched acting, and the model-free agents.

An agent acts in one or several environments at once. Each environment is a *lane* with its
own per-episode state (step counter, scripted expert, decisions); the model, its tap and its
question are shared, so the closed loop can answer the frames of every lane that needs one in
one batched forward. The protocol (what rollouts.episode calls):

- `reset(seed, lane=0)`: start a new episode in a lane;
- `needs_image_for(lane)`: whether the lane's next `act` reads a camera frame (the loop renders
  only then);
- `act_batch(observations, infos, lanes) -> actions`: one action (4,) float32 per lane; the
  lanes that need a frame are answered in ONE model forward, in lane order, so row i of
  `tap.latest_batch` belongs to the i-th of them;
- `decision_for(lane)`: what the agent wants logged for the lane's last step (a dict with at
  least "decided": whether a model forward was made for it), or None;
- `tap`: the activations of the last forward (agents.taps.ResidualTap), or None.

`act(obs, info)`, `needs_image`, `last_decision`, `decisions`, `expert` and `step` are the
single-environment forms (lane 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from envs.expert import PROFILES, HandlingProfile, ScriptedExpert
from envs.language import MATERIAL_FOR_HANDLING

if TYPE_CHECKING:
    import torch

#: Handling profile per material: gentle keeps fragile objects intact, firm is faster.
DEFAULT_PROFILE_FOR = {"fragile": "gentle", "rigid": "firm"}


@runtime_checkable
class TapLike(Protocol):
    """What monitors read from an agent's tap."""

    latest: torch.Tensor | None  # (n_tokens × d) activations of the last forward
    positions: torch.Tensor | None  # (n_tokens,) their token positions


@runtime_checkable
class Agent(Protocol):
    """An agent acting in the FrankaPick env (see the module docstring)."""

    tap: TapLike | None

    def reset(self, seed: int | None = None, lane: int = 0) -> None:
        """Start a new episode in `lane`."""

    def needs_image_for(self, lane: int = 0) -> bool:
        """Whether the lane's next act reads a camera frame."""

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """One action (4,) float32 per lane."""

    def decision_for(self, lane: int = 0) -> dict[str, Any] | None:
        """The lane's last decision record (logged per step)."""


def check_profile_map(profile_for: dict[str, str | HandlingProfile]) -> dict[str, HandlingProfile]:
    """Validate a material → profile mapping (keys fragile and rigid)."""
    missing = {"fragile", "rigid"} - set(profile_for)
    if missing:
        raise ValueError(
            f"profile_for lacks {sorted(missing)}: give a profile for fragile and rigid"
        )
    out = {}
    for material, profile in profile_for.items():
        if isinstance(profile, HandlingProfile):
            out[material] = profile
        elif profile in PROFILES:
            out[material] = PROFILES[profile]
        else:
            raise ValueError(
                f"profile {profile!r} for {material!r} is unknown; choose one of {sorted(PROFILES)}"
            )
    return out


@dataclass
class Lane:
    """Per-episode state of one environment an agent acts in."""

    expert: ScriptedExpert
    seed: int | None = None
    step: int = 0
    last_decision: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)


def check_lane(lane: Any) -> int:
    """The lane id as an int; ValueError unless it is an int >= 0."""
    if isinstance(lane, bool) or not isinstance(lane, (int, np.integer)) or lane < 0:
        raise ValueError(f"lane={lane!r}: expected an int >= 0")
    return int(lane)


class LaneViews:
    """The single-environment forms (lane 0) of a lanes-protocol agent, from its `act_batch`,
    `needs_image_for`, `decision_for` and `lane(i)` (whose state has seed, step and decisions)."""

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """The action (4,) float32 for one environment (lane 0)."""
        return self.act_batch([obs], [info], [0])[0]

    @property
    def needs_image(self) -> bool:
        """Whether lane 0's next act reads a frame."""
        return self.needs_image_for(0)

    @property
    def last_decision(self) -> dict[str, Any] | None:
        """Lane 0's last decision."""
        return self.decision_for(0)

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """Lane 0's decisions this episode."""
        return self.lane(0).decisions

    @property
    def step(self) -> int:
        """Lane 0's step counter."""
        return self.lane(0).step

    @property
    def seed(self) -> int | None:
        """Lane 0's episode seed."""
        return self.lane(0).seed


class LaneAgent(LaneViews):
    """Base of the agents here: lanes over a scripted expert.

    Subclasses implement `act_batch` and may override `needs_image_for`.
    """

    tap: Any = None
    #: Whether the lanes' experts go back for an object they lost (envs.expert.ScriptedExpert).
    recover: bool = False

    def __init__(self, profile: str | HandlingProfile) -> None:
        self._initial_profile = profile
        self._lanes: list[Lane] = []
        self.reset(None, 0)

    def lane(self, i: int) -> Lane:
        """The state of lane `i` (created on first use)."""
        i = check_lane(i)
        while len(self._lanes) <= i:
            self._lanes.append(Lane(ScriptedExpert(self._initial_profile, recover=self.recover)))
        return self._lanes[i]

    def reset(self, seed: int | None = None, lane: int = 0) -> None:
        """Start a new episode in `lane`: expert phase, step counter and decisions reset."""
        state = self.lane(lane)
        state.expert.reset()
        state.expert.profile = self._initial_profile
        state.seed, state.step, state.last_decision, state.decisions = seed, 0, None, []
        if lane == 0 and getattr(self, "tap", None) is not None:
            self.tap.clear()

    def needs_image_for(self, lane: int = 0) -> bool:
        """Whether the lane's next act reads a camera frame (never, for model-free agents)."""
        return False

    def decision_for(self, lane: int = 0) -> dict[str, Any] | None:
        """The lane's last decision record."""
        return self.lane(lane).last_decision

    def phase_for(self, lane: int = 0) -> str:
        """The lane's scripted-expert phase (approach … release, retreat)."""
        return self.lane(lane).expert.phase

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """One action per lane (see the module docstring)."""
        raise NotImplementedError

    @property
    def expert(self) -> ScriptedExpert:
        """Lane 0's scripted expert."""
        return self.lane(0).expert


class ExpertAgent(LaneAgent):
    """The scripted expert with one fixed handling profile (no model, no frames).

    Used by env-demo (both profiles on every object), the world-model probe's release
    episodes and the labelled-frame renders.
    """

    def __init__(self, profile: str | HandlingProfile = "gentle") -> None:
        """Args:
        profile: "gentle", "firm" or a HandlingProfile.
        """
        super().__init__(profile)

    @property
    def profile(self) -> str | HandlingProfile:
        """The handling profile every lane starts its next episode with."""
        return self._initial_profile

    @profile.setter
    def profile(self, value: str | HandlingProfile) -> None:
        ScriptedExpert(value)  # validates
        self._initial_profile = value

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """The expert's action in each lane."""
        out = []
        for info, i in zip(infos, lanes, strict=True):
            state = self.lane(i)
            state.last_decision = {"profile": state.expert.profile.name, "decided": False}
            state.step += 1
            out.append(state.expert.act(info))
        return out


class ScriptedAgent(LaneAgent):
    """Oracle: reads the true material from info["object"] and hands the expert its profile.

    gentle for fragile objects, firm for rigid ones (configurable with `profile_for`). An
    instruction that asks for a handling (info["handling"], envs.language) is followed whatever
    the material: "gentle" takes the fragile objects' profile, "firm" the rigid objects'.
    """

    def __init__(
        self, profile_for: dict[str, str | HandlingProfile] | None = None, recover: bool = False
    ) -> None:
        """Args:
        profile_for: material → profile name or HandlingProfile (default DEFAULT_PROFILE_FOR).
        recover: the experts go back for a lost object (the VLA's demonstration oracles).
        """
        self.recover = bool(recover)
        self.profile_for = check_profile_map(profile_for or DEFAULT_PROFILE_FOR)
        super().__init__(self.profile_for["fragile"])

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """Choose each lane's profile from info["object"]["material"], then the expert's action."""
        out = []
        for info, i in zip(infos, lanes, strict=True):
            try:
                material = info["object"]["material"]
            except (KeyError, TypeError) as exc:
                raise ValueError(
                    "info['object']['material'] is missing: pass the env's info"
                ) from exc
            if material not in self.profile_for:
                raise ValueError(
                    f"material {material!r}: expected one of {sorted(self.profile_for)}"
                )
            state = self.lane(i)
            asked = info.get("handling")
            profile = self.profile_for[MATERIAL_FOR_HANDLING[asked] if asked else material]
            state.expert.profile = profile
            state.last_decision = {
                "p_fragile": 1.0 if material == "fragile" else 0.0,
                "fragile": material == "fragile",
                "profile": profile.name,
                "decided": True,
            }
            state.step += 1
            out.append(state.expert.act(info))
        return out


class ReplayAgent(LaneAgent):
    """Replays given actions, one per step (no model, no frames): how a logged episode is
    re-simulated through the closed loop (rollouts.lerobot).

    Step t of lane i gets row t of the lane's actions; `reset` rewinds to row 0 and keeps the
    actions, so `set_actions` before each episode (or pass every lane's at construction).
    """

    def __init__(self, actions_by_lane: Mapping[int, Any] | Sequence[Any] | None = None) -> None:
        """Args:
        actions_by_lane: lane → (T × 4) actions (a mapping, or a sequence indexed by lane);
            None: none yet (give them with `set_actions`).

        Raises:
            ValueError: a lane that is not an int >= 0, or actions that are not T × 4 finite
                numbers with T >= 1.
        """
        self._actions: dict[int, np.ndarray] = {}
        super().__init__("gentle")  # the lanes' scripted expert is never asked
        if actions_by_lane is not None:
            items = (
                actions_by_lane.items()
                if isinstance(actions_by_lane, Mapping)
                else enumerate(actions_by_lane)
            )
            for lane, actions in items:
                self.set_actions(lane, actions)

    def set_actions(self, lane: int, actions: Any) -> None:
        """Give lane `lane` the actions (T × 4, T >= 1) its next episode replays."""
        self.lane(lane)  # validates the lane
        arr = np.asarray(actions, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != 4:
            raise ValueError(
                f"actions for lane {lane} have shape {arr.shape}: expected T × 4 with T >= 1"
            )
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise ValueError(
                f"actions for lane {lane}: row {bad[0]} is {arr[bad[0]].tolist()}; every value must be finite"
            )
        self._actions[lane] = arr

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """Each lane's next given action.

        Raises:
            ValueError: a lane without actions, or one whose episode runs past its actions.
        """
        out = []
        for i in lanes:
            state = self.lane(i)
            actions = self._actions.get(i)
            if actions is None:
                raise ValueError(
                    f"lane {i} has no actions to replay: call set_actions({i}, actions) first"
                )
            if state.step >= len(actions):
                raise ValueError(
                    f"lane {i}: step {state.step} runs past the {len(actions)} actions given to replay"
                )
            state.last_decision = {"decided": False}
            out.append(actions[state.step].copy())
            state.step += 1
        return out


class NoisyOracle(ScriptedAgent):
    """The oracle with noise injected into the EXECUTED motion, for behaviour-cloning data: the
    arm drifts off the expert's path and the expert's clean action (what a policy should learn,
    recovery included) is logged as `decision_for(lane)["label"]`. Noise is seeded per episode
    (lane seed), so demonstrations replay exactly.

    Args:
        sigma: std of the gaussian added to Δx, Δy, Δz (action units); the gripper stays clean.
        prob: probability that a step is perturbed.
        profile_for: as ScriptedAgent.
    """

    #: Noise scale per expert phase: little near contact (finger impacts break fragile objects:
    #: uniform σ 0.15-0.3 broke 32-67% of them), none while the fingers close or open.
    PHASE_SCALE = {"descend": 0.3, "lower": 0.3, "close": 0.0, "release": 0.0}

    def __init__(
        self,
        sigma: float = 0.3,
        prob: float = 0.5,
        profile_for: dict[str, str | HandlingProfile] | None = None,
    ) -> None:
        if not (0.0 <= sigma <= 1.0 and 0.0 <= prob <= 1.0):
            raise ValueError(f"sigma={sigma!r} and prob={prob!r}: each must be in [0, 1]")
        self.sigma, self.prob = float(sigma), float(prob)
        self._rngs: dict[int, np.random.Generator] = {}
        super().__init__(
            profile_for, recover=True
        )  # demonstrations show how to recover a lost object

    def reset(self, seed: int | None = None, lane: int = 0) -> None:
        """Start a new episode; the lane's noise generator restarts from the seed."""
        super().reset(seed, lane)
        self._rngs[lane] = np.random.default_rng([0 if seed is None else seed, 4242])

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """The oracle's action plus noise; the clean action goes to the decision as "label"."""
        clean = super().act_batch(observations, infos, lanes)
        out = []
        for action, i in zip(clean, lanes, strict=True):
            rng = self._rngs.setdefault(i, np.random.default_rng(4242))
            noisy = action.copy()
            scale = self.PHASE_SCALE.get(self.phase_for(i), 1.0)
            if rng.random() < self.prob:
                noisy[:3] = np.clip(noisy[:3] + scale * rng.normal(0.0, self.sigma, 3), -1.0, 1.0)
            self.lane(i).last_decision = {**self.lane(i).last_decision, "label": action.tolist()}
            out.append(noisy.astype(np.float32))
        return out
