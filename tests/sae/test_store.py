"""ActivationStore: sharding, metadata, streaming coverage, corruption handling."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from sae import ActivationStore, CorruptShardError


def make_store(root, n_shards=5, d=8, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    store = ActivationStore(root, d=d, dtype=dtype)
    rows = []
    for s in range(n_shards):
        n = 10 + 3 * s
        x = rng.normal(size=(n, d)).astype(np.float32)
        meta = [
            {"image_id": 100 * s + i // 4, "token_position": i % 4, "color": "red", "extra": s}
            for i in range(n)
        ]
        store.append(x, meta)
        rows.append(x)
    return store, np.concatenate(rows)


def test_manifest_metadata_and_reopen(tmp_path):
    store, x = make_store(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    assert manifest["d"] == 8 and manifest["n_rows"] == len(x) == len(store)
    assert [e["file"] for e in manifest["shards"]][:2] == [
        "shard_00000.safetensors",
        "shard_00001.safetensors",
    ]
    again = ActivationStore.open(tmp_path / "s")
    acts, meta = again.load_all(with_metadata=True)
    assert torch.equal(acts, torch.from_numpy(x))
    assert meta.num_rows == len(x)
    assert meta.column("extra").to_pylist()[-1] == 4  # extra columns kept
    assert meta.column("material").null_count == len(x)  # missing standard columns are null
    assert again.load_all(max_rows=7).shape == (7, 8)
    assert again.load_metadata(max_rows=7).num_rows == 7


def test_float16_storage_and_column_dict(tmp_path):
    store = ActivationStore(tmp_path / "h", d=4, dtype="float16")
    store.append(
        torch.ones(3, 4) / 3,
        {"color": ["red", "blue", "red"], "material": np.array(["fragile"] * 3)},
    )
    x, meta = store.load_all(with_metadata=True)
    assert x.dtype == torch.float32 and abs(float(x[0, 0]) - 1 / 3) < 1e-3
    assert meta.column("color").to_pylist() == ["red", "blue", "red"]
    assert isinstance(meta, pa.Table)


def test_bad_appends(tmp_path):
    store = ActivationStore(tmp_path / "b", d=4)
    with pytest.raises(ValueError, match="d=5 but store"):
        store.append(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="metadata has 3 rows but acts have 2"):
        store.append(np.zeros((2, 4)), [{"color": "red"}] * 3)
    with pytest.raises(ValueError, match="NaN"):
        store.append(np.full((2, 4), np.nan))
    with pytest.raises(FileNotFoundError, match="no activation store"):
        ActivationStore.open(tmp_path / "missing")
    assert len(store) == 0


@pytest.mark.parametrize("window", [1, 2, 10])
def test_streaming_covers_every_row_once_per_epoch(tmp_path, window):
    store, x = make_store(tmp_path / "s")
    seen, batches = [], []
    for xb, ix in store.iter_minibatches(7, seed=3, window_shards=window, return_index=True):
        assert torch.equal(xb, torch.from_numpy(x[ix.numpy()]))  # rows match their indices
        seen.extend(ix.tolist())
        batches.append(len(ix))
    assert sorted(seen) == list(range(len(x)))
    assert all(b == 7 for b in batches[:-1])
    assert seen != list(range(len(x)))  # shuffled
    other = [
        i
        for _, ix in store.iter_minibatches(7, seed=4, window_shards=window, return_index=True)
        for i in ix.tolist()
    ]
    assert other != seen  # the seed changes the order
    same = [
        i
        for _, ix in store.iter_minibatches(7, seed=3, window_shards=window, return_index=True)
        for i in ix.tolist()
    ]
    assert same == seen  # and is reproducible


def test_streaming_memory_is_bounded_by_window(tmp_path):
    store, _ = make_store(tmp_path / "s", n_shards=8)
    loads = []
    original = store.load_shard

    def spy(i):
        loads.append(i)
        return original(i)

    store.load_shard = spy
    it = store.iter_minibatches(5, seed=0, window_shards=2)
    next(it)
    assert len(loads) == 2  # only the first window is read before the first batch


def test_corrupt_shard_named_and_others_readable(tmp_path):
    store, x = make_store(tmp_path / "s")
    bad = tmp_path / "s" / "shard_00002.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    problems = store.verify()
    assert [p[0] for p in problems] == ["shard_00002.safetensors"]
    with pytest.raises(CorruptShardError, match="shard_00002.safetensors"):
        list(store.iter_minibatches(4, seed=0))
    with pytest.raises(CorruptShardError, match="shard_00002.safetensors"):
        store.load_all()
    with pytest.warns(UserWarning, match="shard_00002"):
        rows = [
            i
            for _, ix in store.iter_minibatches(4, seed=0, on_error="skip", return_index=True)
            for i in ix.tolist()
        ]
    good = set(range(len(x))) - set(range(10 + 13, 10 + 13 + 16))  # shard 2 holds rows 23..38
    assert sorted(rows) == sorted(good)
    with pytest.warns(UserWarning):
        acts, meta = store.load_all(on_error="skip", with_metadata=True)
    assert acts.shape[0] == meta.num_rows == len(good)
    assert torch.equal(store.load_shard(3), torch.from_numpy(x[39:58]))


def test_truncated_metadata_detected(tmp_path):
    store, _ = make_store(tmp_path / "s", n_shards=2)
    path = tmp_path / "s" / "shard_00001.parquet"
    path.write_bytes(path.read_bytes()[:20])
    assert [p[0] for p in store.verify()] == ["shard_00001.parquet"]
    with pytest.raises(CorruptShardError, match="shard_00001.parquet"):
        store.load_metadata()
