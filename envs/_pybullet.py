"""PyBullet, imported once without its "pybullet build time: ..." banner.

The banner is printed by the extension's C code straight to file descriptor 2 when it loads, so
every command (and every worker process) would print it. It is not information a user acts
on: fd 2 points at /dev/null while the extension loads, then back (an import error is raised
as usual once it is restored).
"""

from __future__ import annotations

import ctypes
import os
import sys


def _import_quietly():
    """Import pybullet with fd 2 silenced (flushing C's buffers before restoring it)."""
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (an embedded interpreter)
        import pybullet

        return pybullet
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import pybullet

        try:
            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):  # no C runtime to flush: the banner may still show
            pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return pybullet


p = _import_quietly()
