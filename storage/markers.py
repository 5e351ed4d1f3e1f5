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


def refuse_other_settings(
    path: Path, settings: dict, fields: tuple[str, ...], what: str = "study"
) -> None:
    """ValueError when the settings file at `path` (a resumed folder's) differs from `settings`
    in any of `fields`: a resumed run reuses what the folder holds, so it must be the same run.
    A field the file lacks (added since it was written) is not compared."""
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    now = json.loads(json.dumps(settings, default=str))
    changed = [k for k in fields if k in old and old[k] != now.get(k)]
    if changed:
        raise ValueError(f"{path.parent} holds a {what} made with other {changed} "
                         f"({ {k: old[k] for k in changed} }); use another --name")  # fmt: skip
