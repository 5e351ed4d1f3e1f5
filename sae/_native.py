"""The SAE's one native kernel: exact per-row top-k (sae/_topk.c), built with gcc on first use.

torch.topk is a quickselect whose cost grows with the row and whose branches mispredict on
fresh data; selecting k of 512 pre-activations cost more than the encoder matmul. The C kernel
takes a threshold from the maxima of k column groups and selects among the few entries above it
(see the source). It is compiled once into a per-user cache folder (`PHYSTEER_CACHE`, default
~/.cache/physteer), loaded with ctypes, and its result is checked against torch.topk when it
loads. Without a C compiler, or with PHYSTEER_NATIVE=0, `native_row_topk` returns None and
callers use torch: results are the same, only slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from storage import atomic_path

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("_topk.c")
_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-pthread"]


def _cache_dir() -> Path:
    root = os.environ.get("PHYSTEER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "physteer"
    )
    return Path(root)


def _cpu_identity() -> bytes:
    ident = os.uname().machine.encode()
    try:
        with open("/proc/cpuinfo", "rb") as f:
            ident += b"".join(sorted({ln for ln in f if ln.startswith((b"flags", b"model name"))}))
    except OSError:
        pass
    return ident


def _build(source: bytes) -> Path | None:
    """Compile the kernel (atomically: a half-written library is never loaded); None on failure."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        log.info("no C compiler found: SAE top-k uses torch.topk")
        return None
    # -march=native code is only valid on this CPU: the key includes its model and flags, so a
    # cache folder shared between machines never hands one machine another's build.
    key = hashlib.sha256(source + " ".join(_FLAGS).encode() + _cpu_identity()).hexdigest()[:16]
    target = _cache_dir() / f"topk-{key}.so"
    if target.exists():
        return target
    try:
        with atomic_path(target, mode=0o755) as tmp:
            subprocess.run(
                [compiler, *_FLAGS, str(_SOURCE), "-o", str(tmp)],
                check=True,
                capture_output=True,
                timeout=120,
            )
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        log.warning(
            "building the SAE top-k kernel failed (%s %s); using torch.topk",
            err,
            detail.decode()[-500:],
        )
        return None
    return target


@functools.cache
def _kernel():
    """The loaded C function, or None (disabled, no compiler, build or self-check failed)."""
    if os.environ.get("PHYSTEER_NATIVE", "1") == "0" or sys.platform == "win32":
        return None
    path = _build(_SOURCE.read_bytes())
    if path is None:
        return None
    try:
        fn = ctypes.CDLL(str(path)).row_topk_sorted
    except OSError as err:
        log.warning("loading %s failed (%s); using torch.topk", path, err)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, i64, ptr, ptr, ctypes.c_int]
    fn.restype = ctypes.c_int
    if not _self_check(fn):
        log.warning("the SAE top-k kernel at %s disagrees with torch.topk; using torch.topk", path)
        return None
    return fn


def _call(fn, pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    B, n = pre.shape
    cols = torch.empty(B, k, dtype=torch.int64)
    vals = torch.empty(B, k, dtype=torch.float32)
    rc = fn(pre.data_ptr(), B, n, k, cols.data_ptr(), vals.data_ptr(), torch.get_num_threads())
    return (vals, cols) if rc == 0 else None


def _self_check(fn) -> bool:
    g = torch.Generator().manual_seed(0)
    for B, n, k in ((600, 512, 16), (7, 33, 5), (3, 8, 8), (5, 10, 1)):
        pre = torch.randn(B, n, generator=g)
        pre[0, :] = 1.0  # ties: the lowest columns win
        got = _call(fn, pre, k)
        if got is None:
            return False
        want = pre.topk(k, dim=1).values.sort(dim=1).values
        if not torch.equal(got[0].sort(dim=1).values, want) or not torch.equal(
            got[1][0], torch.arange(k)
        ):
            return False
        if not torch.equal(pre.gather(1, got[1]), got[0]) or bool((got[1].diff(dim=1) <= 0).any()):
            return False
    return True


def native_row_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(values, columns) of the k largest entries per row, columns ascending, or None when the
    kernel is unavailable or the input does not suit it (not a contiguous float32 CPU matrix,
    k > n, or a row with NaNs): the caller then uses torch.topk."""
    if pre.dtype != torch.float32 or pre.device.type != "cpu" or pre.ndim != 2 or pre.requires_grad:
        return None
    if not 1 <= k <= pre.shape[1] or pre.shape[0] == 0:
        return None
    fn = _kernel()
    if fn is None:
        return None
    return _call(fn, pre.contiguous(), k)
