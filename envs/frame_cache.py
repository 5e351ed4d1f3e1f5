"""A frame cache keyed by what the frame shows, for studies that revisit the same states.

Conditions of one study often replay the same seeds: arms of a steering benchmark whose
steering leaves the actions unchanged, the enforced arm of a monitor benchmark up to its first
veto, attacks before their onset, a rerun of a run. Their frames are the same pictures drawn
again. The cache keys a frame on everything TinyRenderer draws it from: the renderer and image
size, the camera and light, and every visible body's look (`envs.layers.VisualRecipe`) and pose
(base pose, and joint positions of an articulated body), bit for bit, plus PyBullet's version.
The same key means the same inputs to a deterministic rasteriser, so a cached frame is the
frame that would have been drawn: results cannot change. EGL frames are never cached (they
depend on the GL driver, which the key cannot see).

Off unless asked for: `physteer --frame-cache DIR COMMAND ...`, or the environment variable
PHYSTEER_FRAME_CACHE=DIR (worker processes inherit it). Frames are stored as .npy files (a
384² frame: 442 KB) under DIR, written atomically, so several processes can share one cache;
nothing is evicted (delete DIR to empty it). Each process also keeps its last frames in memory.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from envs._pybullet import p
from envs.layers import VisualRecipe

#: The environment variable naming the cache directory (unset: no cache).
ENV_VAR = "PHYSTEER_FRAME_CACHE"


class FrameCache:
    """Frames on disk under `directory` (shared between processes), the last few in memory.

    Args:
        directory: where the .npy files go (created if missing).
        memory_frames: how many recent frames this process keeps in memory.
    """

    def __init__(self, directory: str | Path, memory_frames: int = 64) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"frame cache {str(self.directory)!r} exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.memory_frames = memory_frames
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The frame stored under `key` (a copy the caller may change), or None."""
        frame = self._memory.get(key)
        if frame is None:
            try:
                frame = np.load(self._path(key), allow_pickle=False)
            except (FileNotFoundError, ValueError, OSError):  # absent, or a torn foreign write
                self.misses += 1
                return None
            self._remember(key, frame)
        else:
            self._memory.move_to_end(key)
        self.hits += 1
        return frame.copy()

    def put(self, key: str, frame: np.ndarray) -> None:
        """Store `frame` under `key` (atomically: a reader sees the whole file or none)."""
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, frame, allow_pickle=False)
        os.replace(tmp, path)
        self._remember(key, frame.copy())

    def _remember(self, key: str, frame: np.ndarray) -> None:
        self._memory[key] = frame
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_frames:
            self._memory.popitem(last=False)


_active: dict[str, FrameCache] = {}


def active() -> FrameCache | None:
    """The cache PHYSTEER_FRAME_CACHE names (one per directory and process), or None."""
    directory = os.environ.get(ENV_VAR)
    if not directory:
        return None
    if directory not in _active:
        _active[directory] = FrameCache(directory)
    return _active[directory]


@functools.cache
def _text_content(text: str) -> str:
    """A file path by its file's content (texture and URDF files live in per-process temporary
    folders), other text as it is; once per process and text, not per frame."""
    if not os.path.isfile(text):
        return text
    return hashlib.blake2b(Path(text).read_bytes(), digest_size=16).hexdigest()


def _content(value: Any) -> Any:
    return _text_content(value) if isinstance(value, str) else value


def scene_key(client: int, visuals: dict[int, VisualRecipe], renderer: str, width: int,
              height: int, view: Any, proj: Any, light: dict[str, Any]) -> str:  # fmt: skip
    """A digest of everything a TinyRenderer frame of `client`'s scene is drawn from."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((p.getAPIVersion(), renderer, width, height, tuple(view), tuple(proj),
                   sorted((k, tuple(np.ravel(v))) for k, v in light.items()))).encode())  # fmt: skip
    for body in sorted(visuals):
        recipe = visuals[body]
        params = sorted((k, _content(v)) for k, v in recipe.params.items())
        texture = None if recipe.texture is None else _content(recipe.texture)
        look = (recipe.kind, params, sorted(recipe.rgba.items()), texture)
        h.update(repr(look).encode())
        if recipe.static:
            continue
        pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=client)
        h.update(np.asarray(pos + orn, dtype=np.float64).tobytes())
        if recipe.kind == "urdf":
            joints = range(p.getNumJoints(body, physicsClientId=client))
            states = p.getJointStates(body, joints, physicsClientId=client)
            h.update(np.asarray([s[0] for s in states], dtype=np.float64).tobytes())
    return h.hexdigest()
