"""`physteer export-lerobot`: a real run of the tiny model exported as a LeRobot v3.0 dataset.

Checked against the published format description (LeRobot docs, "LeRobotDataset v3.0"):
meta/info.json (codebase_version, fps, features with dtype/shape/names, path templates),
meta/episodes/chunk-*/file-*.parquet (length, tasks, data and video offsets), meta/tasks.parquet,
meta/stats.json, data/chunk-*/file-*.parquet, videos/<camera>/chunk-*/file-*.mp4. One episode's
actions and frames make the round trip: actions against the run's steps.parquet, frames
against the run's own recorded video and a fresh render of the seed.
"""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.main import main
from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig
from rollouts.lerobot import CAMERA, export_lerobot

SCALAR = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = ExperimentConfig(
        name="export", out=str(out), conditions=["unsteered"], seeds=[0, 1], videos=1
    )
    return run_experiment(cfg, progress=False)


@pytest.fixture(scope="module")
def dataset(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("lerobot") / "ds"
    result = export_lerobot(run, out)
    assert result.root == out and result.video
    return out


def _read(root, rel):
    return pq.read_table(root / rel)


def test_layout_and_info_follow_the_v3_description(dataset, run):
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert isinstance(info["fps"], int) and info["fps"] > 0
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert (
        info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    episodes_run = pq.read_table(run / "episodes.parquet").to_pylist()
    assert info["total_episodes"] == len(episodes_run) == 2
    assert info["total_frames"] == sum(e["steps"] for e in episodes_run)
    assert info["splits"] == {"train": "0:2"} and info["total_tasks"] >= 1
    for name, ft in info["features"].items():
        assert {"dtype", "shape", "names"} <= set(ft), name
    for name in (
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
        "action",
        "observation.state",
    ):
        assert name in info["features"], name
    cam = info["features"][CAMERA]
    assert (
        cam["dtype"] == "video"
        and cam["shape"] == [384, 384, 3]
        and cam["names"] == ["height", "width", "channels"]
    )
    assert cam["info"]["video.fps"] == info["fps"] and cam["info"]["video.codec"] == "h264"
    # The data file holds exactly the non-video features, typed as their dtype and shape say.
    eps = _read(dataset, "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    data = _read(
        dataset,
        info["data_path"].format(
            chunk_index=eps[0]["data/chunk_index"], file_index=eps[0]["data/file_index"]
        ),
    )
    assert set(data.column_names) == {
        k for k, v in info["features"].items() if v["dtype"] != "video"
    }
    for name, ft in info["features"].items():
        if ft["dtype"] == "video":
            continue
        want = (
            SCALAR[ft["dtype"]]
            if ft["shape"] == [1]
            else pa.list_(SCALAR[ft["dtype"]], ft["shape"][0])
        )
        assert data.schema.field(name).type == want, name
    for key in ("physteer.condition", "physteer.p_fragile", "physteer.broken", "physteer.vetoed"):
        assert key in data.column_names, key
    assert (
        dataset / info["video_path"].format(video_key=CAMERA, chunk_index=0, file_index=0)
    ).is_file()
    tasks = _read(dataset, "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == [
        "task"
    ]  # read as LeRobot reads it
    stats = json.loads((dataset / "meta" / "stats.json").read_text())
    assert np.array(stats[CAMERA]["mean"]).shape == (3, 1, 1)
    assert len(stats["action"]["mean"]) == 4 and stats["action"]["count"] == [info["total_frames"]]
    for key in ("min", "max", "mean", "std", "count", "q01", "q50", "q99"):
        assert key in stats["observation.state"], key


def test_episode_metadata_offsets_and_outcomes(dataset, run):
    info = json.loads((dataset / "meta" / "info.json").read_text())
    fps = info["fps"]
    eps = _read(dataset, "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    run_eps = pq.read_table(run / "episodes.parquet").to_pylist()
    tasks = dict(zip(*_read(dataset, "meta/tasks.parquet").to_pydict().values(), strict=True))
    start = 0
    for i, (ep, logged) in enumerate(zip(eps, run_eps, strict=True)):
        assert ep["episode_index"] == i and ep["dataset_from_index"] == start
        assert ep["length"] == ep["dataset_to_index"] - start == logged["steps"]
        assert ep[f"videos/{CAMERA}/from_timestamp"] == pytest.approx(start / fps)
        assert ep[f"videos/{CAMERA}/to_timestamp"] == pytest.approx((start + ep["length"]) / fps)
        assert all(t in tasks.values() or t in tasks for t in ep["tasks"])
        assert ep["tasks"] == [f"Put the {logged['color']} object in the bin."]
        for key in ("condition", "seed", "success", "broken", "material", "peak_force"):
            assert ep[f"physteer/{key}"] == logged[key], key
        start = ep["dataset_to_index"]


def test_round_trip_actions_state_and_frames(dataset, run):
    info = json.loads((dataset / "meta" / "info.json").read_text())
    fps = info["fps"]
    ep = _read(dataset, "meta/episodes/chunk-000/file-000.parquet").to_pylist()[
        0
    ]  # unsteered, seed 0 (has a video)
    data = _read(dataset, "data/chunk-000/file-000.parquet").to_pydict()
    rows = slice(ep["dataset_from_index"], ep["dataset_to_index"])
    steps = pq.read_table(run / "steps.parquet").to_pylist()
    logged = sorted(
        (s for s in steps if s["condition"] == "unsteered" and s["seed"] == 0),
        key=lambda s: s["step"],
    )
    want = np.array(
        [[s[c] for c in ("a_dx", "a_dy", "a_dz", "a_grip")] for s in logged], dtype=np.float32
    )
    assert np.array_equal(
        np.array(data["action"][rows], dtype=np.float32), want
    )  # no veto: executed = proposed
    assert np.array_equal(np.array(data["physteer.agent_action"][rows], dtype=np.float32), want)
    assert data["frame_index"][rows] == list(range(ep["length"]))
    assert data["index"][rows] == list(range(ep["dataset_from_index"], ep["dataset_to_index"]))
    assert np.allclose(data["timestamp"][rows], np.arange(ep["length"]) / fps)
    assert data["next.done"][rows][-1] and not any(data["next.done"][rows][:-1])
    # The state before action t is the state the log recorded after action t - 1.
    state = np.array(data["observation.state"][rows], dtype=np.float32)
    assert np.array_equal(
        state[1:, 2], np.array([s["ee_z"] for s in logged[:-1]], dtype=np.float32)
    )
    assert np.array_equal(
        data["physteer.p_fragile"][rows],
        np.array([s["p_fragile"] for s in logged], dtype=np.float32),
    )
    # Frames: the episode's span of the concatenated video against the run's own recording
    # (its text overlay covers the top rows) and against a fresh render of the seed.
    video = iio.imread(dataset / "videos" / CAMERA / "chunk-000" / "file-000.mp4")
    assert len(video) == info["total_frames"]
    first = round(ep[f"videos/{CAMERA}/from_timestamp"] * fps)
    frames = video[first : first + ep["length"]]
    recorded = iio.imread(run / "videos" / "unsteered" / "seed_0.mp4")[: ep["length"]]
    assert frames.shape == recorded.shape
    diff = np.abs(frames.astype(int) - recorded.astype(int))[:, 80:]
    assert diff.mean() < 2.0, diff.mean()  # both lossy H.264 of the same frames
    from envs import FrankaPickEnv

    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state")
    env.reset(seed=0)
    assert np.abs(frames[0].astype(int) - env.render().astype(int)).mean() < 2.0
    env.close()
    other = video[ep["length"] : ep["length"] + 1]  # the second episode starts with another scene
    assert np.abs(other[0].astype(int) - frames[0].astype(int)).mean() > 2.0


def test_cli_without_video_and_bad_input(run, tmp_path, capsys):
    out = tmp_path / "tabular"
    assert main(["export-lerobot", str(run), str(out), "--no-video"]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert (
        info["video_path"] is None
        and CAMERA not in info["features"]
        and not (out / "videos").exists()
    )
    assert "2 episodes" in capsys.readouterr().out
    assert main(["export-lerobot", str(run), str(out)]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["export-lerobot", str(tmp_path), str(tmp_path / "x")]) == 2  # not a run folder
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds the run folder"):
        export_lerobot(run, run.parent, overwrite=True)


def test_a_log_that_does_not_replay_stops_the_export(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    steps = pq.read_table(bad / "steps.parquet")
    dx = steps.column("a_dx").to_numpy().copy()
    k = next(i for i, r in enumerate(steps.select(["condition", "seed", "step"]).to_pylist())
             if (r["condition"], r["seed"], r["step"]) == ("unsteered", 1, 5))  # fmt: skip
    dx[k] = -dx[k] if dx[k] else 0.5
    pq.write_table(
        steps.set_column(steps.column_names.index("a_dx"), "a_dx", pa.array(dx)),
        bad / "steps.parquet",
    )
    with pytest.raises(ValueError, match=r"unsteered/1 does not replay: at step 5"):
        export_lerobot(bad, tmp_path / "ds", video=False)
    assert not (tmp_path / "ds").exists()  # all or nothing


def test_loads_with_lerobot_if_installed(dataset):
    lerobot = pytest.importorskip(
        "lerobot.datasets.lerobot_dataset", reason="lerobot is not installed (it pins torch < 2.11)"
    )
    ds = lerobot.LeRobotDataset("physteer/export", root=dataset)
    assert ds.num_episodes == 2 and ds.meta.video_keys == [CAMERA]
    row = ds.hf_dataset[3]
    assert tuple(row["action"].shape) == (4,) and tuple(row["observation.state"].shape) == (17,)
    assert list(ds.meta.tasks.index)[0].startswith("Put the")
