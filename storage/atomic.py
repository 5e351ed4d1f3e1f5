"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Every writer goes through `atomic_path`: the data goes to a temporary sibling in the target's
folder (same file system, so the final rename is atomic), which is flushed to disk (fsync) and
then moved onto the target with `os.replace`. Any exception, KeyboardInterrupt included,
deletes the temporary file and leaves an existing target byte-identical. `atomic_dir` does the
same for a folder written by a library that writes several files (`save_pretrained`).

Import cost: this module imports only the standard library. numpy, pyarrow, safetensors,
torch, imageio and matplotlib are imported inside the writer that needs them, so every package
of physteer may import `storage` (envs writes nothing and does not).

Temporary names start with a dot and keep the target's suffix (`clip.mp4` is written as
`.clip.tmpk3j2x.mp4`), so libraries that choose a format by extension work, and globs such as
`seed_*.parquet` never see a temporary file. Files are created with mode 0o644 unless told.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

FILE_MODE = 0o644


def _target(path: str | os.PathLike[str]) -> Path:
    """The target as a Path; ValueError for an empty name or an existing folder."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a non-empty str or os.PathLike, got {path!r}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a folder; a file cannot be written over it")
    return target


def _fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) data to disk; folders that cannot be opened are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. folders on Windows
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on folders
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    The parent folders are created. The yielded file exists (empty); write it with any
    library. When the block ends normally the file is fsync'd, given `mode` and moved onto
    `path` with `os.replace`; when it raises (KeyboardInterrupt too) the temporary file is
    deleted and `path` is left as it was.

    Args:
        path: the file to write (str or os.PathLike; not an existing folder).
        mode: permission bits of the file (default 0o644).

    Yields:
        Path: the temporary file, e.g. `.name.tmpk3j2x.mp4` for `name.mp4`.

    Raises:
        ValueError: `path` is empty or an existing folder (before anything is written).
        FileNotFoundError: the block removed or renamed the temporary file.
    """
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.stem}.tmp", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(
                f"the temporary file {tmp} for {target} disappeared before it was moved into place"
            )
        _fsync_path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _fsync_path(target.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it takes the place of `path`.

    For libraries that write several files into a folder (`save_pretrained`, checkpoints).
    When the block ends normally every file in the temporary folder is fsync'd; if `path`
    exists it is renamed to a hidden `.name.old*` sibling, the new folder is renamed to `path`,
    and the old one is deleted. A crash between those two renames leaves the complete old
    folder under the hidden name (nothing is lost). When the block raises (KeyboardInterrupt
    too) the temporary folder is deleted and `path` is left as it was.

    Args:
        path: the folder to write (str or os.PathLike; not an existing file).

    Yields:
        Path: the temporary folder (empty), e.g. `.name.tmpk3j2x`.

    Raises:
        ValueError: `path` is empty or an existing file (before anything is written).
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a non-empty str or os.PathLike, got {path!r}")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file; a folder cannot be written over it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=target.parent))
    try:
        yield tmp
        for sub in sorted(tmp.rglob("*")):
            _fsync_path(sub)
        _fsync_path(tmp)
        os.chmod(tmp, 0o755)
        if target.exists():
            # rename(2) onto an empty folder replaces it: the hidden name is reserved by mkdtemp.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old", dir=target.parent))
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(target.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write `data` to `path` atomically; returns the path.

    Raises:
        ValueError: `data` is not bytes-like, or `path` is invalid (nothing is written).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (default UTF-8); returns the path.

    Raises:
        ValueError: `text` is not a str, or `path` is invalid (nothing is written).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return write_bytes(path, text.encode(encoding))


def json_default(obj: Any) -> Any:
    """`json.dumps` fallback: numpy/torch arrays and scalars (`.tolist()`), paths, dataclasses.

    Raises:
        TypeError: any other object (as `json.dumps` itself does).
    """
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    default: Callable[[Any], Any] | None = json_default,
    **json_kwargs: Any,
) -> Path:
    """Write `obj` as JSON (and a final newline) atomically; returns the path.

    The text is made before anything is written, so an object that cannot be serialised
    leaves no file behind.

    Args:
        path: the file to write.
        obj: a JSON-serialisable object.
        indent: `json.dumps` indent (default 2).
        default: fallback for other objects; `json_default` handles numpy and torch values,
            paths and dataclasses. Pass `default=str` to stringify anything.
        **json_kwargs: further `json.dumps` arguments (`sort_keys=True`, ...).
    """
    text = json.dumps(obj, indent=indent, default=default, **json_kwargs) + "\n"
    return write_text(path, text)


def write_parquet(path: str | os.PathLike[str], rows_or_table: Any, **write_kwargs: Any) -> Path:
    """Write a Parquet file atomically; returns the path.

    Args:
        path: the file to write.
        rows_or_table: a `pyarrow.Table`, a list of row dicts, or a dict of columns.
        **write_kwargs: forwarded to `pyarrow.parquet.write_table` (compression, ...).

    Raises:
        ValueError: the rows are not a Table, a list of dicts or a dict of columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(rows_or_table, pa.Table):
        table = rows_or_table
    elif isinstance(rows_or_table, Mapping):
        table = pa.table(dict(rows_or_table))
    elif isinstance(rows_or_table, Sequence) and not isinstance(rows_or_table, (str, bytes)):
        bad = [type(r).__name__ for r in rows_or_table if not isinstance(r, Mapping)]
        if bad:
            raise ValueError(f"rows must be dicts, got {bad[0]} (row types: {sorted(set(bad))})")
        table = pa.Table.from_pylist(list(rows_or_table))
    else:
        raise ValueError(
            f"rows_or_table must be a pyarrow.Table, a list of row dicts or a dict of columns, got {type(rows_or_table).__name__}"
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), **write_kwargs)
    return Path(path)


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write tensors to a safetensors file atomically; returns the path.

    Args:
        path: the file to write.
        tensors: name → torch tensor (detached, moved to CPU, made contiguous) or numpy array
            (all of one kind).
        metadata: optional str → str header metadata.

    Raises:
        ValueError: names or metadata are not strings, or torch tensors and numpy arrays are
            mixed (nothing is written).
    """
    if not isinstance(tensors, Mapping) or any(not isinstance(k, str) for k in tensors):
        raise ValueError(
            f"tensors must be a mapping of str names to tensors, got {type(tensors).__name__}"
        )
    if metadata is not None and any(
        not isinstance(k, str) or not isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"metadata must map str to str, got {dict(metadata)!r}")
    kinds = {
        "torch" if type(v).__module__.split(".")[0] == "torch" else "numpy"
        for v in tensors.values()
    }
    if len(kinds) > 1:
        raise ValueError("tensors mix torch tensors and numpy arrays; pass one kind")
    meta = None if metadata is None else dict(metadata)
    if kinds == {"torch"}:
        from safetensors.torch import save_file as save_torch

        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_torch(data, str(tmp), meta)
    else:
        import numpy as np
        from safetensors.numpy import save_file as save_numpy

        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_numpy(arrays, str(tmp), meta)
    return Path(path)


def read_safetensors(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Any]:
    """The torch tensors of a safetensors file, each in its own freshly allocated memory.

    `safetensors.torch.load_file` may hand out tensors that start wherever the file's header
    ends (8-byte aligned, not 64), and a matmul's result depends in its last bits on its
    operands' alignment (measured: `h @ r` differs for a copy of `r` at another offset). A
    loaded steering vector or scorer would then not act bit for bit as the one that was saved
    (an SAE's weights are copied into its own parameters anyway); a copy is aligned as every
    fresh tensor is.
    """
    from safetensors.torch import load_file

    return {k: v.clone() for k, v in load_file(str(path), device=device).items()}


def write_mp4(path: str | os.PathLike[str], frames: Sequence[Any], fps: float = 12) -> Path:
    """Write H×W×3 uint8 frames to an H.264 MP4 atomically; returns the path.

    Sizes are kept as they are (`macro_block_size=1`, no resizing to multiples of 16). H.264
    in the widely playable 4:2:0 format needs an even height and width: an odd one is padded
    by repeating the last row or column.

    Raises:
        ValueError: no frames, frames that are not H×W×3 uint8 of one size, or fps <= 0
            (nothing is written).
        OSError: the encoder produced an empty file.
    """
    import numpy as np

    if not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if frames is None or len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    shapes = {np.shape(f) for f in frames}
    dtypes = {np.asarray(f).dtype for f in frames}
    if (
        len(shapes) != 1
        or len(next(iter(shapes))) != 3
        or next(iter(shapes))[2] != 3
        or dtypes != {np.dtype(np.uint8)}
    ):
        raise ValueError(
            f"frames must be H×W×3 uint8 arrays of one size, got shapes {sorted(shapes)} and dtypes {sorted(map(str, dtypes))}"
        )
    video = np.stack([np.asarray(f) for f in frames])
    h, w = video.shape[1:3]
    if h % 2 or w % 2:
        video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, video, extension=".mp4", fps=fps, macro_block_size=1)
        if tmp.stat().st_size == 0:  # ffmpeg reports some failures only on its stderr
            raise OSError(f"the MP4 encoder wrote nothing for {path} (frames {video.shape})")
    return Path(path)


def write_png(path: str | os.PathLike[str], image: Any, dpi: float | None = None) -> Path:
    """Write a PNG atomically: a matplotlib Figure (savefig) or an H×W×3 / H×W×4 / H×W uint8 array.

    The figure is not closed (the caller owns it). Returns the path.

    Args:
        path: the file to write.
        image: a matplotlib Figure, or a uint8 image array.
        dpi: figure resolution (default: the figure's own); ignored for arrays.

    Raises:
        ValueError: `image` is neither a figure nor a uint8 image array (nothing is written).
    """
    if hasattr(image, "savefig") and callable(image.savefig):
        with atomic_path(path) as tmp:
            image.savefig(tmp, format="png", dpi="figure" if dpi is None else dpi)
        return Path(path)
    import numpy as np

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(
            f"image must be a matplotlib Figure or an H×W, H×W×3 or H×W×4 uint8 array, got {arr.dtype} {arr.shape}"
        )
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, extension=".png")
    return Path(path)
