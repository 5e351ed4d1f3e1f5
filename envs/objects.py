"""The object catalog: color × material × shade × shape, textures, spawning and fragments.

Material is visible only through a surface pattern: fragile objects carry bold stripes about
one vision patch (14 px) wide, swinging equally above and below the base color; rigid objects
are plain in that same base color. Mean color and lightness therefore carry no material
information (an untrained model cannot read fragility off them); shade (pale/deep) and lighting
are balanced nuisance factors. Shapes are shared by both materials. The render option
`pattern="plain"` (EnvConfig.object_pattern) draws every object plain, removing the material
cue from the frame while keeping color, shade and all physics.

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
# How objects are drawn: "material" (the surface pattern marks the material) or "plain" (every
# object plain in its base color: the material cue removed from the frame, physics unchanged).
PATTERNS = ("material", "plain")

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


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless `pattern` is one of PATTERNS."""
    if pattern not in PATTERNS:
        raise ValueError(
            f"object_pattern {pattern!r} is not allowed; choose one of {list(PATTERNS)}"
        )


def shows_stripes(spec: ObjectSpec, pattern: str = "material") -> bool:
    """Whether the object is drawn striped: fragile under "material", never under "plain"."""
    check_pattern(pattern)
    return pattern == "material" and spec.fragile


def texture_array(spec: ObjectSpec, pattern: str = "material") -> np.ndarray:
    """The RGB texture (uint8, TEXTURE_PX²) for a spec: stripes (fragile) or plain (rigid).

    Args:
        spec: the object.
        pattern: "material" (the pattern marks the material) or "plain" (every object plain in
            its base color, whatever its material: the material cue is removed from the frame).
    """
    base = np.array(BASE_RGB[(spec.color, spec.shade)], dtype=np.int16)
    if not shows_stripes(spec, pattern):
        sign = np.zeros((TEXTURE_PX, TEXTURE_PX), dtype=np.int16)
    else:
        # An even number of stripes, half above and half below the base: the mean is the base.
        r = np.arange(TEXTURE_PX)[:, None] * STRIPES[spec.shape] // TEXTURE_PX
        sign = np.where(r % 2 == 0, 1, -1) * np.ones((1, TEXTURE_PX), dtype=np.int16)
    img = base[None, None, :] + CONTRAST * sign[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def texture_path(spec: ObjectSpec, pattern: str = "material") -> str:
    """The texture PNG's path (written once per process per look, so objects that look alike
    share one file)."""
    return _texture_file(spec.color, spec.shade, spec.shape, shows_stripes(spec, pattern))


@functools.cache
def _texture_file(color: str, shade: str, shape: str, striped: bool) -> str:
    path = os.path.join(
        _texture_dir(), f"{color}_{shade}_{'striped' if striped else 'plain'}_{shape}.png"
    )
    material = "fragile" if striped else "rigid"
    Image.fromarray(texture_array(ObjectSpec(color, material, shade, shape))).save(path)
    return path


@functools.lru_cache(maxsize=1)
def _texture_dir() -> str:
    return tempfile.mkdtemp(prefix="physteer_textures_")


def spawn(
    sim: Sim,
    spec: ObjectSpec,
    xy: tuple[float, float],
    yaw: float,
    z0: float = 0.0,
    pattern: str = "material",
    size: float = OBJECT_SIZE,
    mass: float = OBJECT_MASS,
) -> int:
    """Create the object resting on the surface at height z0 and return its body id.

    `pattern` ("material" or "plain", see texture_array) sets only its look, never its physics;
    `size` (cube side, cylinder diameter and height) and `mass` default to the training scene's.
    """
    from envs._pybullet import p

    orn = p.getQuaternionFromEuler((0.0, 0.0, yaw))
    half = size / 2
    pos = (xy[0], xy[1], z0 + half)
    if spec.shape == "cube":
        body = sim.create_textured_cube(half, pos, mass=mass, orientation=orn)
    else:
        body = sim.create_cylinder(half, size, pos, mass=mass, orientation=orn)
    p.changeDynamics(
        body,
        -1,
        lateralFriction=1.0,
        spinningFriction=0.002,
        rollingFriction=0.0005,
        restitution=0.05,
        physicsClientId=sim.client,
    )
    sim.apply_texture(body, texture_path(spec, pattern))
    return body


def spawn_fragments(
    sim: Sim,
    spec: ObjectSpec,
    position: np.ndarray,
    velocity: np.ndarray,
    rng: np.random.Generator,
    pattern: str = "material",
    size: float = OBJECT_SIZE,
    mass: float = OBJECT_MASS,
) -> list[int]:
    """Replace a broken object (of `size` and `mass`) by eight small shards at its position
    (drawn with `pattern`, like the object); return their ids."""
    from envs._pybullet import p

    bodies = []
    for dx in (-1, 1):
        for dy in (-1, 1):
            for dz in (-1, 1):
                offset = np.array([dx, dy, dz]) * size / 4
                pos = tuple(position + offset)
                body = sim.create_textured_cube(size / 4, pos, mass=mass / 8)
                sim.apply_texture(
                    body,
                    texture_path(
                        ObjectSpec(spec.color, spec.material, spec.shade, "cube"), pattern
                    ),
                )
                v = velocity + rng.normal(0.0, 0.15, 3) + offset * 4
                p.resetBaseVelocity(body, v.tolist(), physicsClientId=sim.client)
                bodies.append(body)
    return bodies
