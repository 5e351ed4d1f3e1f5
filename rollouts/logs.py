"""Run folders: config.json, per-episode files written atomically, merged Parquet tables.

Layout of runs/<name>/:

    config.json                      everything needed to replay
    episodes/<condition>/seed_<s>.parquet   one row per finished episode (atomic)
    steps/<condition>/seed_<s>.parquet      one row per step
    activations/<condition>/seed_<s>.safetensors   decision / holding-state activations
    videos/<condition>/seed_<s>.mp4
    episodes.parquet, steps.parquet  merged tables (rewritten when a run completes)

An episode counts as finished only when its episode row exists; rows are written last, so an
interrupted run keeps every finished episode and a rerun completes the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage import write_json, write_parquet


def safe_name(condition: str) -> str:
    """A folder name for a condition string (':' and '+' are awkward in paths)."""
    return condition.replace(":", "_").replace("+", "p").replace("/", "_")


class RunLog:
    """Paths and reads/writes of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def episode_path(
        self, condition: str, seed: int, kind: str = "episodes", ext: str = "parquet"
    ) -> Path:
        """Path of one episode's file of a kind (episodes, steps, activations, videos)."""
        return self.root / kind / safe_name(condition) / f"seed_{seed}.{ext}"

    def is_done(self, condition: str, seed: int) -> bool:
        """Whether this episode has finished (its episode row exists and reads)."""
        path = self.episode_path(condition, seed)
        if not path.exists():
            return False
        try:
            pq.read_metadata(path)
        except Exception:  # a corrupt leftover: treat as not done, it will be rerun
            return False
        return True

    def write_config(
        self, config: dict[str, Any], resume: bool = True, defaults: dict[str, Any] | None = None
    ) -> None:
        """Write config.json; refuse to mix a different config into an existing run.

        Args:
            defaults: the config's field defaults: a field missing from an older config.json
                counts as equal to its default (a run made before the field existed resumes).
        """
        defaults = json.loads(json.dumps(defaults or {}, default=str))
        path = self.root / "config.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path} is corrupt ({exc}); move it away or choose another --name"
                ) from None
            new = json.loads(json.dumps(config, default=str))
            # A field added since the run was made counts as equal when it has its default.
            changed = sorted(
                k for k in set(old) | set(new) if old.get(k, defaults.get(k)) != new.get(k)
            )
            if changed:
                weights = ("; its episodes came from other model weights (a folder made before runs recorded "
                           "them has none)") if "model_weights" in changed else ""  # fmt: skip
                both = "; ".join(f"{k}: {_short(old.get(k, defaults.get(k)))} in the folder, {_short(new.get(k))} now"
                                 for k in changed)  # fmt: skip
                raise ValueError(
                    f"run folder {self.root} holds a different experiment (fields differ: {changed}; {both}){weights}; "
                    "use another --name, or --overwrite (or delete the folder) to start afresh"
                )
            if not resume:
                raise ValueError(f"run folder {self.root} exists; pass --resume or --overwrite")
        write_json(path, config, sort_keys=True, default=str)

    def read_config(self) -> dict[str, Any]:
        """Read config.json (FileNotFoundError naming the folder if absent)."""
        path = self.root / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"{self.root} is not a run folder (no config.json)")
        return json.loads(path.read_text())

    def write_episode(
        self, condition: str, seed: int, episode: dict[str, Any], steps: list[dict[str, Any]]
    ) -> None:
        """Write steps first, then the episode row that marks the episode finished."""
        write_parquet(self.episode_path(condition, seed, "steps"), steps)
        write_parquet(self.episode_path(condition, seed, "episodes"), [episode])

    def merge(self, kind: str) -> pa.Table:
        """Concatenate every per-episode file of a kind; errors name the unreadable file."""
        files = sorted((self.root / kind).glob("*/seed_*.parquet"))
        tables = []
        for f in files:
            try:
                tables.append(pq.read_table(f))
            except Exception as exc:
                raise ValueError(
                    f"log file {f} is unreadable ({exc}); delete it and rerun to redo that episode"
                ) from None
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    def finalize(self) -> tuple[Path, Path]:
        """Write the merged episodes.parquet and steps.parquet; return their paths."""
        episodes = self.merge("episodes")
        if episodes.num_rows:
            keys = [k for k in ("condition", "monitor", "seed") if k in episodes.column_names]
            episodes = episodes.sort_by([(k, "ascending") for k in keys])
        write_parquet(self.root / "episodes.parquet", episodes)
        write_parquet(self.root / "steps.parquet", self.merge("steps"))
        return self.root / "episodes.parquet", self.root / "steps.parquet"

    def read_episodes(self) -> pa.Table:
        """The merged episode table (from episodes.parquet, or the per-episode files)."""
        path = self.root / "episodes.parquet"
        if path.exists():
            try:
                return pq.read_table(path)
            except Exception as exc:
                raise ValueError(
                    f"{path} is unreadable ({exc}); rerun the experiment to rebuild it"
                ) from None
        return self.merge("episodes")


def _short(value: Any, most: int = 60) -> str:
    """A config value for an error message, cut to `most` characters."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 1] + "…"
