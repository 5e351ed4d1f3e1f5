"""The object catalog: color × material × shade × shape, textures, spawning and fragments.

Material is visible only through a surface pattern: fragile objects carry bold stripes about
one vision patch (14 px) wide, swinging equally above and below the base color; rigid objects
are plain in that same base color. Mean color and lightness therefore carry no material
information (an untrained model cannot read fragility off them); shade (pale/deep) and lighting
are balanced nuisance factors. Shapes are shared by both materials.

Why not stripes vs a checkerboard of equal contrast (the first design): that pair differs only
in edge orientation statistics; the 1.2M-parameter tiny VLM stayed at chance on held-out
fragility after 2 of 8 training epochs. A linear probe on an untrained model's mean image-token
activations reads this design at 60-64% (the trained tiny model: 99.7-100%).
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
    ("red", "pale"): (185, 110, 110),
    ("red", "deep"): (150, 72, 72),
    ("blue", "pale"): (110, 122, 185),
    ("blue", "deep"): (72, 80, 150),
}
CONTRAST = 70
TEXTURE_PX = 80  # divisible by every stripe count, so stripes are equal and the mean exact
# Stripes per texture (rows). A cube shows the whole texture on each face: 4 stripes of 1.5 cm
# (12-17 px on screen, about one 14-px vision patch). A cylinder wraps the rows around its
# circumference: 10 stripes of 1.9 cm.
STRIPES = {"cube": 4, "cylinder": 10}

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
    """The RGB texture (uint8, TEXTURE_PX²) for a spec: stripes (fragile) or plain (rigid)."""
    base = np.array(BASE_RGB[(spec.color, spec.shade)], dtype=np.int16)
    if spec.material == "rigid":
        sign = np.zeros((TEXTURE_PX, TEXTURE_PX), dtype=np.int16)
    else:
        # An even number of stripes, half above and half below the base: the mean is the base.
        r = np.arange(TEXTURE_PX)[:, None] * STRIPES[spec.shape] // TEXTURE_PX
        sign = np.where(r % 2 == 0, 1, -1) * np.ones((1, TEXTURE_PX), dtype=np.int16)
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
