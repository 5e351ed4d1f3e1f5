"""A scripted pick-and-place expert whose handling is set by a profile.

The expert reads only what a controller with a pose estimate would have (end-effector,
object and bin positions, finger width, whether it holds the object) from the env's info.
Fragility is not among its inputs: the profile decides how it handles the object, and an
agent (oracle or VLM) decides which profile to use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MAX_EE_STEP = 0.04  # must match EnvConfig.max_ee_step: converts metres to action units


@dataclass(frozen=True)
class HandlingProfile:
    """How to handle the object.

    Attributes:
        name: label for logs.
        grip: gripper action while holding (force = grip × the gripper's max force).
        speed: largest |Δ| action per axis while moving (1 = max step).
        release_height: end-effector height above the bin floor at release (m).
    """

    name: str
    grip: float
    speed: float
    release_height: float

    def __post_init__(self) -> None:
        if not 0 < self.grip <= 1:
            raise ValueError(f"grip {self.grip} must be in (0, 1]")
        if not 0 < self.speed <= 1:
            raise ValueError(f"speed {self.speed} must be in (0, 1]")
        if not 0.02 <= self.release_height <= 0.35:
            raise ValueError(f"release_height {self.release_height} must be in [0.02, 0.35] m")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for logs."""
        return asdict(self)


PROFILES: dict[str, HandlingProfile] = {
    "gentle": HandlingProfile("gentle", grip=0.15, speed=0.5, release_height=0.05),
    "firm": HandlingProfile("firm", grip=1.0, speed=1.0, release_height=0.15),
}

HOVER = 0.12  # approach height above the table
GRASP_Z = 0.028  # ee height that puts the fingertips around the object's middle
CARRY = 0.16  # carry height
CLOSE_STEPS = 10  # steps to let the velocity-limited fingers close
ALIGNED = 0.01  # xy distance (m) at which the gripper counts as above its target
BIN_REACH = 0.07  # xy distance (m) from the bin centre within which an object lies in the bin
# xy distance (m) from the bin centre within which a held object let go lands in the bin: the
# reach less the half width of the largest object (6 cm)
RELEASE_REACH = BIN_REACH - 0.03
RELEASE_TOLERANCE = 0.008  # `lower` lets go this close above its release height (m)


def over_object(ee: np.ndarray, obj: np.ndarray) -> bool:
    """The gripper is above the object (within ALIGNED in x, y) and below hover height."""
    return bool(np.linalg.norm(ee[:2] - obj[:2]) < ALIGNED and ee[2] < HOVER)


def get_profile(profile: str | HandlingProfile) -> HandlingProfile:
    """Resolve a profile name (see PROFILES) or pass a HandlingProfile through."""
    if isinstance(profile, HandlingProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(
            f"handling profile {profile!r} is unknown; choose one of {sorted(PROFILES)}"
        )
    return PROFILES[profile]


class ScriptedExpert:
    """State machine: approach, descend, close, lift, carry, lower, release, retreat.

    Args:
        profile: "gentle", "firm" or a HandlingProfile; may be changed between steps
            (e.g. by a planner deciding the object is fragile).
        recover: go back for an object lost (slipped, dropped on the table) while lifting,
            carrying or lowering it, fingers open. Off by default, so the planner's episodes
            and the labelled frames stay as they were; the VLA's demonstration oracle turns
            it on (a policy that drops the object must learn to pick it up again). Off, a
            slip during the lift still sends the expert back, one step later.
    """

    PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "retreat")

    def __init__(self, profile: str | HandlingProfile = "gentle", recover: bool = False) -> None:
        self.profile = get_profile(profile)
        self.recover = bool(recover)
        self.reset()

    @property
    def profile(self) -> HandlingProfile:
        """The handling profile in use."""
        return self._profile

    @profile.setter
    def profile(self, value: str | HandlingProfile) -> None:
        self._profile = get_profile(value)

    def reset(self) -> None:
        """Start a new episode from the first phase."""
        self.phase = "approach"
        self._timer = 0

    def start(self, phase: str) -> None:
        """Go to `phase` now (its timer restarts); ValueError for a phase not in PHASES."""
        if phase not in self.PHASES:
            raise ValueError(f"phase {phase!r}: expected one of {list(self.PHASES)}")
        self._next(phase)

    def release_z(self, bin_pos: np.ndarray) -> float:
        """End-effector height at which `lower` aims to let go: the profile's release height
        above the bin floor, never below grasp height."""
        return max(float(bin_pos[2]) + self.profile.release_height, GRASP_Z)

    def at_release(self, info: dict[str, Any]) -> bool:
        """The gripper is over the bin (within RELEASE_REACH in x, y) and low enough that
        `lower` would let go there (within RELEASE_TOLERANCE above `release_z`)."""
        ee = np.asarray(info["ee_pos"], dtype=np.float64)
        bin_pos = np.asarray(info["bin_pos"], dtype=np.float64)
        over_bin = np.linalg.norm(ee[:2] - bin_pos[:2]) < RELEASE_REACH
        return bool(over_bin and ee[2] < self.release_z(bin_pos) + RELEASE_TOLERANCE)

    def resume(self, info: dict[str, Any]) -> str:
        """Take over an episode where it stands: start the phase that fits the scene in `info`
        (the env's info, as `act` reads it) instead of "approach", e.g. when a conservative
        expert replaces another controller mid-episode (monitors.sarm's fallback veto).

        - holding the object: "lower" when the gripper is above the bin (within ALIGNED in
          x, y), else "lift" (rise to carry height, then carry to the bin): a held object is
          carried on, never dropped by opening the fingers;
        - not holding, the object in the bin (within BIN_REACH of its centre in x, y):
          "retreat";
        - not holding, the gripper above the object (within ALIGNED): "close" at grasp height
          (within 1 cm), "descend" below hover height;
        - otherwise "approach".

        Returns:
            the phase it starts in (also `self.phase`; the phase timer restarts).

        Raises:
            ValueError: `info` lacks ee_pos, object_pos, bin_pos or holding.
        """
        missing = sorted({"ee_pos", "object_pos", "bin_pos", "holding"} - set(info))
        if missing:
            raise ValueError(f"info lacks {missing}: resume needs the env's info dict")
        ee = np.asarray(info["ee_pos"], dtype=np.float64)
        obj = np.asarray(info["object_pos"], dtype=np.float64)
        bin_pos = np.asarray(info["bin_pos"], dtype=np.float64)
        low_over = over_object(ee, obj)
        if bool(info["holding"]):
            phase = "lower" if np.linalg.norm(ee[:2] - bin_pos[:2]) < ALIGNED else "lift"
        elif np.linalg.norm(obj[:2] - bin_pos[:2]) < BIN_REACH:
            phase = "retreat"
        elif low_over and ee[2] < GRASP_Z + 0.01:
            phase = "close"
        elif low_over:
            phase = "descend"
        else:
            phase = "approach"
        self._next(phase)
        return phase

    def _move(self, ee: np.ndarray, target: np.ndarray, gripper: float, speed: float) -> np.ndarray:
        # Gain 1.5: the position-controlled arm lags its target, so aim a little past it.
        delta = np.clip(1.5 * (target - ee) / MAX_EE_STEP, -speed, speed)
        return np.array([*delta, gripper], dtype=np.float32)

    def act(self, info: dict[str, Any]) -> np.ndarray:
        """Return the next action (Δx, Δy, Δz, gripper) from the env's info dict."""
        ee = np.asarray(info["ee_pos"], dtype=np.float64)
        obj = np.asarray(info["object_pos"], dtype=np.float64)
        bin_pos = np.asarray(info["bin_pos"], dtype=np.float64)
        holding = bool(info["holding"])
        prof = self.profile
        grip = prof.grip
        fast = max(prof.speed, 0.5)  # free-space moves need not be slow
        carry = max(CARRY, bin_pos[2] + prof.release_height + 0.02)
        self._timer += 1

        if self.phase == "approach":
            target = np.array([obj[0], obj[1], HOVER])
            if np.linalg.norm(target - ee) < 0.01:
                self._next("descend")
            return self._move(ee, target, -1.0, fast)
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], GRASP_Z])
            if abs(ee[2] - GRASP_Z) < 0.006 or self._timer > 40:
                self._next("close")
            return self._move(ee, target, -1.0, fast)
        if self.phase == "close":
            if self._timer >= CLOSE_STEPS:
                self._next("lift")
            return self._move(ee, np.array([obj[0], obj[1], GRASP_Z]), grip, 0.2)
        if self.recover and self.phase in ("lift", "carry", "lower") and self._lost(holding, obj):
            self._next("approach")  # lost it (slipped or dropped on the table): try again
            return self._move(ee, np.array([ee[0], ee[1], HOVER]), -1.0, fast)
        if self.phase == "lift":
            target = np.array([ee[0], ee[1], carry])
            if ee[2] > carry - 0.01:
                self._next("carry")
            if self._lost(holding, obj):
                self._next("approach")  # lost it: try again
            return self._move(ee, target, grip, prof.speed)
        if self.phase == "carry":
            target = np.array([bin_pos[0], bin_pos[1], carry])
            if np.linalg.norm(target[:2] - ee[:2]) < 0.01:
                self._next("lower")
            return self._move(ee, target, grip, prof.speed)
        if self.phase == "lower":
            target = np.array([bin_pos[0], bin_pos[1], self.release_z(bin_pos)])
            if ee[2] < target[2] + RELEASE_TOLERANCE or (
                ee[2] <= target[2] + 0.03 and self._timer > 40
            ):
                self._next("release")
            return self._move(ee, target, grip, prof.speed)
        if self.phase == "release":
            if self._timer >= 6:
                self._next("retreat")
            return np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)
        # retreat: move up and wait
        return self._move(ee, np.array([ee[0], ee[1], CARRY]), -1.0, fast)

    def _lost(self, holding: bool, obj: np.ndarray) -> bool:
        # Only after the phase has run a few steps: the hold check lags the fingers.
        return not holding and self._timer > 5 and obj[2] < 0.05

    def _next(self, phase: str) -> None:
        self.phase = phase
        self._timer = 0
