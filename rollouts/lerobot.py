"""Export a run folder's episodes as a LeRobot v3.0 dataset (Parquet + MP4 + JSON metadata).

Written from the published format description (LeRobot docs, "LeRobotDataset v3.0"): many
episodes per file, episode boundaries in metadata. The layout under OUT:

    meta/info.json                                 codebase_version "v3.0", fps, features, path templates
    meta/stats.json                                per-feature min/max/mean/std/count/q01..q99
    meta/tasks.parquet                             task (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet       one row per episode: length, tasks, offsets into
                                                   the data and video files, per-episode stats, and
                                                   physteer/<field> (condition, seed, outcome, ...)
    meta/physteer.json                             provenance: run folder, config, control period
    data/chunk-000/file-000.parquet                one row per control step
    videos/observation.images.front/chunk-000/file-000.mp4   the camera, all episodes concatenated

Frames and the 17-d state are not in a run folder (videos are kept for a few seeds only, with
text overlays), so every episode is re-simulated through the one closed loop
(rollouts.resimulate): the env is rebuilt from the run's config and the episode's seed, the
logged actions are applied (a vetoed step gets the monitor's safe action
or ends the episode, as in the run), and each step's logged end-effector and object heights and
breakage must match the replay exactly, or the export stops with the step that differs. The
frame of step t is the camera image before action t. `action` is the executed action;
`physteer.agent_action` what the agent proposed; every other logged step column travels as
`physteer.<column>` (P(fragile), monitor scores and vetoes, broken, holding, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rollouts.resimulate import ACTION_COLUMNS, Replayer

CODEBASE_VERSION = "v3.0"
CAMERA = "observation.images.front"
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "ee_vx", "ee_vy", "ee_vz", "finger_width", "object_x", "object_y", "object_z",
               "object_vx", "object_vy", "object_vz", "bin_x", "bin_y", "bin_z", "holding"]  # fmt: skip
ACTION_NAMES = ["dx", "dy", "dz", "grip"]
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
KEY_COLUMNS = ("condition", "monitor", "seed", "step")
STEP_LOG_COLUMNS = (
    *ACTION_COLUMNS,
    "ee_z",
    "object_z",
    "broken",
)  # what the replay is checked against


@dataclass
class ExportResult:
    """What `export_lerobot` wrote: the dataset folder, its size and whether it has video."""

    root: Path
    episodes: int
    frames: int
    fps: int
    video: bool


def _episode_key(row: dict[str, Any]) -> tuple:
    return (row["condition"], row.get("monitor"), int(row["seed"]))


def load_run(
    run_dir: str | Path,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[tuple, list[dict[str, Any]]]]:
    """(config, episode rows in condition-then-seed order, step rows per episode key) of a run folder.

    Raises:
        FileNotFoundError: not a run folder (no config.json) or no episode table.
        ValueError: a table lacks a needed column, or an episode has no steps.
    """
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(
            f"{run} is not a run folder (no config.json); give the folder `physteer run` wrote"
        )
    config = json.loads((run / "config.json").read_text())
    for name in ("episodes.parquet", "steps.parquet"):
        if not (run / name).is_file():
            raise FileNotFoundError(
                f"{run / name} does not exist: the run has not finished (rerun it to complete it)"
            )
    episodes = pq.read_table(run / "episodes.parquet").to_pylist()
    steps = pq.read_table(run / "steps.parquet")
    missing = [
        c for c in ("condition", "seed", "step", *STEP_LOG_COLUMNS) if c not in steps.column_names
    ]
    if missing or not episodes:
        raise ValueError(f"{run}: steps.parquet lacks columns {missing} or the run has no episodes")
    per: dict[tuple, list[dict[str, Any]]] = {}
    for row in steps.to_pylist():
        per.setdefault(_episode_key(row), []).append(row)
    order = {c: i for i, c in enumerate(config.get("conditions", []))}
    episodes.sort(
        key=lambda e: (order.get(e["condition"], len(order)), str(e.get("monitor")), int(e["seed"]))
    )
    for e in episodes:
        rows = per.get(_episode_key(e))
        if not rows:
            raise ValueError(
                f"{run}: episode {e['condition']}/{e['seed']} has no rows in steps.parquet"
            )
        rows.sort(key=lambda r: r["step"])
    return config, episodes, per


def feature_stats(x: np.ndarray, image: bool = False) -> dict[str, list]:
    """LeRobot-style stats of (N, ...) values: min, max, mean, std, count, q01..q99 (finite values).

    For images (N × H × W × 3 uint8) the stats are per channel in [0, 1], shaped (3, 1, 1).
    """
    if image:
        flat = x.reshape(-1, 3).astype(np.float64) / 255.0
    else:
        flat = x.reshape(len(x), -1).astype(np.float64)
    out: dict[str, Any] = {}
    for name, fn in (
        ("min", np.nanmin),
        ("max", np.nanmax),
        ("mean", np.nanmean),
        ("std", np.nanstd),
    ):
        out[name] = fn(flat, axis=0)
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.nanquantile(flat, q, axis=0)
    shape = (3, 1, 1) if image else (-1,)
    stats = {k: np.asarray(v).reshape(shape).tolist() for k, v in out.items()}
    stats["count"] = [int(len(x))]
    return stats


def features(
    fps: int, image_size: int, video: bool, extras: dict[str, pa.DataType]
) -> dict[str, dict[str, Any]]:
    """The `features` of meta/info.json: dtype, shape and names of every column (and the camera)."""
    feats: dict[str, dict[str, Any]] = {}
    if video:
        feats[CAMERA] = {
            "dtype": "video", "shape": [image_size, image_size, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": image_size, "video.width": image_size, "video.codec": "h264",
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False},
        }  # fmt: skip
    feats["observation.state"] = {
        "dtype": "float32",
        "shape": [len(STATE_NAMES)],
        "names": STATE_NAMES,
    }
    feats["action"] = {"dtype": "float32", "shape": [4], "names": ACTION_NAMES}
    feats["physteer.agent_action"] = {"dtype": "float32", "shape": [4], "names": ACTION_NAMES}
    feats["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    for name, typ in extras.items():
        feats[name] = {"dtype": _dtype_name(typ), "shape": [1], "names": None}
    feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        feats[name] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _dtype_name(t: pa.DataType) -> str:
    return {pa.float32(): "float32", pa.bool_(): "bool", pa.int64(): "int64"}.get(t, "string")


def _extra_columns(steps: pa.Table) -> dict[str, tuple[str, pa.DataType]]:
    """Logged step columns that travel as physteer.<name> (all but keys and the action, and
    those that do not apply to the run's agent: empty or NaN in every step, such as a VLA's
    scripted `profile` or a π0's `p_fragile`)."""
    import pyarrow.compute as pc

    out = {}
    for field in steps.schema:
        if field.name in KEY_COLUMNS or field.name in ACTION_COLUMNS or field.name == "reward":
            continue
        column = steps.column(field.name)
        if pa.types.is_floating(field.type):
            column = pc.if_else(pc.is_nan(column), None, column)
        if column.null_count == len(column):
            continue
        t = field.type
        typ = pa.float32() if pa.types.is_floating(t) else pa.bool_() if pa.types.is_boolean(t) else \
            pa.int64() if pa.types.is_integer(t) else pa.string()  # fmt: skip
        out["physteer." + field.name.replace(":", ".")] = (field.name, typ)
    out["physteer.condition"] = ("condition", pa.string())
    if (
        "monitor" in steps.column_names
    ):  # the monitor arm (runs with monitors log one episode per arm)
        out["physteer.monitor"] = ("monitor", pa.string())
    return out


def _check_out(run: Path, out: Path, overwrite: bool) -> None:
    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise ValueError(
            f"OUT {out} holds the run folder {run}; choose a new folder (e.g. {run / 'lerobot'})"
        )
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; choose a new folder or pass --overwrite")


def export_lerobot(run_dir: str | Path, out: str | Path, video: bool = True, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ExportResult:  # fmt: skip
    """Write the run's episodes as a LeRobot v3.0 dataset in `out` (atomically: all or nothing).

    Args:
        run_dir: a run folder written by `physteer run` (config.json, episodes/steps.parquet).
        out: the dataset folder to create (must not exist unless `overwrite`).
        video: re-render and encode the camera (False: tabular data only, no video feature).
        overwrite: replace an existing `out`.
        progress: optional callable(episodes done, total) after each episode.

    Raises:
        FileNotFoundError / ValueError: not a finished run folder, `out` exists, or an episode
            does not replay exactly (before the dataset folder is touched).
    """
    from storage import atomic_dir, write_json

    run, out = Path(run_dir), Path(out)
    _check_out(run, out, overwrite)
    config, episodes, steps_by_episode = load_run(run)
    extras = _extra_columns(pq.read_table(run / "steps.parquet"))
    from envs.franka_pick import EnvConfig

    env_cfg = EnvConfig()
    period = env_cfg.timestep * env_cfg.substeps
    fps = max(1, round(1.0 / period))
    size = int(config.get("image_size", 384))
    feats = features(fps, size, video, {k: t for k, (_, t) in extras.items()})
    with atomic_dir(out) as tmp:
        replayer = Replayer(config, render=video)
        writer = _VideoFiles(tmp, fps) if video else None
        columns: dict[str, list] = {k: [] for k in feats if feats[k]["dtype"] != "video"}
        tasks: dict[str, int] = {}
        ep_rows: list[dict[str, Any]] = []
        total = 0
        try:
            for n, episode in enumerate(episodes):
                rows = steps_by_episode[_episode_key(episode)]
                sim = replayer.replay(episode, rows)
                length = len(sim["actions"])
                task_index = tasks.setdefault(sim["task"], len(tasks))
                _append_steps(columns, extras, rows[:length], sim, n, total, task_index, fps)
                ep = {"episode_index": n, "tasks": [sim["task"]], "length": length,
                      "data/chunk_index": 0, "data/file_index": 0,
                      "dataset_from_index": total, "dataset_to_index": total + length}  # fmt: skip
                if writer is not None:
                    chunk, file, start = writer.append(sim["images"])
                    ep.update({f"videos/{CAMERA}/chunk_index": chunk, f"videos/{CAMERA}/file_index": file,
                               f"videos/{CAMERA}/from_timestamp": start / fps,
                               f"videos/{CAMERA}/to_timestamp": (start + length) / fps})  # fmt: skip
                    ep.update(
                        _flat_stats(
                            CAMERA,
                            feature_stats(sim["images"][:: max(1, length // 50)], image=True),
                        )
                    )
                ep.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
                for key in ("observation.state", "action"):
                    ep.update(
                        _flat_stats(
                            key, feature_stats(np.asarray(columns[key][total:], dtype=np.float32))
                        )
                    )
                ep.update({f"physteer/{k}": v for k, v in episode.items()})
                ep_rows.append(ep)
                total += length
                if progress is not None:
                    progress(n + 1, len(episodes))
        finally:
            replayer.close()
            if writer is not None:
                writer.close()
        _write_tables(tmp, feats, columns, ep_rows, tasks)
        stats = {k: feature_stats(np.asarray(v, dtype=np.float64 if feats[k]["dtype"] != "bool" else bool))
                 for k, v in columns.items() if feats[k]["dtype"] in ("float32", "int64", "bool")
                 and np.isfinite(np.asarray(v, dtype=np.float64)).any()}  # fmt: skip
        if writer is not None:
            stats[CAMERA] = writer.stats()
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": "franka_panda", "fps": fps,
            "total_episodes": len(ep_rows), "total_frames": total, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB,
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if video else None,
            "splits": {"train": f"0:{len(ep_rows)}"}, "features": feats,
        }  # fmt: skip
        write_json(tmp / "meta" / "info.json", info, indent=4)
        write_json(tmp / "meta" / "stats.json", stats, indent=4)
        write_json(tmp / "meta" / "physteer.json", {
            "run": str(run.resolve()), "config": config, "control_period_s": period,
            "fps_note": f"LeRobot needs an integer fps: timestamps are frame_index / {fps}; the env's control period is {period} s",
            "frames": "re-simulated through the closed loop from each episode's seed and logged actions, "
                      "checked step by step against the log",
        }, default=str)  # fmt: skip
    return ExportResult(out, len(ep_rows), total, fps, video)


def _append_steps(columns, extras, rows, sim, episode_index, start, task_index, fps) -> None:
    length = len(rows)
    columns["observation.state"].extend(sim["states"].tolist())
    columns["action"].extend(sim["actions"].tolist())
    columns["physteer.agent_action"].extend([[r[c] for c in ACTION_COLUMNS] for r in rows])
    columns["next.reward"].extend(float(r.get("reward", 0.0)) for r in rows)
    columns["next.done"].extend(i == length - 1 for i in range(length))
    for name, (src, typ) in extras.items():
        values = [r.get(src) for r in rows]
        if typ == pa.float32():  # a per-decision signal: the value of the decision in force
            last = None
            for i, v in enumerate(values):
                if v is None or v != v:  # None or NaN: a step without a decision
                    values[i] = last
                else:
                    last = v
        columns[name].extend(values)
    columns["timestamp"].extend(i / fps for i in range(length))
    columns["frame_index"].extend(range(length))
    columns["episode_index"].extend([episode_index] * length)
    columns["index"].extend(range(start, start + length))
    columns["task_index"].extend([task_index] * length)


def _flat_stats(key: str, stats: dict[str, list]) -> dict[str, list]:
    return {f"stats/{key}/{name}": value for name, value in stats.items()}


def _arrow_type(ft: dict[str, Any]) -> pa.DataType:
    base = {
        "float32": pa.float32(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "string": pa.string(),
    }[ft["dtype"]]
    return base if ft["shape"] == [1] else pa.list_(base, ft["shape"][0])


def _write_tables(root: Path, feats, columns, ep_rows, tasks) -> None:
    from storage import write_parquet

    data = pa.table({k: pa.array(v, type=_arrow_type(feats[k])) for k, v in columns.items()})
    write_parquet(root / DATA_PATH.format(chunk_index=0, file_index=0), data)
    episodes = pa.Table.from_pylist(ep_rows)
    episodes = episodes.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                                        for f in episodes.schema]))  # fmt: skip
    write_parquet(root / EPISODES_PATH.format(chunk_index=0, file_index=0), episodes)
    # tasks.parquet as pandas writes a frame indexed by "task", which is how LeRobot reads it.
    names = list(tasks)
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}  # fmt: skip
    table = pa.table(
        {
            "task_index": pa.array([tasks[t] for t in names], pa.int64()),
            "task": pa.array(names, pa.string()),
        }
    )
    write_parquet(
        root / "meta" / "tasks.parquet",
        table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}),
    )


class _VideoFiles:
    """Concatenates episodes into MP4 files of one camera, starting a new file past the size limit."""

    def __init__(self, root: Path, fps: int) -> None:
        self.root, self.fps = root, fps
        self.chunk, self.file, self.frames_in_file = 0, 0, 0
        self.writer: Any = None
        self.samples: list[np.ndarray] = []

    def _path(self) -> Path:
        return self.root / VIDEO_PATH.format(
            video_key=CAMERA, chunk_index=self.chunk, file_index=self.file
        )

    def append(self, images: np.ndarray) -> tuple[int, int, int]:
        """Add one episode's frames; returns (chunk, file, index of its first frame in the file)."""
        import imageio.v2 as iio2

        if self.writer is not None and self._path().stat().st_size >= VIDEO_FILE_MB * 2**20:
            self.close()
            self.file, self.frames_in_file = self.file + 1, 0
            if self.file >= CHUNKS_SIZE:
                self.chunk, self.file = self.chunk + 1, 0
        if self.writer is None:
            self._path().parent.mkdir(parents=True, exist_ok=True)
            self.writer = iio2.get_writer(self._path(), format="FFMPEG", fps=self.fps, codec="libx264",
                                          pixelformat="yuv420p", macro_block_size=1,
                                          ffmpeg_params=["-g", str(self.fps)], ffmpeg_log_level="error")  # fmt: skip
        start = self.frames_in_file
        for frame in images:
            self.writer.append_data(frame)
        self.frames_in_file += len(images)
        self.samples.append(images[:: max(1, len(images) // 50)])
        return self.chunk, self.file, start

    def close(self) -> None:
        """Finish the current file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def stats(self) -> dict[str, list]:
        """Per-channel stats over the sampled frames of every episode."""
        return feature_stats(np.concatenate(self.samples), image=True)
