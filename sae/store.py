"""Sharded on-disk activation store, streamed in shuffled minibatches.

Layout of a store directory:

    store.json                 manifest: d, dtype, shards (file names, row counts, byte sizes)
    shard_00000.safetensors    tensor "acts" of shape (n, d), float32 or float16
    shard_00000.parquet        one metadata row per activation row

Every file is written atomically and the manifest last, so a shard exists only once it is
complete. Training streams a window of a few shards at a time, so memory is bounded by
`window_shards * shard size` whatever the size of the store.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from storage import write_json, write_parquet, write_safetensors

MANIFEST = "store.json"
TENSOR_KEY = "acts"
META_COLUMNS = (
    "image_id", "token_position", "color", "material", "shade", "shape",
    "episode", "step", "layer", "model",
)  # fmt: skip
DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CorruptShardError(ValueError):
    """A shard (tensor or metadata file) cannot be read or does not match the manifest."""


class ActivationStore:
    """A directory of activation shards with per-row metadata.

    Args:
        root: store directory (created on first append).
        d: activation width; required to create a store, checked against an existing one.
        dtype: "float32" or "float16" storage (training always yields float32).
    """

    def __init__(self, root: str | Path, d: int | None = None, dtype: str = "float32") -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if path.is_file():
            self.manifest = json.loads(path.read_text())
            if d is not None and d != self.manifest["d"]:
                raise ValueError(f"store {self.root} has d={self.manifest['d']}, requested d={d}")
        else:
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
            if d is not None and (not isinstance(d, int) or d <= 0):
                raise ValueError(f"d must be a positive int, got {d!r}")
            self.manifest = {"version": 1, "d": d, "dtype": dtype, "shards": [], "n_rows": 0}

    @classmethod
    def open(cls, root: str | Path) -> ActivationStore:
        """Open an existing store; FileNotFoundError if `root` has no store.json."""
        if not (Path(root) / MANIFEST).is_file():
            raise FileNotFoundError(f"no activation store at {root} (missing {MANIFEST})")
        return cls(root)

    # ------------------------------------------------------------------ info
    @property
    def d(self) -> int | None:
        """Activation width (None until the first append of a store created without d)."""
        return self.manifest["d"]

    @property
    def shards(self) -> list[dict[str, Any]]:
        """Manifest entries: {"file", "meta", "n", "bytes"} per shard."""
        return self.manifest["shards"]

    def __len__(self) -> int:
        """Total number of rows."""
        return int(self.manifest["n_rows"])

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.root)!r}, d={self.d}, rows={len(self)}, shards={len(self.shards)})"

    # ------------------------------------------------------------------ writing
    def append(
        self,
        acts: np.ndarray | torch.Tensor,
        meta: list[dict[str, Any]] | dict[str, Any] | pa.Table | None = None,
    ) -> str:
        """Write `acts` (n, d) with metadata (rows, columns or a Table) as a new shard.

        Standard columns missing from `meta` are stored as nulls; extra columns are kept.
        Returns the shard's file name.
        """
        t = torch.as_tensor(np.asarray(acts)) if isinstance(acts, np.ndarray) else acts
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] == 0:
            shape = tuple(getattr(acts, "shape", ()))
            raise ValueError(f"acts must be a non-empty 2-D array (n, d), got shape {shape}")
        if self.d is None:
            self.manifest["d"] = int(t.shape[1])
        if t.shape[1] != self.d:
            raise ValueError(f"acts have d={t.shape[1]} but store {self.root} has d={self.d}")
        if not torch.isfinite(t).all():
            raise ValueError("acts contain NaN or inf values")
        table = _meta_table(meta, t.shape[0])
        i = len(self.shards)
        name = f"shard_{i:05d}"
        self.root.mkdir(parents=True, exist_ok=True)
        t = t.detach().to("cpu", DTYPES[self.manifest["dtype"]]).contiguous()
        write_safetensors(self.root / f"{name}.safetensors", {TENSOR_KEY: t})
        write_parquet(self.root / f"{name}.parquet", table)
        entry = {
            "file": f"{name}.safetensors",
            "meta": f"{name}.parquet",
            "n": int(t.shape[0]),
            "bytes": os.path.getsize(self.root / f"{name}.safetensors"),
        }
        self.manifest["shards"].append(entry)
        self.manifest["n_rows"] = int(self.manifest["n_rows"]) + entry["n"]
        write_json(self.root / MANIFEST, self.manifest)
        return entry["file"]

    # ------------------------------------------------------------------ reading
    def load_shard(self, i: int) -> torch.Tensor:
        """Activations of shard `i` as float32; CorruptShardError names the file on failure."""
        entry = self.shards[i]
        path = self.root / entry["file"]
        try:
            size = os.path.getsize(path)
            if size != entry["bytes"]:
                raise CorruptShardError(f"size {size} bytes, manifest says {entry['bytes']}")
            t = load_file(str(path))[TENSOR_KEY]
            if tuple(t.shape) != (entry["n"], self.d):
                raise CorruptShardError(
                    f"shape {tuple(t.shape)}, manifest says ({entry['n']}, {self.d})"
                )
        except (SafetensorError, OSError, KeyError, CorruptShardError) as exc:
            raise CorruptShardError(f"corrupt or unreadable shard {path}: {exc}") from exc
        return t.float()

    def load_shard_metadata(self, i: int) -> pa.Table:
        """Metadata table of shard `i`; CorruptShardError names the file on failure."""
        entry = self.shards[i]
        path = self.root / entry["meta"]
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise CorruptShardError(f"corrupt or unreadable metadata {path}: {exc}") from exc
        if table.num_rows != entry["n"]:
            raise CorruptShardError(
                f"metadata {path} has {table.num_rows} rows, manifest says {entry['n']}"
            )
        return table

    def verify(self) -> list[tuple[str, str]]:
        """Try to read every shard; return [(file, error)] for the bad ones (empty if all good)."""
        bad = []
        for i, entry in enumerate(self.shards):
            for loader, name in (
                (self.load_shard, entry["file"]),
                (self.load_shard_metadata, entry["meta"]),
            ):
                try:
                    loader(i)
                except CorruptShardError as exc:
                    bad.append((name, str(exc)))
        return bad

    def _load(self, max_rows: int | None, on_error: str, acts: bool, meta: bool):
        """Read shards in order until `max_rows`; a shard counts only if every part read is good."""
        _check_on_error(on_error)
        xs, tables, n = [], [], 0
        for i in range(len(self.shards)):
            if max_rows is not None and n >= max_rows:
                break
            try:
                x = self.load_shard(i) if acts else None
                t = self.load_shard_metadata(i) if meta else None
            except CorruptShardError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipping shard: {exc}", stacklevel=3)
                continue
            xs.append(x)
            tables.append(t)
            n += self.shards[i]["n"]
        x = torch.cat(xs)[:max_rows] if acts and xs else torch.zeros(0, self.d or 0)
        table = _meta_table(None, 0)
        if meta and tables:
            table = pa.concat_tables(tables, promote_options="default")
            table = table.slice(0, max_rows) if max_rows is not None else table
        return x, table

    def load_metadata(self, max_rows: int | None = None, on_error: str = "raise") -> pa.Table:
        """All metadata rows in shard order (the order of `load_all`) as one pyarrow Table."""
        return self._load(max_rows, on_error, acts=False, meta=True)[1]

    def load_all(
        self, max_rows: int | None = None, on_error: str = "raise", with_metadata: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, pa.Table]:
        """All activations (float32) in shard order, up to `max_rows`; for small stores.

        with_metadata=True returns (acts, metadata Table) row-aligned; with on_error="skip" a
        shard is skipped when either its tensor or its metadata is bad, keeping them aligned.
        """
        x, table = self._load(max_rows, on_error, acts=True, meta=with_metadata)
        return (x, table) if with_metadata else x

    def iter_minibatches(
        self,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        window_shards: int = 4,
        drop_last: bool = False,
        on_error: str = "raise",
        return_index: bool = False,
    ) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of float32 minibatches; each row appears exactly once.

        Shuffling is two-level: shard order is permuted, then rows are permuted within a
        window of `window_shards` shards; rows left over at the end of a window carry into the
        next, so every batch (but possibly the last) has `batch_size` rows. With
        `return_index`, also yields the global row indices (positions in `load_all` order).
        on_error="skip" warns about and skips corrupt shards; "raise" raises CorruptShardError.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if window_shards <= 0:
            raise ValueError(f"window_shards must be >= 1, got {window_shards}")
        _check_on_error(on_error)
        rng = np.random.default_rng(seed)
        starts = np.cumsum([0] + [s["n"] for s in self.shards])
        order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
        carry_x, carry_i = torch.zeros(0, self.d or 0), torch.zeros(0, dtype=torch.long)
        for w in range(0, len(order), window_shards):
            xs, idx = [carry_x], [carry_i]
            for i in order[w : w + window_shards]:
                try:
                    xs.append(self.load_shard(int(i)))
                except CorruptShardError as exc:
                    if on_error == "raise":
                        raise
                    warnings.warn(f"skipping shard: {exc}", stacklevel=2)
                    continue
                idx.append(torch.arange(starts[i], starts[i + 1]))
            x, ix = torch.cat(xs), torch.cat(idx)
            if shuffle:
                perm = torch.from_numpy(rng.permutation(x.shape[0]))
                x, ix = x[perm], ix[perm]
            n_full = x.shape[0] // batch_size * batch_size
            for b in range(0, n_full, batch_size):
                yield (
                    (x[b : b + batch_size], ix[b : b + batch_size])
                    if return_index
                    else x[b : b + batch_size]
                )
            carry_x, carry_i = x[n_full:], ix[n_full:]
        if carry_x.shape[0] and not drop_last:
            yield (carry_x, carry_i) if return_index else carry_x


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _meta_table(meta: list[dict[str, Any]] | dict[str, Any] | pa.Table | None, n: int) -> pa.Table:
    """Normalise metadata to a Table of n rows with every standard column (nulls if missing)."""
    if meta is None:
        return pa.table({col: pa.nulls(n) for col in META_COLUMNS})
    if isinstance(meta, pa.Table):
        table = meta
    elif isinstance(meta, dict):
        table = pa.table({k: list(np.asarray(v).tolist()) if isinstance(v, np.ndarray) else list(v)
                          for k, v in meta.items()})  # fmt: skip
    elif isinstance(meta, list):
        table = pa.Table.from_pylist(meta)
    else:
        raise ValueError(
            f"meta must be a list of row dicts, a dict of columns or a Table, got {type(meta).__name__}"
        )
    if table.num_rows != n:
        raise ValueError(f"metadata has {table.num_rows} rows but acts have {n} rows")
    for col in META_COLUMNS:
        if col not in table.column_names:
            table = table.append_column(col, pa.nulls(n))
    return table
