"""Distribution shifts: variations of the scene a policy was not trained on, at graded strength.

    env.reset(seed=3, options={"shift": "mass:0.5"})     # the object 5.5 times as heavy
    shift = parse_shift("camera:1")                     # Shift(kind="camera", strength=1.0)

A shift is `kind:strength` with strength in [0, 1]; 0 is the training distribution (the episode
is exactly the unshifted one: the same seed draws the same scene), 1 the strongest variation.
Every draw a shift makes comes from its own generator seeded by the episode's seed, so a
shifted episode replays exactly from (seed, shift) and the unshifted draws stay untouched.

    camera       the camera swung s × 20° about the table's vertical axis and raised s × 10 cm
    lighting     dimmer light than any training episode: ambient × (1 − 0.6 s), diffuse × (1 − 0.6 s)
    table        the table top's color moved s of the way to dark green
    size         the object s × 25% larger (7.5 cm at s = 1: the open gripper spans 8)
    mass         the object (1 + 9 s) times as heavy (0.1 kg → 1 kg; both materials alike)
    position     the spawn region moved s × 10 cm along −x (away from the camera), off the training region
    distractors  round(3 s) objects of the other color on the table beside the target

Shifts change pixels (camera, lighting, table, distractors), physics (mass) or both (size,
position); none tells the agent which. They are the held-out conditions of the monitor
benchmarks (studies.shift_suite measures the failures they cause).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from envs.sim import Camera, Lighting

SHIFT_KINDS = ("camera", "lighting", "table", "size", "mass", "position", "distractors")
#: What each kind changes: "pixels", "physics" or "both".
SHIFT_CHANGES = {"camera": "pixels", "lighting": "pixels", "table": "pixels", "size": "both",
                 "mass": "physics", "position": "both", "distractors": "both"}  # fmt: skip
SHIFTED_TABLE = (0.22, 0.42, 0.26, 1.0)  # dark green, far from the training table's beige
MAX_DISTRACTORS = 3


@dataclass(frozen=True)
class Shift:
    """One variation (module docstring) at a strength in [0, 1]."""

    kind: str
    strength: float

    def __post_init__(self) -> None:
        if self.kind not in SHIFT_KINDS:
            raise ValueError(f"shift kind {self.kind!r}: expected one of {list(SHIFT_KINDS)}")
        s = self.strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
            raise ValueError(f"shift strength {s!r} for {self.kind!r}: must be a number in [0, 1]")

    @property
    def name(self) -> str:
        """'kind:strength', as parse_shift reads it."""
        return f"{self.kind}:{self.strength:g}"

    # --- what each kind changes (identity at strength 0) -------------------------------------
    def camera(self, camera: Camera) -> Camera:
        """The episode's camera: swung about the target's vertical axis and raised."""
        if self.kind != "camera" or self.strength == 0:
            return camera
        angle = math.radians(20.0 * self.strength)
        ex, ey, ez = (e - t for e, t in zip(camera.eye, camera.target, strict=True))
        c, s = math.cos(angle), math.sin(angle)
        eye = (camera.target[0] + c * ex - s * ey, camera.target[1] + s * ex + c * ey,
               camera.target[2] + ez + 0.10 * self.strength)  # fmt: skip
        return replace(camera, eye=eye)

    def lighting(self, lighting: Lighting) -> Lighting:
        """The episode's lighting, dimmed below the training range (ambient 0.45-0.7)."""
        if self.kind != "lighting":
            return lighting
        dim = 1.0 - 0.6 * self.strength
        return replace(lighting, ambient=lighting.ambient * dim, diffuse=lighting.diffuse * dim)

    def table_rgba(self, rgba: tuple[float, float, float, float]) -> tuple[float, ...]:
        """The table top's color."""
        if self.kind != "table":
            return rgba
        return tuple(a + self.strength * (b - a) for a, b in zip(rgba, SHIFTED_TABLE, strict=True))

    def size_scale(self) -> float:
        """The object's size relative to training's."""
        return 1.0 + 0.25 * self.strength if self.kind == "size" else 1.0

    def mass_scale(self) -> float:
        """The object's mass relative to training's."""
        return 1.0 + 9.0 * self.strength if self.kind == "mass" else 1.0

    def spawn_offset(self) -> tuple[float, float]:
        """Where the spawn region's centre moves (m)."""
        return (-0.10 * self.strength, 0.0) if self.kind == "position" else (0.0, 0.0)

    def distractors(self) -> int:
        """How many other-color objects stand on the table."""
        return round(MAX_DISTRACTORS * self.strength) if self.kind == "distractors" else 0

    def rng(self, seed: int) -> np.random.Generator:
        """This shift's own draws for an episode (never the env's stream)."""
        return np.random.default_rng([int(seed), 104_729, SHIFT_KINDS.index(self.kind)])


NO_SHIFT = Shift("camera", 0.0)


def parse_shift(text: str | Shift | None) -> Shift:
    """'kind:strength' (or a Shift, or None: no shift) as a Shift; ValueError naming the text."""
    if text is None:
        return NO_SHIFT
    if isinstance(text, Shift):
        return text
    kind, _, value = str(text).partition(":")
    try:
        strength = float(value)
    except ValueError:
        raise ValueError(
            f"shift {text!r}: expected 'kind:strength' with kind in {list(SHIFT_KINDS)} and strength in [0, 1]"
        ) from None
    return Shift(kind, strength)
