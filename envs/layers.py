"""Layered TinyRenderer frames: the static scene drawn once per episode, only what moves drawn
per frame, the two joined by depth.

A TinyRenderer frame costs about as much for the table that fills the background as for
everything else together (measured: ~22 of ~42 ms at 384²), and the table, the bin and the
lighting do not change within an episode. `LayeredRenderer` keeps two render-only PyBullet
clients beside the physics client:

- the static client holds visual copies of the bodies that never move (mass 0: table, bin);
  it is drawn once per (scene, camera, lighting, size) and kept with its depth buffer; every
  episode has its own light, so from the second episode on a camera and size the layer is
  relit instead (envs.relight: the same pixels, bit for bit, in ~0.3 ms instead of ~30);
- the dynamic client holds visual copies of everything else (the arm, the object, fragments);
  before each frame it takes their poses from the physics client (the arm's joint positions,
  the other bodies' base poses), is drawn, and each pixel takes the nearer of the two layers.

TinyRenderer draws each triangle into a z-buffer with no shadows (shadow=0), so the nearer of
two layers is what one pass over both would have drawn: tests/envs/test_layers.py measures the
frames against one pass. Where two surfaces touch (a resting object's bottom face on the table
top) their depths tie to within a float's last bit, and there one pass and the layers can pick
different sides: measured, 3 of 128 labelled frames (`rollouts.frames`, one per episode, many
at the object's resting step) differ from one pass in one pixel; no tolerance on the depth
comparison removes it (1 ulp leaves 2, 4 ulps make 12 of 256). The physics client is only
read, so physics and replay are unchanged. The copies follow the scene when it changes (a body
created, removed, recoloured or retextured: each `Sim` call that does so bumps
`Sim.scene_version`): a copy whose recipe is unchanged is kept (the arm, and the whole static
client, across episodes), others are removed or added, and each texture file is loaded once per
client.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs._pybullet import p
from envs.relight import LIGHT_KEYS, StaticRelighter

#: The static layer relit per light (envs.relight), per (static scene, size, camera), shared by
#: every env of the process (lanes of one worker build one); None where it cannot be relit.
_RELIGHTERS: dict[tuple, StaticRelighter | None] = {}
MAX_RELIGHTERS = 16
#: (static scene, size, camera)s drawn once under some light: a relighter is built on the second
#: (so a camera seen once, as a shifted camera is, costs none).
_DRAWN_VIEWS: set[tuple] = set()
MAX_DRAWN_VIEWS = 1024


@dataclass
class VisualRecipe:
    """How to draw one body again in another client.

    Attributes:
        kind: "box", "mesh" (a mesh file), "cylinder" or "urdf".
        params: the shape's parameters (half_extents / file and scale / radius and length /
            the URDF path) and its base pose.
        static: never moves (mass 0 and not an articulated body): drawn in the static layer.
        rgba: link index → colour set after creation (changeVisualShape).
        texture: the texture file put on the base, if any.
    """

    kind: str
    params: dict[str, Any]
    static: bool
    rgba: dict[int, tuple[float, ...]] = field(default_factory=dict)
    texture: str | None = None


def _create(client: int, recipe: VisualRecipe, textures: dict[str, int]) -> int:
    """A visual-only copy of `recipe` in `client`; returns its body id."""
    q = recipe.params
    if recipe.kind == "urdf":
        body = p.loadURDF(
            q["path"], q["position"], q["orientation"], useFixedBase=True, physicsClientId=client
        )
    else:
        if recipe.kind == "box":
            vis = p.createVisualShape(
                p.GEOM_BOX,
                halfExtents=q["half_extents"],
                rgbaColor=q["rgba"],
                physicsClientId=client,
            )
        elif recipe.kind == "mesh":
            vis = p.createVisualShape(
                p.GEOM_MESH, fileName=q["file"], meshScale=q["scale"], physicsClientId=client
            )
        elif recipe.kind == "cylinder":
            vis = p.createVisualShape(p.GEOM_CYLINDER, radius=q["radius"], length=q["length"], rgbaColor=q["rgba"],
                                      physicsClientId=client)  # fmt: skip
        else:
            raise ValueError(f"visual kind {recipe.kind!r}: expected box, mesh, cylinder or urdf")
        body = p.createMultiBody(
            0.0, -1, vis, q["position"], q["orientation"], physicsClientId=client
        )
    for link, rgba in recipe.rgba.items():
        p.changeVisualShape(body, link, rgbaColor=rgba, physicsClientId=client)
    if recipe.texture is not None:
        if recipe.texture not in textures:
            textures[recipe.texture] = p.loadTexture(recipe.texture, physicsClientId=client)
        p.changeVisualShape(body, -1, textureUniqueId=textures[recipe.texture], rgbaColor=(1, 1, 1, 1),
                            physicsClientId=client)  # fmt: skip
    return body


#: Where a recycled copy waits, out of every camera's view.
HIDDEN = (0.0, 0.0, -1000.0)


def _shape(recipe: VisualRecipe) -> tuple:
    """What a copy's geometry is made of: two recipes of one shape differ only in pose and style."""
    return (
        recipe.kind,
        repr(
            sorted((k, v) for k, v in recipe.params.items() if k not in ("position", "orientation"))
        ),
    )


class Mirror:
    """Visual-only copies of a physics client's bodies in another client, kept in step.

    The copies follow the scene when it changes (`Sim.scene_version`): a copy whose recipe is
    unchanged is kept (the arm across episodes), others are removed or added; each texture file
    is loaded once per client (the mirror's client is never reset, so texture ids stay valid).
    Before each frame `sync` puts every moving copy where its body is in the physics client.

    With `recycle`, no copy is ever removed: one no longer wanted waits out of view and is
    given to a later body of the same shape, restyled (its colours and texture set again). The
    EGL plugin needs this: once a body is removed, the textures of bodies created afterwards
    come out blank (measured on pybullet 3.2.7 with Mesa's llvmpipe).

    Args:
        client: the client the copies live in (render-only: never stepped).
        select: which recipes to copy (e.g. only what moves).
        recycle: hide and reuse copies instead of removing them.
    """

    def __init__(self, client: int, select: Callable[[VisualRecipe], bool], recycle: bool = False) -> None:  # fmt: skip
        self.client, self.select, self.recycle = client, select, recycle
        self.version: int | None = None  # the scene version the copies match
        self._copies: dict[int, tuple[VisualRecipe, int]] = {}  # physics body → (recipe, copy)
        self._joints: dict[int, list[int]] = {}  # articulated physics body → its moving joints
        self._textures: dict[str, int] = {}  # file → texture id in `client`
        self._waiting: list[tuple[VisualRecipe, int]] = []  # recycled copies, out of view

    def update(self, physics: int, recipes: dict[int, VisualRecipe], version: int) -> None:
        """Make the copies match the scene if it changed since the last call."""
        if version == self.version:
            return
        wanted = {body: r for body, r in recipes.items() if self.select(r)}
        for body, (recipe, twin) in list(self._copies.items()):
            if wanted.get(body) != recipe:
                if self.recycle:
                    p.resetBasePositionAndOrientation(
                        twin, HIDDEN, (0, 0, 0, 1), physicsClientId=self.client
                    )
                    self._waiting.append((recipe, twin))
                else:
                    p.removeBody(twin, physicsClientId=self.client)
                del self._copies[body]
                self._joints.pop(body, None)
        for body, recipe in wanted.items():
            if body in self._copies:
                continue
            # A copy of the recipe: a Sim may still colour or texture its own after this.
            self._copies[body] = (
                copy.deepcopy(recipe),
                self._reused(recipe) or _create(self.client, recipe, self._textures),
            )
            if recipe.kind == "urdf":
                n = p.getNumJoints(body, physicsClientId=physics)
                self._joints[body] = [j for j in range(n)
                                      if p.getJointInfo(body, j, physicsClientId=physics)[2] != p.JOINT_FIXED]  # fmt: skip
        self.version = version

    def _reused(self, recipe: VisualRecipe) -> int | None:
        """A waiting copy of the same shape restyled as `recipe` and put at its pose, or None.
        Only a copy whose old style the new one covers qualifies (every link it recoloured is
        recoloured again; a texture only where the new recipe has one), so none shows through."""
        for i, (old, twin) in enumerate(self._waiting):
            if _shape(old) != _shape(recipe) or not set(old.rgba) <= set(recipe.rgba):
                continue
            if old.texture is not None and recipe.texture is None:
                continue
            del self._waiting[i]
            for link, rgba in recipe.rgba.items():
                p.changeVisualShape(twin, link, rgbaColor=rgba, physicsClientId=self.client)
            if recipe.texture is not None:
                if recipe.texture not in self._textures:
                    self._textures[recipe.texture] = p.loadTexture(
                        recipe.texture, physicsClientId=self.client
                    )
                p.changeVisualShape(twin, -1, textureUniqueId=self._textures[recipe.texture],
                                    rgbaColor=(1, 1, 1, 1), physicsClientId=self.client)  # fmt: skip
            q = recipe.params
            p.resetBasePositionAndOrientation(
                twin, q["position"], q["orientation"], physicsClientId=self.client
            )
            return twin
        return None

    def sync(self, physics: int) -> None:
        """Put every moving copy where its body is in the physics client now."""
        for body, (recipe, twin) in self._copies.items():
            if recipe.static:
                continue
            joints = self._joints.get(body)
            if joints is None:
                pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=physics)
                p.resetBasePositionAndOrientation(twin, pos, orn, physicsClientId=self.client)
                continue
            states = p.getJointStates(body, joints, physicsClientId=physics)
            for j, state in zip(joints, states, strict=True):
                p.resetJointState(twin, j, state[0], physicsClientId=self.client)


class LayeredRenderer:
    """Frames of a physics client's scene, drawn in two layers (see the module docstring).

    Args:
        physics_client: the client whose bodies are drawn (only read).
    """

    def __init__(self, physics_client: int) -> None:
        self.physics = physics_client
        self.static_client = p.connect(p.DIRECT)
        self.dynamic_client = p.connect(p.DIRECT)
        self._static_recipes: list[VisualRecipe] | None = None
        self._static_textures: dict[str, int] = {}
        self._dynamic = Mirror(self.dynamic_client, select=lambda r: not r.static)
        # (key, RGBA pixels as uint32, depth) of the static layer
        self._static_frame: tuple[Any, np.ndarray, np.ndarray] | None = None
        self.relit_layers = 0  # static layers relit rather than drawn (tests read it)

    def close(self) -> None:
        """Disconnect the render clients."""
        for c in (self.static_client, self.dynamic_client):
            if c >= 0 and p.isConnected(c):
                p.disconnect(c)
        self.static_client = self.dynamic_client = -1

    def _update_static(self, recipes: dict[int, VisualRecipe]) -> None:
        """Rebuild the static client when the static scene changed (a new table colour)."""
        static = [copy.deepcopy(r) for r in recipes.values() if r.static]
        if static != self._static_recipes:
            p.resetSimulation(physicsClientId=self.static_client)
            self._static_textures.clear()
            for recipe in static:
                _create(self.static_client, recipe, self._static_textures)
            self._static_recipes, self._static_frame = static, None

    def render(self, recipes: dict[int, VisualRecipe], version: int, width: int, height: int,
               view: list, proj: list, light: dict[str, Any]) -> np.ndarray:  # fmt: skip
        """The RGB uint8 frame (height × width × 3) of the scene `recipes` describes.

        Args:
            recipes: physics body id → how it looks (`Sim.visuals`).
            version: `Sim.scene_version`; the copies are rebuilt when it changes.
            width, height, view, proj: the camera, as for getCameraImage.
            light: TinyRenderer's lighting keywords (lightDirection, lightAmbientCoeff, ...).
        """
        if version != self._dynamic.version:
            self._update_static(recipes)
            self._dynamic.update(self.physics, recipes, version)
        key = (
            width,
            height,
            tuple(view),
            tuple(proj),
            tuple(sorted((k, tuple(np.ravel(v))) for k, v in light.items())),
        )
        if self._static_frame is None or self._static_frame[0] != key:
            self._static_frame = (key, *self._static_layer(width, height, view, proj, light))
        _, static_rgba, static_depth = self._static_frame
        self._dynamic.sync(self.physics)
        rgba, depth = self._draw(self.dynamic_client, width, height, view, proj, light)
        # Each RGBA pixel as one uint32: choosing whole pixels is ~15x faster than choosing
        # channels of an (h, w, 3) array (2.1 -> 0.13 ms at 384², then 0.65 ms for the copy).
        joined = np.where(depth < static_depth, rgba, static_rgba)
        return np.ascontiguousarray(joined.view(np.uint8).reshape(height, width, 4)[:, :, :3])

    def _static_layer(self, width: int, height: int, view: list, proj: list,
                      light: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The static layer under `light`: relit (envs.relight) where its size and camera were
        drawn before (so a camera drawn once, as a shifted camera is, costs no relighter), else
        drawn."""
        where = (repr(self._static_recipes), width, height, tuple(view), tuple(proj))
        relightable = set(light) == LIGHT_KEYS and np.any(light["lightDirection"])
        if where in _DRAWN_VIEWS and relightable:
            if where not in _RELIGHTERS:
                while len(_RELIGHTERS) >= MAX_RELIGHTERS:
                    del _RELIGHTERS[next(iter(_RELIGHTERS))]  # the oldest
                _RELIGHTERS[where] = StaticRelighter.build(
                    lambda lt: self._draw(self.static_client, width, height, view, proj, lt)
                )
            relighter = _RELIGHTERS[where]
            if relighter is not None:
                self.relit_layers += 1
                return relighter.shade(light), relighter.depth
        if len(_DRAWN_VIEWS) >= MAX_DRAWN_VIEWS:
            _DRAWN_VIEWS.clear()  # e.g. a camera shift draws a new camera every episode
        _DRAWN_VIEWS.add(where)
        return self._draw(self.static_client, width, height, view, proj, light)

    @staticmethod
    def _draw(
        client: int, width: int, height: int, view: list, proj: list, light: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One TinyRenderer pass of `client`: (RGBA pixels as uint32, height × width; depth)."""
        _, _, rgba, depth, _ = p.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0,
                                                flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=client, **light)  # fmt: skip
        pixels = np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4))
        depth = np.asarray(depth, dtype=np.float32).reshape(height, width)
        return pixels.view(np.uint32)[:, :, 0], depth
