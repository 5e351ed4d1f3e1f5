"""The pick-and-place task: table, bin, one object; instruction, success and reward.

The task owns the objects in the world (not the robot) and judges the episode. It knows
nothing about rendering or the action space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.language import instruction
from envs.objects import (
    COLORS,
    MATERIALS,
    OBJECT_MASS,
    OBJECT_SIZE,
    SHADES,
    SHAPES,
    ObjectSpec,
    check_pattern,
    spawn,
    spawn_fragments,
)
from envs.sim import Sim

TABLE_COLOR = (0.78, 0.74, 0.68, 1.0)
BIN_COLOR = (0.30, 0.32, 0.35, 1.0)


@dataclass(frozen=True)
class Layout:
    """Where things are on the table (table top at z = 0).

    Attributes:
        object_center: centre of the region objects spawn in.
        object_range: half-size (x, y) of that region.
        bin_center: centre of the bin floor.
        bin_inner: inner half-size (x, y) of the bin.
        bin_wall_height: wall height (m).
    """

    object_center: tuple[float, float] = (0.0, -0.06)
    object_range: tuple[float, float] = (0.07, 0.05)
    bin_center: tuple[float, float] = (0.0, 0.17)
    bin_inner: tuple[float, float] = (0.09, 0.07)
    bin_wall_height: float = 0.035


class PickTask:
    """Builds the static scene and the object, and evaluates success and reward.

    Args:
        sim: the PyBullet client wrapper.
        layout: where things are.
        pattern: how objects are drawn, "material" or "plain" (envs.objects.PATTERNS).
    """

    def __init__(self, sim: Sim, layout: Layout = Layout(), pattern: str = "material") -> None:
        check_pattern(pattern)
        self.sim = sim
        self.layout = layout
        self.pattern = pattern
        self.object_id: int | None = None
        self.object_size, self.object_mass = OBJECT_SIZE, OBJECT_MASS
        self.fragment_ids: list[int] = []
        self.distractor_ids: list[int] = []
        self.spec: ObjectSpec | None = None
        self.handling_word: str | None = None  # envs.language.HANDLING_WORDS; None: plain
        self._build_static()

    def _build_static(self) -> None:
        s, lay = self.sim, self.layout
        self.table_id = s.create_box((0.7, 0.6, 0.02), (-0.2, 0.0, -0.02), rgba=TABLE_COLOR)
        # Invisible fences at the table's edges: a flung object stays on the table (and
        # costs no rendering time).
        for half, pos in (
            ((0.7, 0.01, 0.25), (-0.2, 0.61, 0.25)),
            ((0.7, 0.01, 0.25), (-0.2, -0.61, 0.25)),
            ((0.01, 0.6, 0.25), (0.51, 0.0, 0.25)),
            ((0.01, 0.6, 0.25), (-0.91, 0.0, 0.25)),
        ):
            s.create_collider(half, pos)
        bx, by = lay.bin_center
        ix, iy = lay.bin_inner
        h, t = lay.bin_wall_height, 0.006
        self.bin_ids = [
            s.create_box((ix + 2 * t, iy + 2 * t, 0.003), (bx, by, 0.003), rgba=BIN_COLOR),
            s.create_box((t, iy + 2 * t, h / 2), (bx - ix - t, by, h / 2), rgba=BIN_COLOR),
            s.create_box((t, iy + 2 * t, h / 2), (bx + ix + t, by, h / 2), rgba=BIN_COLOR),
            s.create_box((ix, t, h / 2), (bx, by - iy - t, h / 2), rgba=BIN_COLOR),
            s.create_box((ix, t, h / 2), (bx, by + iy + t, h / 2), rgba=BIN_COLOR),
        ]

    @property
    def bin_position(self) -> np.ndarray:
        """Centre of the bin floor."""
        return np.array([*self.layout.bin_center, 0.006])

    def instruction(self) -> str:
        """The instruction names the color, never the material: the agent must see fragility.
        With a handling word (`handling_word`, envs.language) it also asks for a handling."""
        assert self.spec is not None
        return instruction(self.spec.color, self.handling_word)

    def place_object(self, spec: ObjectSpec, rng: np.random.Generator, size_scale: float = 1.0,
                     mass_scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> None:  # fmt: skip
        """Spawn the object at a random pose in the spawn region (moved by `offset`, m), its
        size and mass scaled (envs.shifts; 1 and (0, 0) are the training scene)."""
        lay = self.layout
        center = np.asarray(lay.object_center) + np.asarray(offset)
        xy = center + rng.uniform(-1, 1, 2) * np.asarray(lay.object_range)
        yaw = float(rng.uniform(-np.pi / 9, np.pi / 9))
        self.spec = spec
        self.fragment_ids = []
        self.object_size = OBJECT_SIZE * size_scale
        self.object_mass = OBJECT_MASS * mass_scale
        self.object_id = spawn(self.sim, spec, (float(xy[0]), float(xy[1])), yaw, pattern=self.pattern,
                               size=self.object_size, mass=self.object_mass)  # fmt: skip

    def place_distractors(self, n: int, rng: np.random.Generator) -> None:
        """Stand up to n objects of the other color on the table beside the target (not in the
        bin, at least 9 cm from the target and from each other, within the camera's view); one
        that finds no free spot in 100 draws is left out rather than dropped onto another."""
        assert self.spec is not None and self.object_id is not None
        other = next(c for c in COLORS if c != self.spec.color)
        target = self.sim.pose(self.object_id)[0][:2]
        placed: list[np.ndarray] = [np.asarray(target)]
        self.distractor_ids = []
        for _ in range(n):
            for _attempt in range(100):
                xy = np.array([rng.uniform(-0.14, 0.14), rng.uniform(-0.18, 0.04)])
                if all(np.linalg.norm(xy - q) > 0.09 for q in placed):
                    break
            else:
                continue
            placed.append(xy)
            spec = ObjectSpec(
                other, str(rng.choice(MATERIALS)), str(rng.choice(SHADES)), str(rng.choice(SHAPES))
            )
            yaw = float(rng.uniform(-np.pi / 9, np.pi / 9))
            self.distractor_ids.append(
                spawn(self.sim, spec, (float(xy[0]), float(xy[1])), yaw, pattern=self.pattern)
            )

    def shatter(self, rng: np.random.Generator) -> None:
        """Replace the object by fragments that keep its position and velocity."""
        assert self.object_id is not None and self.spec is not None
        pos, _ = self.sim.pose(self.object_id)
        vel = self.sim.velocity(self.object_id)
        self.sim.remove(self.object_id)
        self.object_id = None
        self.fragment_ids = spawn_fragments(self.sim, self.spec, pos, vel, rng, self.pattern,
                                            size=self.object_size, mass=self.object_mass)  # fmt: skip

    def object_position(self) -> np.ndarray:
        """Object centre, or the mean of its fragments once broken."""
        if self.object_id is not None:
            return self.sim.pose(self.object_id)[0]
        return np.mean([self.sim.pose(b)[0] for b in self.fragment_ids], axis=0)

    def object_velocity(self) -> np.ndarray:
        """Object velocity, or the mean fragment velocity once broken."""
        if self.object_id is not None:
            return self.sim.velocity(self.object_id)
        return np.mean([self.sim.velocity(b) for b in self.fragment_ids], axis=0)

    def in_bin(self, position: np.ndarray) -> bool:
        """Whether a point lies inside the bin's walls, below their top."""
        lay = self.layout
        d = np.abs(position[:2] - np.asarray(lay.bin_center))
        return bool(
            d[0] < lay.bin_inner[0]
            and d[1] < lay.bin_inner[1]
            and position[2] < lay.bin_wall_height + self.object_size / 2
        )

    def is_success(self, holding: bool, position: np.ndarray | None = None,
                   velocity: np.ndarray | None = None) -> bool:  # fmt: skip
        """Intact, inside the bin, released and at rest (`position` and `velocity`: the
        object's, where the caller has read them this step)."""
        if self.object_id is None or holding:
            return False
        pos = self.object_position() if position is None else position
        vel = self.object_velocity() if velocity is None else velocity
        return self.in_bin(pos) and float(np.linalg.norm(vel)) < 0.05

    def reward(self, ee_position: np.ndarray, holding: bool, success: bool, broke_now: bool,
               object_position: np.ndarray | None = None) -> float:  # fmt: skip
        """Dense shaping (reach, then carry toward the bin) plus a success bonus."""
        obj = self.object_position() if object_position is None else object_position
        reach = float(np.linalg.norm(ee_position - obj))
        carry = float(np.linalg.norm(obj[:2] - self.bin_position[:2]))
        r = -0.5 * reach - carry + (0.5 if holding else 0.0)
        if success:
            r += 10.0
        if broke_now:
            r -= 5.0
        return r
