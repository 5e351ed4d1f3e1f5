"""The static layer under any light without drawing it again.

TinyRenderer shades a pixel from its colour c (the body's colour times its texture), its surface
normal n and the light (bullet3 examples/TinyRenderer, `Shader::fragment`; no shadow, white light,
no specular map, so the specular exponent is 2):

    out = min(int(ka*c + (kd*max(0, n·l) + ks*max(r_z, 0)^2) * c), 255),  r = n*(2 n·l) - l

with l the light direction normalised. The static bodies (the table and the bin's walls) are
axis-aligned boxes, so every pixel of the static layer has one of six normals and one of a few
colours: the layer is a lookup of (colour, normal) pairs, shaded per light in float32 in the
C++ code's order of operations. `StaticRelighter.build` finds each pixel's colour (a draw in
ambient light alone) and normal (two draws lit from directions each axis sees at its own
angle), then checks a random light against a real draw bit for bit; it returns None where the
layer is not of this kind (a rotated or curved static body, a colour too dark to tell its
normal, a shading the formula misses), and the layer is drawn as before.

A draw of the static layer costs ~30 ms at 384² (the table fills the frame); a relit one ~0.3 ms.
Every episode draws its own light (envs.franka_pick), so without this the layered renderer drew
the static layer again at each episode's first frame, and one-frame episodes (labelled frames)
gained nothing from layers at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: The lighting keywords a relit layer follows (all four given, the direction not zero); a frame
#: asked otherwise is drawn.
LIGHT_KEYS = frozenset(
    {"lightDirection", "lightAmbientCoeff", "lightDiffuseCoeff", "lightSpecularCoeff"}
)
_AXES = np.array(
    [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)], dtype=np.float32
)
_F32 = np.float32
#: The coding light's direction: each axis normal sees it (or its opposite) at its own angle.
CODE = np.array([1.0, 2.0, 4.0])

#: draw(light) → (RGBA pixels as uint32, height × width; depth), as LayeredRenderer._draw.
Draw = Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """(h, w) uint32 RGBA pixels → (h, w, 4) uint8 channels."""
    return pixels.view(np.uint8).reshape(*pixels.shape, 4)


class StaticRelighter:
    """The static layer of one (scene, camera, frame size), shaded for any light.

    Attributes:
        depth: the layer's depth buffer (the same under every light).
    """

    def __init__(self, rgba: np.ndarray, normals: np.ndarray, unshaded: np.ndarray,
                 index: np.ndarray, depth: np.ndarray) -> None:  # fmt: skip
        self._rgba = rgba  # K × 4 uint8: the pairs' colours as drawn in ambient light alone
        self._colors = rgba[:, :3].astype(_F32)
        self._normals = normals  # K × 3 float32 unit axes (zero where unshaded)
        self._unshaded = unshaded  # K bool: kept as drawn (black or background)
        self._index = index  # h × w int: each pixel's pair
        self.depth = depth

    @classmethod
    def build(cls, draw: Draw, seed: int = 0) -> StaticRelighter | None:
        """Find each pixel's colour and normal with 3 draws, check a random light bit for bit.

        Args:
            draw: draws the static layer under a light (TinyRenderer keywords).
            seed: seed of the check light.

        Returns:
            the relighter, or None where the layer cannot be relit exactly.
        """
        flat, depth = draw(_light((0.0, 0.0, 1.0), ambient=1.0, diffuse=0.0, specular=0.0))
        colors, inverse = np.unique(flat.ravel(), return_inverse=True)  # the K colours drawn
        color = _rgb(colors)[:, :3].astype(_F32)  # K × 3: c, as drawn in ambient light alone
        # Lit from CODE and from -CODE (ambient 0, diffuse 1), a face of axis normal n shows
        # int(max(0, n·l) c): each of the six axes gives its own pair of values for any colour
        # the codes can tell apart; the sky (the clear colour) shows the same under every light.
        coded = [
            draw(_light(sign * CODE, ambient=0.0, diffuse=1.0, specular=0.0))[0] for sign in (1, -1)
        ]
        seen = _pack(*coded)  # each pixel's two coded colours as one int
        unit = CODE / np.linalg.norm(CODE)
        shows = [(np.maximum(_F32(0), _F32(sign * a @ unit)) * color).astype(np.uint8) for a in _AXES.astype(np.float64)
                 for sign in (1, -1)]  # fmt: skip  # what each axis would show, per colour
        match = np.stack([seen == _pack(_to_pixels(shows[2 * k]), _to_pixels(shows[2 * k + 1]))[inverse].reshape(flat.shape)
                          for k in range(len(_AXES))])  # fmt: skip  # 6 × h × w
        n_match = match.sum(0)
        sky = (coded[0] == flat) & (coded[1] == flat)
        black = (color == 0).all(-1)[inverse].reshape(flat.shape)
        if not ((n_match == 1) | black | sky).all():
            return None  # a normal off the axes, a colour too dark to tell its axis, a shading not modelled
        unshaded = len(_AXES)  # kept as drawn in ambient light: black or sky
        axis = np.where((n_match == 1) & ~black & ~sky, match.argmax(0), unshaded)
        # each pixel's (colour, axis) pair as one int: RGBA in the high bits, the axis in the low 3
        pairs = (flat.astype(np.int64) << 3) | axis
        unique, index = np.unique(pairs.ravel(), return_inverse=True)
        rgba = np.ascontiguousarray((unique >> 3).astype(np.uint32)).view(np.uint8).reshape(-1, 4)
        axes = unique & 7
        normals = np.concatenate([_AXES, np.zeros((1, 3), _F32)])[axes]
        relighter = cls(rgba, normals, axes == unshaded, index.reshape(axis.shape), depth)
        rng = np.random.default_rng(seed)
        az, el = rng.uniform(0, 2 * np.pi), rng.uniform(-1.3, 1.3)
        light = _light((np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)),
                       *rng.uniform([0.3, 0.1, 0.0], [0.8, 0.6, 0.3]))  # fmt: skip
        if not np.array_equal(relighter.shade(light), draw(light)[0]):
            return None
        return relighter

    def shade(self, light: dict[str, Any]) -> np.ndarray:
        """The layer under `light` (TinyRenderer keywords) as uint32 RGBA pixels (h × w)."""
        direction = np.asarray(light["lightDirection"], dtype=np.float64)
        l = (direction / np.linalg.norm(direction)).astype(_F32)  # noqa: E741 - the formula's l
        ka, kd, ks = (
            _F32(light[k]) for k in ("lightAmbientCoeff", "lightDiffuseCoeff", "lightSpecularCoeff")
        )
        n = self._normals
        n_dot_l = n[:, 0] * l[0] + n[:, 1] * l[1] + n[:, 2] * l[2]
        diffuse = np.maximum(_F32(0), n_dot_l)
        r = n * (n_dot_l * _F32(2))[:, None] - l
        norm = np.sqrt(r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1] + r[:, 2] * r[:, 2])
        r_z = r[:, 2] * (_F32(1) / norm)
        specular = np.maximum(r_z, _F32(0)) * np.maximum(r_z, _F32(0))
        gain = (_F32(1) * (kd * diffuse + ks * specular))[:, None]  # shadow factor 1
        value = ka * self._colors + gain * self._colors * _F32(1)  # white light
        rgba = self._rgba.copy()
        shaded = ~self._unshaded
        rgba[shaded, :3] = np.minimum(value[shaded].astype(np.int32), 255)
        return rgba.view(np.uint32)[:, 0][self._index]


def _to_pixels(rgb: np.ndarray) -> np.ndarray:
    """K × 3 uint8 colours → K uint32 RGBA pixels (alpha 0: only colours are compared)."""
    rgba = np.zeros((len(rgb), 4), np.uint8)
    rgba[:, :3] = rgb
    return rgba.view(np.uint32)[:, 0]


def _pack(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two uint32 RGBA pixel arrays → one int64 per pixel of their colours (alpha dropped)."""
    rgb = np.uint32(0x00FFFFFF)
    return (first & rgb).astype(np.int64) << 24 | (second & rgb).astype(np.int64)


def _light(
    direction: tuple[float, ...], ambient: float, diffuse: float, specular: float
) -> dict[str, Any]:
    """TinyRenderer's lighting keywords."""
    return {"lightDirection": tuple(float(x) for x in direction), "lightAmbientCoeff": float(ambient),
            "lightDiffuseCoeff": float(diffuse), "lightSpecularCoeff": float(specular)}  # fmt: skip
