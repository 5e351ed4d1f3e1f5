"""Demonstrations for behaviour cloning of the tiny VLA (agents.train_vla).

A demonstration set is a table of rows, one per recorded step (frames may be a subsample of
an episode's steps): the camera frame, the env's 17-float state, the grip effort (the gripper
command executed at the previous step, -1 at an episode's first step), the expert's CLEAN
action labels for this step and the next H-1 (noise is injected into the executed actions
only, so the policy learns to recover), the true material, the episode id and the instruction.

Build the per-step arrays over whole episodes first (`chunk_labels`, `previous_grip` need every
step in order), then keep the rows that have frames:

    labels = chunk_labels(clean_actions, episodes, horizon=4)   # N_steps × 4 × 4
    efforts = previous_grip(executed_actions, episodes)          # N_steps
    keep = rendered_mask                                         # e.g. every 2nd step
    demos = Demonstrations(frames, states[keep], efforts[keep], labels[keep], ...)
    demos.save("runs/vla-demos")                                 # a folder of .npy files
    demos = Demonstrations.load("runs/vla-demos")               # frames memory-mapped
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.action_tokens import ENV_STATE_SIZE
from storage import atomic_dir

MATERIALS = ("fragile", "rigid")
_ARRAYS = ("frames", "states", "efforts", "labels", "materials", "episodes", "instructions")


def _episode_runs(episodes: np.ndarray) -> list[np.ndarray]:
    """Row indices of each episode, checking every episode's rows are contiguous."""
    ep = np.asarray(episodes)
    if ep.ndim != 1 or len(ep) == 0:
        raise ValueError(f"episodes of shape {ep.shape}: expected a non-empty 1-D array")
    starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
    if len(set(ep[starts].tolist())) != len(starts):
        raise ValueError("each episode's rows must be contiguous and in step order")
    ends = np.r_[starts[1:], len(ep)]
    return [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]


def chunk_labels(actions: np.ndarray, episodes: np.ndarray, horizon: int) -> np.ndarray:
    """(N × horizon × D) labels: row t holds actions t..t+horizon-1 of its episode.

    Past an episode's last step the last action is repeated. `actions` (N × D) are the
    expert's clean actions of every step, episodes' rows contiguous and in step order.
    """
    acts = np.asarray(actions, dtype=np.float32)
    if acts.ndim != 2 or len(acts) != len(episodes):
        raise ValueError(f"actions of shape {acts.shape}: expected (N, D) with N = len(episodes)")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon={horizon!r}: expected an int >= 1")
    out = np.empty((len(acts), horizon, acts.shape[1]), dtype=np.float32)
    for rows in _episode_runs(episodes):
        for k in range(horizon):
            out[rows, k] = acts[np.minimum(rows + k, rows[-1])]
    return out


def previous_grip(
    executed: np.ndarray, episodes: np.ndarray, open_value: float = -1.0
) -> np.ndarray:
    """(N,) grip effort: the gripper command executed at the previous step of the episode."""
    ex = np.asarray(executed, dtype=np.float32)
    if ex.ndim != 2 or len(ex) != len(episodes):
        raise ValueError(f"executed of shape {ex.shape}: expected (N, 4) with N = len(episodes)")
    out = np.empty(len(ex), dtype=np.float32)
    for rows in _episode_runs(episodes):
        out[rows[0]] = open_value
        out[rows[1:]] = ex[rows[:-1], -1]
    return out


class ConcatFrames:
    """Several (N_i × H × W × 3) frame arrays read as one, without copying them into memory:
    concatenating memory-mapped rounds (frames are ~0.44 MB each at 384²) would hold every
    round's frames in RAM at once. Indexing (an int, a slice, an int or bool array) returns a
    plain array of the rows asked for."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        shapes = {tuple(p.shape[1:]) for p in parts}
        dtypes = {np.dtype(p.dtype) for p in parts}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise ValueError(
                f"frames of shapes {sorted(shapes)} and dtypes {sorted(map(str, dtypes))}: parts must share one"
            )
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *shapes.pop())
        self.dtype = dtypes.pop()
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.concatenate([np.asarray(p) for p in self.parts]).astype(
            dtype or self.dtype, copy=False
        )

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        rows = np.arange(len(self))[index]  # slices, int and bool arrays, negative ids
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for k in np.unique(part):
            sel = part == k
            out[sel] = self.parts[k][rows[sel] - self.offsets[k]]
        return out


@dataclass
class Demonstrations:
    """Behaviour-cloning rows (see module docstring).

    Attributes:
        frames: (N × H × W × 3) uint8 camera frames (an np.memmap or ConcatFrames is fine).
        states: (N × 17) env observation states.
        efforts: (N,) gripper command executed at the previous step (-1 at an episode's start).
        labels: (N × 4) or (N × horizon × 4) clean expert actions in [-1, 1].
        materials: (N,) "fragile" / "rigid" (the true material: the co-trained answers).
        episodes: (N,) episode ids (the held-out split is by episode).
        instructions: (N,) the env's instruction of the episode.
    """

    frames: np.ndarray | ConcatFrames
    states: np.ndarray
    efforts: np.ndarray
    labels: np.ndarray
    materials: np.ndarray
    episodes: np.ndarray
    instructions: np.ndarray

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float32)
        self.efforts = np.asarray(self.efforts, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.labels.ndim == 2:
            self.labels = self.labels[:, None]
        self.materials = np.asarray(self.materials, dtype=str)
        self.episodes = np.asarray(self.episodes, dtype=np.int64)
        self.instructions = np.asarray(self.instructions, dtype=str)
        self.validate()

    def __len__(self) -> int:
        return len(self.states)

    @property
    def horizon(self) -> int:
        """Chunk steps per label row."""
        return int(self.labels.shape[1])

    def validate(self) -> None:
        """ValueError naming the first bad array (shape, dtype, range, unknown material)."""
        n = len(self.states)
        if n == 0:
            raise ValueError("demonstrations are empty")
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or len(f) != n:
            raise ValueError(f"frames: expected ({n}, H, W, 3) uint8, got {f.shape} {f.dtype}")
        if self.states.shape != (n, ENV_STATE_SIZE):
            raise ValueError(
                f"states of shape {self.states.shape}: expected ({n}, {ENV_STATE_SIZE}) "
                f"(the env state has {ENV_STATE_SIZE} floats)"
            )
        if self.labels.ndim != 3 or self.labels.shape[0] != n or self.labels.shape[2] != 4:
            raise ValueError(
                f"labels of shape {self.labels.shape}: expected ({n}, 4) or ({n}, H, 4)"
            )
        for name in ("efforts", "materials", "episodes", "instructions"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} of shape {getattr(self, name).shape}: expected ({n},)")
        for name in ("states", "efforts", "labels"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} contain NaN or inf")
        if np.abs(self.labels).max() > 1 + 1e-6 or np.abs(self.efforts).max() > 1 + 1e-6:
            raise ValueError("labels and efforts must lie in [-1, 1] (the env's action range)")
        bad = sorted(set(self.materials.tolist()) - set(MATERIALS))
        if bad:
            raise ValueError(f"materials {bad}: expected {MATERIALS}")
        _episode_runs(self.episodes)

    def save(self, path: str | Path, made_with: dict | None = None) -> Path:
        """Write one .npy per array (+ meta.json) into folder `path`, atomically.

        `made_with`: the settings that produced the rows (JSON-able), kept in meta.json so a
        later run can tell whether the folder answers its settings (`made_with_of`).
        """
        with atomic_dir(path) as tmp:
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
            meta = {
                "rows": len(self),
                "horizon": self.horizon,
                "episodes": int(len(set(self.episodes.tolist()))),
                "made_with": made_with,
            }
            (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
        return Path(path)

    @staticmethod
    def made_with_of(path: str | Path) -> dict | None:
        """The settings a folder written by `save` was made with (None: not recorded)."""
        meta = Path(path) / "meta.json"
        return json.loads(meta.read_text()).get("made_with") if meta.is_file() else None

    @classmethod
    def concat(cls, parts: Sequence[Demonstrations]) -> Demonstrations:
        """One set from several (e.g. the oracle's and DAgger rounds'); episode ids must differ."""
        if not parts:
            raise ValueError("concat of no demonstrations")
        if len({p.horizon for p in parts}) != 1:
            raise ValueError(f"horizons {[p.horizon for p in parts]}: parts must share one")
        ids = [set(p.episodes.tolist()) for p in parts]
        if sum(map(len, ids)) != len(set().union(*ids)):
            raise ValueError("parts share episode ids: give each source its own seeds")
        arrays = {
            n: np.concatenate([np.asarray(getattr(p, n)) for p in parts])
            for n in _ARRAYS
            if n != "frames"
        }
        return cls(frames=ConcatFrames([p.frames for p in parts]), **arrays)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> Demonstrations:
        """Read a folder written by `save` (frames memory-mapped when `mmap`)."""
        path = Path(path)
        missing = [n for n in _ARRAYS if not (path / f"{n}.npy").is_file()]
        if missing:
            raise ValueError(f"{path}: not a demonstrations folder (missing {missing})")
        arrays = {
            n: np.load(path / f"{n}.npy", mmap_mode="r" if (mmap and n == "frames") else None)
            for n in _ARRAYS
        }
        return cls(**arrays)
