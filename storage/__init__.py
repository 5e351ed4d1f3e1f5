"""Atomic file writes (and the safetensors reader) for every package (see `storage.atomic`): standard library only at import.
It imports no other physteer package; every package but envs (which writes nothing) may import it.

    from storage import write_json, write_parquet, write_png
    write_json("runs/x/summary.json", summary)      # the old file or the new one, never half
"""

from storage.atomic import (
    FILE_MODE,
    atomic_dir,
    atomic_path,
    json_default,
    read_safetensors,
    write_bytes,
    write_json,
    write_mp4,
    write_parquet,
    write_png,
    write_safetensors,
    write_text,
)
from storage.markers import marker_reads, refuse_other_settings

__all__ = [
    "FILE_MODE", "atomic_dir", "atomic_path", "json_default", "marker_reads", "read_safetensors", "refuse_other_settings", "write_bytes", "write_json", "write_mp4",
    "write_parquet", "write_png", "write_safetensors", "write_text",
]  # fmt: skip
