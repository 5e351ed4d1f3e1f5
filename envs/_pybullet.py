"""PyBullet, imported once without its "pybullet build time: ..." banner, and the one helper that
keeps what C code prints out of the output (`c_output_silenced`).

The banner is printed by the extension's C code straight to file descriptor 2 when it loads, so
every command (and every worker process) would print it. It is not information a user acts
on: fd 2 points at /dev/null while the extension loads, then back (an import error is raised
as usual once it is restored). The EGL plugin prints its driver banner to fd 1 the same way
(envs.sim).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def c_output_silenced(fd: int = 1, active: bool = True) -> Iterator[None]:
    """Send what C code writes to file descriptor `fd` (1 stdout, 2 stderr) to /dev/null meanwhile,
    flushing C's buffers before restoring it. Does nothing where `fd` cannot be duplicated."""
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        if not active:
            raise OSError
        stream.flush()
        saved = os.dup(fd)
    except (
        OSError,
        ValueError,
        AttributeError,
    ):  # inactive, or no usable fd (an embedded interpreter)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(
                None
            )  # buffered C output goes to /dev/null, not the restored fd
        os.dup2(saved, fd)
        os.close(saved)


with c_output_silenced(2):
    import pybullet as p  # noqa: E402

__all__ = ["c_output_silenced", "p"]
