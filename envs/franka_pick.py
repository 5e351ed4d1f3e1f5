"""`FrankaPickEnv`: pick the named object and put it in the bin, without breaking it.

Composition, not inheritance: a `Sim` (PyBullet client), a `Panda` (robot) and a `PickTask`
(scene + judging). The env turns actions into robot commands, steps physics, tracks the
forces that break fragile objects, and packs observations and info.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.fragility import ForceTracker, FragilityConfig
from envs.language import HANDLING_WORDS, check_handling_word
from envs.objects import COLORS, MATERIALS, SHADES, SHAPES, ObjectSpec, check_pattern
from envs.robot import FINGER_JOINTS, GripperConfig, Panda
from envs.shifts import parse_shift
from envs.sim import DEFAULT_RENDERER, Camera, Lighting, Sim, check_renderer, display_set
from envs.task import TABLE_COLOR, Layout, PickTask

OBS_MODES = ("rgb", "state", "rgb+state")
RENDER_MODES = ("rgb_array", "human")
STATE_SIZE = 17
# Balanced design: every block of 16 consecutive episode indices holds each
# color × material × shade × shape combination exactly once (in a block-specific order).
DESIGN = [(c, m, s, sh) for c in COLORS for m in MATERIALS for s in SHADES for sh in SHAPES]


@dataclass(frozen=True)
class Reading:
    """What the env reads from the world after each step (one query per quantity)."""

    ee_position: np.ndarray
    ee_velocity: np.ndarray
    finger_width: float
    object_position: np.ndarray
    object_velocity: np.ndarray
    gripped: bool
    holding: bool


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines the environment; saved with every run for replay.

    Attributes:
        image_size: camera frame width = height (px).
        obs_mode: "rgb", "state" or "rgb+state".
        max_steps: steps before truncation.
        timestep: physics step (s).
        substeps: physics steps per env step (control period = timestep × substeps).
        max_ee_step: end-effector displacement (m) at action magnitude 1.
        workspace_low / workspace_high: bounds the end-effector target is clipped to.
        cheap_arm_visuals: render the arm with low-poly meshes (faster, see robot.py).
        object_pattern: "material" (the surface pattern marks the material: fragile striped,
            rigid plain) or "plain" (every object plain in its color whatever its material: the
            material cue is removed from the frame; physics unchanged).
        renderer: camera frames from "tiny-layered" (the default) or "tiny" (TinyRenderer, what the
            shipped models were trained on, in two layers or in one pass: the same pixels), "egl" (OpenGL through PyBullet's EGL plugin: a GPU's where there is one, else
            Mesa's software rasteriser; lit differently) or "auto" (EGL where it loads).
    """

    image_size: int = 384
    obs_mode: str = "rgb+state"
    max_steps: int = 200
    timestep: float = 1.0 / 160.0
    substeps: int = 6
    max_ee_step: float = 0.04
    workspace_low: tuple[float, float, float] = (-0.2, -0.22, 0.012)
    workspace_high: tuple[float, float, float] = (0.2, 0.3, 0.4)
    cheap_arm_visuals: bool = True
    object_pattern: str = "material"
    renderer: str = DEFAULT_RENDERER
    camera: Camera = field(default_factory=Camera)
    layout: Layout = field(default_factory=Layout)
    gripper: GripperConfig = field(default_factory=GripperConfig)
    fragility: FragilityConfig = field(default_factory=FragilityConfig)

    def __post_init__(self) -> None:
        if self.obs_mode not in OBS_MODES:
            raise ValueError(
                f"obs_mode {self.obs_mode!r} is not allowed; choose one of {list(OBS_MODES)}"
            )
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 2048):
            raise ValueError(f"image_size {self.image_size!r} must be an int in [16, 2048]")
        if self.max_steps < 1 or self.substeps < 1:
            raise ValueError(
                f"max_steps ({self.max_steps}) and substeps ({self.substeps}) must be ≥ 1"
            )
        check_pattern(self.object_pattern)
        check_renderer(self.renderer)


class FrankaPickEnv(gym.Env):
    """A Franka Panda picks a red/blue, fragile/rigid object and puts it in the bin.

    Action: Box(-1, 1, (4,)): Δx, Δy, Δz of the end effector (× `max_ee_step` metres) and the
    gripper (≤ 0 open, > 0 close with force proportional to the value). Out-of-range actions
    are clipped to [-1, 1]; NaN or inf raises ValueError.

    Observation: Dict with "image" (uint8 H×W×3) and/or "state" (float32, 17) by `obs_mode`.
    State: ee position (3), ee velocity (3), finger width (1), object position (3), object
    velocity (3), bin position (3), holding (1).

    Raises:
        ValueError: unknown render_mode or option. envs.sim.NoDisplayError (a RuntimeError):
            render_mode "human" where no display can be opened, raised before PyBullet
            connects (PyBullet's GUI would end the process).

    Args:
        render_mode: "rgb_array" or "human" (PyBullet GUI; needs a display), or None.
            An instance's `metadata["render_modes"]` lists "human" only where a display is set
            (DISPLAY, on Linux); the class's lists both.
        config: an EnvConfig; keyword overrides below replace its fields.
        **overrides: e.g. image_size=128, obs_mode="state".
    """

    # The class declares every mode (gym.make reads it: "human" then reaches __init__, which
    # says when there is no display); an instance declares the modes this machine can open, so
    # gymnasium's check_env, which makes the env in each of them, passes on a headless machine.
    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 24}

    def __init__(
        self, render_mode: str | None = None, config: EnvConfig | None = None, **overrides: Any
    ) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(
                f"render_mode {render_mode!r} is not allowed; choose one of {list(RENDER_MODES)} or None"
            )
        config = config or EnvConfig()
        unknown = set(overrides) - set(EnvConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown env option(s) {sorted(unknown)}; allowed: {sorted(EnvConfig.__dataclass_fields__)}"
            )
        self.config = replace(config, **overrides)
        self.render_mode = render_mode
        modes = RENDER_MODES if display_set() else ("rgb_array",)
        self.metadata = {**type(self).metadata, "render_modes": list(modes)}
        cfg = self.config
        size = cfg.image_size
        obs = {}
        if "rgb" in cfg.obs_mode:
            obs["image"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
        if "state" in cfg.obs_mode:
            obs["state"] = spaces.Box(-10.0, 10.0, (STATE_SIZE,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.sim = Sim(timestep=cfg.timestep, gui=render_mode == "human", renderer=cfg.renderer)
        self._episode_index = 0
        self._seeded = False
        self.camera, self.shift = (
            self.config.camera,
            None,
        )  # per episode: a shift may move the camera
        self.robot: Panda | None = None
        self.task: PickTask | None = None

    # --- episode ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode. `options` may force "color", "material", "shade", "shape", set a
        distribution "shift" ('kind:strength', envs.shifts: camera, lighting, table, size,
        mass, position, distractors) and a "handling" word for the instruction ("gently",
        "firmly", ...: envs.language.HANDLING_WORDS; info["handling"] says what it asks for)."""
        options = dict(options or {})
        unknown = set(options) - {"color", "material", "shade", "shape", "shift", "handling"}
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; allowed: color, material, shade, "
                "shape, shift, handling"
            )
        shift = parse_shift(options.pop("shift", None))  # ValueError before anything changes
        handling_word = check_handling_word(options.pop("handling", None))
        super().reset(seed=seed)
        if seed is not None:
            self._episode_index = int(seed)
        elif not self._seeded:
            self._episode_index = int(self.np_random.integers(0, 2**31 - 1))
        self._seeded = True
        spec = self._draw_spec(self._episode_index, options)
        self._episode_index += 1

        self.sim.reset()  # rebuild the world: bit-exact replay from the seed, whatever ran before
        cfg = self.config
        self.robot = Panda(self.sim, gripper=cfg.gripper, cheap_visuals=cfg.cheap_arm_visuals)
        self.task = PickTask(self.sim, cfg.layout, cfg.object_pattern)
        self.task.handling_word = handling_word
        rng = self.np_random
        start = np.array([0.0, -0.04, 0.22]) + rng.uniform(-1, 1, 3) * np.array([0.05, 0.04, 0.03])
        self.robot.reset(ee_position=start)
        self.task.place_object(spec, rng, size_scale=shift.size_scale(), mass_scale=shift.mass_scale(),
                               offset=shift.spawn_offset())  # fmt: skip
        self.lighting = shift.lighting(self._draw_lighting(rng))
        self.camera = shift.camera(cfg.camera)
        self.shift = shift if shift.strength > 0 else None
        if shift.kind == "table" and shift.strength > 0:
            self.sim.set_color(self.task.table_id, -1, shift.table_rgba(TABLE_COLOR))
        if shift.distractors():
            self.task.place_distractors(shift.distractors(), shift.rng(self._episode_index - 1))
        for _ in range(20):  # let the object settle on the table
            self.sim.step()
        self.forces = ForceTracker(cfg.fragility, self.sim.timestep)
        self._steps = 0
        self._broken: dict[str, Any] | None = None
        self._impact_speed = 0.0
        self._was_free = False
        self._finger_forces = (0.0, 0.0)
        self._spec_dict = spec.to_dict()
        self._reading = self._read()
        return self._observation(), self._info(success=False)

    def _draw_spec(self, index: int, options: dict[str, Any]) -> ObjectSpec:
        block, slot = divmod(index, len(DESIGN))
        order = np.random.default_rng([block, 7919]).permutation(len(DESIGN))
        color, material, shade, shape = DESIGN[order[slot]]
        return ObjectSpec(
            color=options.get("color", color),
            material=options.get("material", material),
            shade=options.get("shade", shade),
            shape=options.get("shape", shape),
        )

    @staticmethod
    def _draw_lighting(rng: np.random.Generator) -> Lighting:
        az = rng.uniform(0, 2 * math.pi)
        el = rng.uniform(0.5, 1.3)
        direction = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
        return Lighting(
            direction=direction,
            ambient=float(rng.uniform(0.45, 0.7)),
            diffuse=float(rng.uniform(0.25, 0.45)),
            specular=float(rng.uniform(0.0, 0.1)),
        )

    def step(self, action: np.ndarray):
        """Apply one action for `substeps` physics steps; see the class docstring."""
        if self.task is None or self.robot is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (4,):
            raise ValueError(
                f"action must have 4 values (dx, dy, dz, gripper), got shape {action.shape}: {action}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(
                f"action {action.tolist()} contains NaN or inf; all 4 values must be finite in [-1, 1]"
            )
        action = np.clip(action, -1.0, 1.0)  # documented: out-of-range actions are clipped

        cfg = self.config
        ee = self._reading.ee_position  # nothing has moved since the last reading
        target = np.clip(ee + action[:3] * cfg.max_ee_step, cfg.workspace_low, cfg.workspace_high)
        self.robot.command_ee(target)
        self.robot.command_gripper(float(action[3]))
        broke_now = False
        for _ in range(cfg.substeps):
            self.sim.step()
            if self._broken is None:
                cause = self._track_forces()
                if cause is not None and self.task.spec.fragile:
                    broke_now = True
                    self._broken = {"cause": cause, "step": self._steps, "force": self.forces.peak}
                    self.task.shatter(self.np_random)
        self._steps += 1

        now = self._reading = self._read()
        success = self.task.is_success(now.holding, now.object_position, now.object_velocity)
        terminated = success or self._broken is not None
        truncated = (not terminated) and self._steps >= cfg.max_steps
        reward = self.task.reward(
            now.ee_position, now.holding, success, broke_now, now.object_position
        )
        return self._observation(), reward, terminated, truncated, self._info(success)

    def _track_forces(self) -> str | None:
        # One contact query per substep, split by what the object touches.
        left = right = other = 0.0
        touching_world = False
        robot = self.robot.body
        for pt in self.sim.contacts(self.task.object_id):
            if pt[2] == robot and pt[4] == FINGER_JOINTS[0]:
                left += pt[9]
            elif pt[2] == robot and pt[4] == FINGER_JOINTS[1]:
                right += pt[9]
            else:
                other += pt[9]
                touching_world = touching_world or pt[2] != robot
        self._finger_forces = (left, right)
        # Impact speed: the speed at which a free-flying object first touches the world again.
        # (The velocity is kept as PyBullet's tuple, made an array only for that rare norm.)
        velocity = self.sim.velocity_tuple(self.task.object_id)
        if touching_world and self._was_free:
            speed = float(np.linalg.norm(np.asarray(self._last_velocity, dtype=np.float64)))
            self._impact_speed = max(self._impact_speed, speed)
        self._was_free = not touching_world and (left + right) == 0.0
        self._last_velocity = velocity
        return self.forces.update(max(left, right), other)

    def _read(self) -> Reading:
        """Read the world once after physics; observation, info, reward and success share it."""
        ee_position, ee_velocity = self.robot.ee_state()
        t = self.task
        object_position, object_velocity = t.object_position(), t.object_velocity()
        left, right = self._finger_forces
        # Gripped: both fingers press on the (intact) object; holding: gripped and off the
        # table (its centre 5 mm above where it rests).
        gripped = t.object_id is not None and left > 0 and right > 0
        holding = gripped and object_position[2] > t.object_size / 2 + 0.005
        return Reading(ee_position, ee_velocity, self.robot.finger_width(), object_position,
                       object_velocity, gripped, bool(holding))  # fmt: skip

    # --- observations -----------------------------------------------------------------------
    def _state(self) -> np.ndarray:
        now = self._reading
        state = np.concatenate(
            [
                now.ee_position,
                now.ee_velocity,
                [now.finger_width],
                now.object_position,
                now.object_velocity,
                self.task.bin_position,
                [float(now.holding)],
            ]
        )
        return np.clip(state, -10.0, 10.0).astype(np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {}
        if "rgb" in self.config.obs_mode:
            obs["image"] = self._frame()
        if "state" in self.config.obs_mode:
            obs["state"] = self._state()
        return obs

    def _frame(self) -> np.ndarray:
        size = self.config.image_size
        return self.sim.render(size, size, self.camera, self.lighting)

    def _info(self, success: bool) -> dict[str, Any]:
        t, now = self.task, self._reading
        broken = self._broken or {}
        return {
            "step": self._steps,
            "object": dict(self._spec_dict),
            "shift": None if self.shift is None else self.shift.name,
            "instruction": t.instruction(),
            "handling": HANDLING_WORDS.get(t.handling_word),  # asked by the instruction, or None
            "holding": now.holding,
            "gripped": now.gripped,
            "broken": self._broken is not None,
            "broken_cause": broken.get("cause"),
            "broken_step": broken.get("step"),
            "broken_force": broken.get("force"),
            "peak_force": self.forces.peak,
            "peak_grip_force": self.forces.peak_grip,
            "peak_impact_force": self.forces.peak_impact,
            "impact_speed": self._impact_speed,
            "success": success,
            "ee_pos": now.ee_position.copy(),
            "object_pos": now.object_position.copy(),
            "bin_pos": t.bin_position,
            "finger_width": now.finger_width,
        }

    def render(self) -> np.ndarray | None:
        """Return the current camera frame for "rgb_array"; the GUI shows itself for "human"."""
        if self.render_mode == "rgb_array":
            return self._frame()
        return None

    def close(self) -> None:
        """Release the PyBullet client."""
        self.sim.close()
