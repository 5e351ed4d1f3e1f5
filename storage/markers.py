"""Whether an atomically written marker file finished: the test every resumable stage uses."""

from __future__ import annotations

import json
from pathlib import Path


def marker_reads(path: Path) -> bool:
    """Whether a stage marker exists and parses (JSON, or a safetensors header)."""
    if not path.is_file():
        return False
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                f.keys()
    except Exception:  # noqa: BLE001 - any unreadable marker means: redo the stage
        return False
    return True
