"""The object catalog: color × material × shade × shape, textures, spawning and fragments.

Material is visible only through a surface pattern (stripes for fragile, a checkerboard for
rigid) drawn at the same cell size and contrast around the same base color, so the mean color,
lightness and texture energy carry no material information. Shade (pale/deep) is a balanced
nuisance factor. Shapes are shared by both materials.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from envs.sim import Sim

COLORS = ("red", "blue")
MATERIALS = ("fragile", "rigid")
SHADES = ("pale", "deep")
SHAPES = ("cube", "cylinder")

# Base RGB per (color, shade). The pattern swings ±CONTRAST around it, so all stay in range.
BASE_RGB = {
    ("red", "pale"): (215, 120, 120),
    ("red", "deep"): (165, 40, 40),
    ("blue", "pale"): (120, 140, 215),
    ("blue", "deep"): (40, 55, 165),
}
CONTRAST = 38
TEXTURE_PX = 64
# Pattern cells (rows, cols) of the texture. A cube shows the whole texture on each face: 2×2
# cells of 3 cm (~20-25 px on screen, over one 14-px vision patch). A cylinder wraps the rows
# around its circumference: 6 cells of 3.1 cm around, 2 along its height.
PATTERN_CELLS = {"cube": (2, 2), "cylinder": (6, 2)}

OBJECT_SIZE = 0.06  # width of cube / diameter of cylinder (m)
OBJECT_MASS = 0.1  # same for both materials: mass must not reveal fragility


@dataclass(frozen=True)
class ObjectSpec:
    """What the object is. Only `color` may appear in the instruction."""

    color: str
    material: str
    shade: str
    shape: str

    def __post_init__(self) -> None:
        for field, allowed in (
            ("color", COLORS),
            ("material", MATERIALS),
            ("shade", SHADES),
            ("shape", SHAPES),
        ):
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"{field} {value!r} is not allowed; choose one of {list(allowed)}")

    @property
    def fragile(self) -> bool:
        """Whether this object breaks under excess force."""
        return self.material == "fragile"

    def to_dict(self) -> dict[str, str]:
        """Plain dict for logs and info."""
        return asdict(self)


def texture_array(spec: ObjectSpec) -> np.ndarray:
    """The RGB texture (uint8, TEXTURE_PX²) for a spec: stripes or checkerboard."""
    base = np.array(BASE_RGB[(spec.color, spec.shade)], dtype=np.int16)
    rows, cols = PATTERN_CELLS[spec.shape]
    r = np.arange(TEXTURE_PX)[:, None] * rows // TEXTURE_PX
    c = np.arange(TEXTURE_PX)[None, :] * cols // TEXTURE_PX
    # Equal numbers of +/- cells in both patterns: mean color and lightness match exactly.
    if spec.material == "fragile":
        sign = np.where(r % 2 == 0, 1, -1) * np.ones_like(c)
    else:
        sign = np.where((r + c) % 2 == 0, 1, -1)
    img = base[None, None, :] + CONTRAST * sign[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.cache
def texture_path(spec: ObjectSpec) -> str:
    """Write the texture PNG once per process and return its path."""
    folder = _texture_dir()
    path = os.path.join(folder, f"{spec.color}_{spec.shade}_{spec.material}_{spec.shape}.png")
    Image.fromarray(texture_array(spec)).save(path)
    return path


@functools.lru_cache(maxsize=1)
def _texture_dir() -> str:
    return tempfile.mkdtemp(prefix="physteer_textures_")


def spawn(
    sim: Sim, spec: ObjectSpec, xy: tuple[float, float], yaw: float, z0: float = 0.0
) -> int:
    """Create the object resting on the surface at height z0 and return its body id."""
    import pybullet as p

    orn = p.getQuaternionFromEuler((0.0, 0.0, yaw))
    half = OBJECT_SIZE / 2
    pos = (xy[0], xy[1], z0 + half)
    if spec.shape == "cube":
        body = sim.create_textured_cube(half, pos, mass=OBJECT_MASS, orientation=orn)
    else:
        body = sim.create_cylinder(half, OBJECT_SIZE, pos, mass=OBJECT_MASS, orientation=orn)
    p.changeDynamics(
        body, -1, lateralFriction=1.0, spinningFriction=0.002, rollingFriction=0.0005,
        restitution=0.05, physicsClientId=sim.client,
    )
    sim.apply_texture(body, texture_path(spec))
    return body


def spawn_fragments(
    sim: Sim, spec: ObjectSpec, position: np.ndarray, velocity: np.ndarray, rng: np.random.Generator
) -> list[int]:
    """Replace a broken object by eight small shards at its position; return their ids."""
    import pybullet as p

    size = OBJECT_SIZE / 4
    bodies = []
    for dx in (-1, 1):
        for dy in (-1, 1):
            for dz in (-1, 1):
                offset = np.array([dx, dy, dz]) * OBJECT_SIZE / 4
                pos = tuple(position + offset)
                body = sim.create_textured_cube(size, pos, mass=OBJECT_MASS / 8)
                sim.apply_texture(body, texture_path(ObjectSpec(spec.color, spec.material, spec.shade, "cube")))
                v = velocity + rng.normal(0.0, 0.15, 3) + offset * 4
                p.resetBaseVelocity(body, v.tolist(), physicsClientId=sim.client)
                bodies.append(body)
    return bodies
