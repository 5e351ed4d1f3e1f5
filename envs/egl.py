"""OpenGL frames through PyBullet's EGL plugin, from one render client kept for the process.

The EGL plugin mirrors a client's visual shapes as they are created, and keeps its textures
across `resetSimulation` while PyBullet's texture ids restart: in a client that is reset per
episode, every object wore the first episode's texture. Reloading the plugin on a live client
crashes, so the old fix was a fresh client (and plugin) per episode: 12.6× an env reset's time.

Here physics never touches the plugin. `EGLRenderer` owns one DIRECT client with the plugin
loaded, which holds visual-only copies of the physics client's bodies (`envs.layers.Mirror`):
they follow the scene as it changes, each texture file is loaded once into the client (which is
never reset, so its texture ids stay valid), no copy is ever removed (the plugin blanks the
textures of bodies created after a removal: a copy no longer wanted waits out of view for the
next body of its shape), and before each frame the moving copies take their poses from the
physics client. The physics client is only read, so physics and replay are the
same under every renderer.
"""

from __future__ import annotations

import pkgutil
from typing import Any

import numpy as np

from envs._pybullet import c_output_silenced, p
from envs.layers import Mirror, VisualRecipe


class RendererUnavailableError(RuntimeError):
    """renderer="egl" was asked for where PyBullet's EGL plugin cannot load."""


class EGLRenderer:
    """Frames of a physics client's scene drawn by the EGL plugin in a render client of its own.

    Raises:
        RendererUnavailableError: the plugin cannot load here (no eglRenderer module, or no EGL
            display: libEGL and a driver, Mesa's or NVIDIA's, are needed).
    """

    def __init__(self) -> None:
        self.client = p.connect(p.DIRECT)
        self._plugin = -1
        # The plugin must be loaded before any body exists: it mirrors visual shapes as they
        # are created. Once loaded, every getCameraImage of this client goes through it.
        loader = pkgutil.get_loader("eglRenderer")
        if loader is not None:
            with c_output_silenced(1):  # the plugin prints its driver banner to stdout
                self._plugin = p.loadPlugin(
                    loader.get_filename(), "_eglRendererPlugin", physicsClientId=self.client
                )
        if self._plugin < 0:
            self.close()
            where = "pybullet has no eglRenderer module" if loader is None else "no EGL display could be opened (libEGL and a driver, e.g. Mesa or NVIDIA's, are needed)"  # fmt: skip
            raise RendererUnavailableError(
                f"renderer 'egl' cannot be used here: {where}. Use renderer 'tiny' (TinyRenderer) or 'auto' (EGL where it loads)."
            )
        self.mirror = Mirror(self.client, select=lambda recipe: True, recycle=True)

    def render(self, physics: int, recipes: dict[int, VisualRecipe], version: int, width: int,
               height: int, view: list, proj: list, light: dict[str, Any]) -> np.ndarray:  # fmt: skip
        """The RGB uint8 frame (height × width × 3) of the scene in `physics` that `recipes`
        (`Sim.visuals`, at `Sim.scene_version` `version`) describe; `light`: TinyRenderer's
        lighting keywords, passed on as before (the plugin lights the scene its own way)."""
        self.mirror.update(physics, recipes, version)
        self.mirror.sync(physics)
        with c_output_silenced(1):
            _, _, rgba, _, _ = p.getCameraImage(width, height, view, proj, renderer=p.ER_BULLET_HARDWARE_OPENGL,
                                                shadow=0, flags=p.ER_NO_SEGMENTATION_MASK,
                                                physicsClientId=self.client, **light)  # fmt: skip
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def close(self) -> None:
        """Unload the plugin and disconnect the render client."""
        if self.client >= 0 and p.isConnected(self.client):
            if self._plugin >= 0:
                with c_output_silenced(1):
                    p.unloadPlugin(self._plugin, physicsClientId=self.client)
            p.disconnect(self.client)
        self.client, self._plugin = -1, -1
