"""Atomic writers: each round-trips, and a failed write leaves the old file and no temp file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import storage
from storage import atomic_dir, atomic_path

OLD = b"old contents \x00\x01 that must survive"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_temp_path_is_a_hidden_sibling_with_the_suffix(tmp_path):
    target = tmp_path / "deep" / "er" / "x.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.is_file()
        assert tmp.name.startswith(".x.tmp") and tmp.suffix == ".mp4"
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and _leftovers(target.parent) == []
    assert (target.stat().st_mode & 0o777) == storage.FILE_MODE


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_error_inside_leaves_the_old_file_and_no_temp(tmp_path, error):
    target = tmp_path / "state.json"
    target.write_bytes(OLD)
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise error
    assert target.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


def test_a_writer_that_fails_leaves_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_bytes(OLD)
    with pytest.raises(TypeError, match="not JSON serializable"):
        storage.write_json(target, {"ok": 1, "bad": object()})
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        storage.write_mp4(tmp_path / "v.mp4", [np.zeros((4, 4), np.uint8)])
    assert (
        target.read_bytes() == OLD
        and _leftovers(tmp_path) == []
        and not (tmp_path / "v.mp4").exists()
    )


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    """SIGKILL mid-write (no cleanup can run): the target still holds the old bytes."""
    target = tmp_path / "episode.parquet"
    target.write_bytes(OLD)
    code = (
        "import os, signal, sys\n"
        "from storage import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=root, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == OLD


def test_bytes_text_json_round_trip(tmp_path):
    assert storage.write_bytes(tmp_path / "a.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    assert storage.write_text(tmp_path / "a.md", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    obj = {"b": np.float32(0.5), "a": np.arange(3), "n": np.int64(7), "p": Path("x/y"), "t": True}
    path = storage.write_json(tmp_path / "a.json", obj, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [0, 1, 2], "b": 0.5, "n": 7, "p": "x/y", "t": True}
    assert path.read_text().startswith('{\n  "a"') and path.read_text().endswith("}\n")
    assert json.loads(
        storage.write_json(tmp_path / "s.json", {"o": object}, default=str).read_text()
    )["o"].startswith("<class")


def test_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"seed": 0, "broken": True, "force": 1.5}, {"seed": 1, "broken": False, "force": 2.5}]
    assert pq.read_table(storage.write_parquet(tmp_path / "r.parquet", rows)).to_pylist() == rows
    table = pa.table({"x": [1, 2, 3]})
    assert pq.read_table(storage.write_parquet(tmp_path / "t.parquet", table)).equals(table)
    assert pq.read_table(storage.write_parquet(tmp_path / "c.parquet", {"x": [1, 2, 3]})).equals(
        table
    )
    assert pq.read_table(storage.write_parquet(tmp_path / "e.parquet", [])).num_rows == 0
    with pytest.raises(ValueError, match="rows must be dicts, got int"):
        storage.write_parquet(tmp_path / "bad.parquet", [1, 2])


def test_read_safetensors_gives_aligned_copies(tmp_path):
    """safetensors' own reader may place a tensor at an 8-byte offset, and a matmul with it
    then differs in its last bits from the same values at a 64-byte boundary: the reader copies."""
    import torch
    from safetensors.torch import load_file

    h = torch.randn(2, 81, 96, generator=torch.Generator().manual_seed(0))
    r = torch.randn(96, generator=torch.Generator().manual_seed(1))
    offsets = set()
    for n in range(8):  # header sizes that put the data at several offsets
        path = storage.write_safetensors(
            tmp_path / f"r{n}.safetensors", {"r": r}, {"m": "x" * 8 * n}
        )
        offsets.add(load_file(str(path))["r"].data_ptr() % 64)
        back = storage.read_safetensors(path)["r"]
        assert back.data_ptr() % 64 == 0 and torch.equal(back, r)
        assert torch.equal(h @ back, h @ r)
    assert len(offsets) > 1  # the hazard exists: safetensors' reader placed them differently


def test_safetensors_round_trip(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.numpy import load_file as load_numpy
    from safetensors.torch import load_file as load_torch

    t = {
        "w": torch.arange(12.0).reshape(3, 4).t(),
        "b": torch.ones(2, dtype=torch.float16),
    }  # non-contiguous
    path = storage.write_safetensors(tmp_path / "t.safetensors", t, metadata={"layer": "2"})
    back = load_torch(path)
    assert all(torch.equal(back[k], t[k]) for k in t)
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"layer": "2"}
    a = {"x": np.arange(6, dtype=np.int32).reshape(2, 3)}
    assert np.array_equal(
        load_numpy(storage.write_safetensors(tmp_path / "a.safetensors", a))["x"], a["x"]
    )
    with pytest.raises(ValueError, match="mix torch tensors and numpy"):
        storage.write_safetensors(tmp_path / "m.safetensors", {**t, **a})
    with pytest.raises(ValueError, match="metadata must map str to str"):
        storage.write_safetensors(tmp_path / "m.safetensors", t, metadata={"layer": 2})


def test_mp4_keeps_a_size_that_is_not_a_multiple_of_16(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    frames = [np.full((50, 70, 3), 40 * i, np.uint8) for i in range(5)]
    path = storage.write_mp4(tmp_path / "v" / "clip.mp4", frames, fps=10)
    back = iio.imread(path)
    assert back.shape == (5, 50, 70, 3)
    assert abs(float(back[3].mean()) - 120) < 4  # lossy, but the frame is there
    odd = storage.write_mp4(
        tmp_path / "odd.mp4", list(rng.integers(0, 255, (3, 51, 71, 3), dtype=np.uint8))
    )
    assert iio.imread(odd).shape == (3, 52, 72, 3)  # odd sizes are padded by one edge pixel
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "v") == []
    with pytest.raises(ValueError, match="no frames"):
        storage.write_mp4(tmp_path / "e.mp4", [])
    with pytest.raises(ValueError, match="fps must be a positive number"):
        storage.write_mp4(tmp_path / "e.mp4", frames, fps=0)


def test_png_from_array_and_figure(tmp_path):
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.random.default_rng(1).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    assert np.array_equal(iio.imread(storage.write_png(tmp_path / "a.png", img)), img)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    path = storage.write_png(tmp_path / "f.png", fig, dpi=50)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and iio.imread(path).shape[:2] == (75, 100)
    with pytest.raises(ValueError, match="matplotlib Figure or an H×W"):
        storage.write_png(tmp_path / "b.png", np.zeros((4, 4, 3), np.float32))


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        storage.write_text(tmp_path, "x")
    with pytest.raises(ValueError, match="non-empty str"):
        storage.write_text("", "x")
    with pytest.raises(ValueError, match="data must be bytes"):
        storage.write_bytes(tmp_path / "x", "text")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ValueError, match="is a file"):
        with atomic_dir(tmp_path / "f"):
            pass


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_dir_replaces_a_folder_or_leaves_it(tmp_path, error):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
    assert sorted(os.listdir(target)) == ["a.json"]
    with pytest.raises(type(error)):
        with atomic_dir(target) as tmp:
            (tmp / "b.json").write_text("2")
            raise error
    assert sorted(os.listdir(target)) == ["a.json"] and _leftovers(tmp_path) == []
    with atomic_dir(target) as tmp:
        (tmp / "b.json").write_text("2")
    assert sorted(os.listdir(target)) == ["b.json"] and _leftovers(tmp_path) == []
