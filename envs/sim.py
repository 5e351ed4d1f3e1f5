"""A thin wrapper around one PyBullet physics client.

Every call carries this client's `physicsClientId`, so several environments can live in one
process without sharing a world. The wrapper only adds what the scene needs: building boxes
and cylinders, reading contacts, and rendering a camera frame.

Rendering: TinyRenderer (PyBullet's CPU rasteriser: every shipped model was trained on its
frames), in one pass over the world (`renderer="tiny"`) or in two layers (`"tiny-layered"`: the
static scene drawn once per episode, what moves drawn per frame, joined by depth; envs.layers),
or OpenGL through PyBullet's EGL plugin (`renderer="egl"`): headless, on a GPU
where the EGL driver has one, else in Mesa's software rasteriser (llvmpipe). EGL frames are lit
differently (PyBullet's OpenGL light, not `Lighting`); `benchmarks/renderers.py` measures their
speed and how often the tiny model decides the same on both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybullet_data

from envs._pybullet import p
from envs.egl import EGLRenderer, RendererUnavailableError
from envs.frame_cache import active as active_frame_cache
from envs.frame_cache import scene_key
from envs.layers import LayeredRenderer, VisualRecipe


@dataclass(frozen=True)
class Camera:
    """A fixed pinhole camera: where it is, what it looks at, and its field of view."""

    # Framed on the spawn region: a 6 cm object spans 73-104 px of a 384² frame (5-7 vision
    # patches), so its surface pattern survives the 14-px patches; the bin is in view at the side.
    eye: tuple[float, float, float] = (0.40, 0.02, 0.46)
    target: tuple[float, float, float] = (-0.02, 0.0, 0.0)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov_deg: float = 30.0
    near: float = 0.05
    far: float = 3.0


@dataclass(frozen=True)
class Lighting:
    """TinyRenderer light settings; varied per episode as a nuisance factor."""

    direction: tuple[float, float, float] = (0.4, -0.3, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.35
    specular: float = 0.05


#: Camera-frame renderers: "tiny" (TinyRenderer, one pass), "tiny-layered" (TinyRenderer, the
#: static layer drawn once per episode: envs.layers), "egl" (OpenGL through the EGL plugin; an
#: error where it cannot load), "auto" (EGL where it loads, else TinyRenderer).
RENDERERS = ("tiny", "tiny-layered", "egl", "auto")
TINY_RENDERERS = ("tiny", "tiny-layered")
#: The default: TinyRenderer frames (what the shipped models were trained on), drawn in layers
#: (the same pixels as one pass, tests/envs/test_layers.py; about 3× the frames/s).
DEFAULT_RENDERER = "tiny-layered"


class NoDisplayError(RuntimeError):
    """The PyBullet GUI was asked for where there is no display to open it on."""


def check_renderer(renderer: str) -> None:
    """ValueError naming `renderer` and the allowed ones unless it is one of RENDERERS."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer {renderer!r} is not allowed; choose one of {list(RENDERERS)}")


def display_set() -> bool:
    """Cheap check: False on Linux when DISPLAY is unset (the GUI cannot open), else True."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY"))


def display_problem() -> str | None:
    """Why the PyBullet GUI cannot open here, or None when it can.

    On Linux the GUI draws through X11: PyBullet ends the whole process ("cannot connect to X
    server") when it cannot reach one, so this asks libX11 first. Other platforms: None.
    """
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY")
    if not display:
        return "DISPLAY is not set (no X server)"
    name = ctypes.util.find_library("X11")
    if name is None:
        return "libX11 is not installed"
    x11 = ctypes.CDLL(name)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = x11.XOpenDisplay(display.encode())
    if not handle:
        return f"cannot connect to the X server at DISPLAY={display!r}"
    x11.XCloseDisplay(handle)
    return None


class Sim:
    """One PyBullet client in DIRECT (headless) or GUI mode.

    Args:
        timestep: physics step in seconds.
        gui: open the PyBullet GUI (needs a display).
        renderer: camera frames from "tiny", "tiny-layered", "egl" or "auto" (RENDERERS); the one in use is
            `self.renderer` ("tiny" or "egl"). The GUI renders with its own OpenGL.

    Raises:
        ValueError: an unknown renderer.
        NoDisplayError (a RuntimeError): `gui` where no display can be opened (checked before
            PyBullet tries, since PyBullet would end the process).
        RendererUnavailableError (a RuntimeError): renderer "egl" where the plugin cannot load.
    """

    def __init__(
        self, timestep: float = 1.0 / 240.0, gui: bool = False, renderer: str = DEFAULT_RENDERER
    ) -> None:
        check_renderer(renderer)
        self.timestep = timestep
        self.client = -1
        # "egl" and "auto" become "egl" once the plugin loads; "auto" without it draws TinyRenderer
        # frames in layers.
        self.renderer = renderer if renderer in TINY_RENDERERS else DEFAULT_RENDERER
        self._egl: EGLRenderer | None = None
        self.visuals: dict[int, VisualRecipe] = {}  # body → how it looks (the layered renderer)
        self.scene_version = 0
        self._layers: LayeredRenderer | None = None
        if gui:
            problem = display_problem()
            if problem is not None:
                raise NoDisplayError(
                    f"render_mode='human' opens the PyBullet GUI, which needs a display: {problem}. "
                    "On a headless machine use render_mode='rgb_array' (frames from env.render()), "
                    "or run under a virtual display (xvfb-run)."
                )
        self.client = p.connect(p.GUI if gui else p.DIRECT)
        if self.client < 0:
            raise RuntimeError("could not connect to PyBullet (GUI needs a display)")
        if renderer not in TINY_RENDERERS and not gui:
            try:  # one render client with the EGL plugin, kept for the Sim's life (envs.egl)
                self._egl, self.renderer = EGLRenderer(), "egl"
            except RendererUnavailableError:
                if renderer == "egl":
                    self.close()
                    raise
        self.reset()

    def reset(self) -> None:
        """Empty the world: no bodies, gravity on, our timestep."""
        self.visuals, self.scene_version = {}, self.scene_version + 1
        p.resetSimulation(physicsClientId=self.client)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(self.timestep, physicsClientId=self.client)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)

    def close(self) -> None:
        """Disconnect the client; the object is unusable afterwards."""
        for renderer in (self._layers, self._egl):
            if renderer is not None:
                renderer.close()
        self._layers = self._egl = None
        if self.client >= 0 and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = -1

    def step(self) -> None:
        """Advance physics by one timestep."""
        p.stepSimulation(physicsClientId=self.client)

    # --- building ---------------------------------------------------------------------------
    def create_box(
        self,
        half_extents: tuple[float, float, float],
        position: tuple[float, float, float],
        mass: float = 0.0,
        rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0),
        orientation: tuple[float, float, float, float] = (0, 0, 0, 1),
        lateral_friction: float = 1.0,
    ) -> int:
        """Create a box body and return its id (mass 0 makes it static)."""
        c = self.client
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half_extents, physicsClientId=c)
        vis = p.createVisualShape(
            p.GEOM_BOX, halfExtents=half_extents, rgbaColor=rgba, physicsClientId=c
        )
        body = self._body(col, vis, position, mass, orientation, lateral_friction)
        self._record(
            body,
            "box",
            mass,
            half_extents=half_extents,
            rgba=rgba,
            position=position,
            orientation=orientation,
        )
        return body

    def _record(self, body: int, kind: str, mass: float, **params: Any) -> None:
        """Remember how `body` looks (the layered renderer draws it again in its own clients)."""
        self.visuals[body] = VisualRecipe(kind, params, static=mass == 0.0)
        self.scene_version += 1

    def _body(
        self, col: int, vis: int, position, mass: float, orientation, lateral_friction: float
    ) -> int:
        body = p.createMultiBody(mass, col, vis, position, orientation, physicsClientId=self.client)
        p.changeDynamics(body, -1, lateralFriction=lateral_friction, physicsClientId=self.client)
        return body

    def create_collider(
        self, half_extents: tuple[float, float, float], position: tuple[float, float, float]
    ) -> int:
        """Create a static, invisible box (collision only)."""
        c = self.client
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half_extents, physicsClientId=c)
        return p.createMultiBody(0.0, col, -1, position, physicsClientId=c)

    def create_textured_cube(
        self,
        half: float,
        position: tuple[float, float, float],
        mass: float = 0.0,
        orientation: tuple[float, float, float, float] = (0, 0, 0, 1),
        lateral_friction: float = 1.0,
    ) -> int:
        """Create a cube whose visual is pybullet_data's cube.obj (full texture on every face).

        A GEOM_BOX visual maps textures so that each face shows only a texel or two; the mesh
        has proper per-face UVs, so a surface pattern is actually visible.
        """
        c = self.client
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=(half, half, half), physicsClientId=c)
        vis = p.createVisualShape(
            p.GEOM_MESH, fileName="cube.obj", meshScale=(2 * half,) * 3, physicsClientId=c
        )
        body = self._body(col, vis, position, mass, orientation, lateral_friction)
        self._record(body, "mesh", mass, file=os.path.join(pybullet_data.getDataPath(), "cube.obj"),
                     scale=(2 * half,) * 3, position=position, orientation=orientation)  # fmt: skip
        return body

    def create_cylinder(
        self,
        radius: float,
        height: float,
        position: tuple[float, float, float],
        mass: float = 0.0,
        rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0),
        orientation: tuple[float, float, float, float] = (0, 0, 0, 1),
        lateral_friction: float = 1.0,
    ) -> int:
        """Create an upright cylinder body and return its id."""
        c = self.client
        col = p.createCollisionShape(
            p.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=c
        )
        vis = p.createVisualShape(
            p.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=rgba, physicsClientId=c
        )
        body = self._body(col, vis, position, mass, orientation, lateral_friction)
        self._record(body, "cylinder", mass, radius=radius, length=height, rgba=rgba, position=position,
                     orientation=orientation)  # fmt: skip
        return body

    def load_urdf(
        self, path: str, position: tuple[float, float, float], fixed_base: bool = True
    ) -> int:
        """Load an articulated body (the robot) from a URDF file; returns its id."""
        body = p.loadURDF(path, position, useFixedBase=fixed_base, physicsClientId=self.client)
        self.visuals[body] = VisualRecipe("urdf", {"path": path, "position": position, "orientation": (0, 0, 0, 1)},
                                          static=False)  # fmt: skip
        self.scene_version += 1
        return body

    def set_color(self, body: int, link: int, rgba: tuple[float, float, float, float]) -> None:
        """Colour one link of a body (-1: its base)."""
        p.changeVisualShape(body, link, rgbaColor=rgba, physicsClientId=self.client)
        if body in self.visuals:
            self.visuals[body].rgba[link] = tuple(rgba)
            self.scene_version += 1

    def apply_texture(self, body: int, texture_path: str) -> None:
        """Load an image file as a texture and put it on `body` (white tint keeps its colors)."""
        tex = p.loadTexture(texture_path, physicsClientId=self.client)
        p.changeVisualShape(
            body, -1, textureUniqueId=tex, rgbaColor=(1, 1, 1, 1), physicsClientId=self.client
        )
        if body in self.visuals:
            self.visuals[body].texture = texture_path
            self.scene_version += 1

    def remove(self, body: int) -> None:
        """Remove a body from the world."""
        p.removeBody(body, physicsClientId=self.client)
        if self.visuals.pop(body, None) is not None:
            self.scene_version += 1

    # --- reading ----------------------------------------------------------------------------
    def pose(self, body: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (position, quaternion xyzw) of a body's base."""
        pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=self.client)
        return np.asarray(pos, dtype=np.float64), np.asarray(orn, dtype=np.float64)

    def velocity(self, body: int) -> np.ndarray:
        """Return the linear velocity of a body's base."""
        return np.asarray(self.velocity_tuple(body), dtype=np.float64)

    def velocity_tuple(self, body: int) -> tuple[float, float, float]:
        """The linear velocity of a body's base as PyBullet gives it (no array: per substep)."""
        return p.getBaseVelocity(body, physicsClientId=self.client)[0]

    def contacts(self, body_a: int, body_b: int | None = None) -> list[tuple]:
        """Return PyBullet contact points of `body_a` (optionally only those with `body_b`)."""
        if body_b is None:
            return p.getContactPoints(bodyA=body_a, physicsClientId=self.client)
        return p.getContactPoints(bodyA=body_a, bodyB=body_b, physicsClientId=self.client)

    # --- rendering --------------------------------------------------------------------------
    def _matrices(self, width: int, height: int, camera: Camera) -> tuple[list, list]:
        c = self.client
        view = p.computeViewMatrix(camera.eye, camera.target, camera.up, physicsClientId=c)
        proj = p.computeProjectionMatrixFOV(
            camera.fov_deg, width / height, camera.near, camera.far, physicsClientId=c
        )
        return view, proj

    def render(self, width: int, height: int, camera: Camera, lighting: Lighting) -> np.ndarray:
        """Render an RGB uint8 frame (height × width × 3) with `self.renderer`; `lighting` is
        TinyRenderer's (the EGL plugin lights the scene its own way)."""
        view, proj = self._matrices(width, height, camera)
        light = dict(lightDirection=lighting.direction, lightAmbientCoeff=lighting.ambient,
                     lightDiffuseCoeff=lighting.diffuse, lightSpecularCoeff=lighting.specular)  # fmt: skip
        if self._egl is not None:  # never cached: EGL frames depend on the GL driver
            return self._egl.render(self.client, self.visuals, self.scene_version, width, height,
                                    view, proj, light)  # fmt: skip
        cache = active_frame_cache()
        if cache is None:
            return self._draw_tiny(width, height, view, proj, light)
        key = scene_key(self.client, self.visuals, self.renderer, width, height, view, proj, light)
        frame = cache.get(key)
        if frame is None:
            frame = self._draw_tiny(width, height, view, proj, light)
            cache.put(key, frame)
        return frame

    def _draw_tiny(
        self, width: int, height: int, view: list, proj: list, light: dict[str, Any]
    ) -> np.ndarray:
        if self.renderer == "tiny-layered":
            if self._layers is None:
                self._layers = LayeredRenderer(self.client)
            return self._layers.render(
                self.visuals, self.scene_version, width, height, view, proj, light
            )
        _, _, rgba, _, _ = p.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0,
                                            flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=self.client, **light)  # fmt: skip
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def render_segmentation(self, width: int, height: int, camera: Camera) -> np.ndarray:
        """Render the body-id segmentation mask (for measuring how large things appear): drawn
        by TinyRenderer in the physics client whatever the renderer, so ids are its body ids."""
        c = self.client
        view, proj = self._matrices(width, height, camera)
        _, _, _, _, seg = p.getCameraImage(
            width, height, view, proj, renderer=p.ER_TINY_RENDERER, physicsClientId=c
        )
        return np.asarray(seg, dtype=np.int64).reshape(height, width)
