"""A π0 checkpoint folder before its weights load: where "tiny" is, the normalisation statistics
and execution defaults its `processor_config.json` holds, the checks that refuse a bad folder
before any episode, and its fingerprint (what decides its episodes: weights and defaults).
Loading the weights is agents.pi0_model's job.

    check_pi0_folder("runs/pi0", chunk=4)   # ValueError naming what is wrong, from JSON alone
    PI0Stats.from_folder(pi0_dir("tiny"))    # the statistics the shipped tiny π0 was trained with
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.action_tokens import ENV_STATE_SIZE
from agents.resolve import weights_sha1

ENV_ACTION_SIZE = 4
STATS_FILE = "processor_config.json"  # where PI0Processor keeps the dataset statistics
STATS_KEYS = ("state_mean", "state_std", "actions_mean", "actions_std")


def processor_doc(path: str | Path) -> dict[str, Any]:
    """A checkpoint's processor_config.json ({} where there is none)."""
    file = Path(path) / STATS_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


@dataclass
class PI0Stats:
    """The dataset statistics a π0 checkpoint was trained with (env state: 17, actions: 4)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    actions_mean: np.ndarray
    actions_std: np.ndarray

    @classmethod
    def from_folder(cls, path: str | Path) -> PI0Stats:
        """Read processor_config.json; ValueError naming the folder and what is missing."""
        doc = processor_doc(path)
        missing = [k for k in STATS_KEYS if doc.get(k) is None]
        if missing:
            raise ValueError(f"π0 checkpoint {path}: no normalisation statistics ({', '.join(missing)} missing from "
                             f"{STATS_FILE}); physteer refuses to run it without them. Write the state and action "
                             "mean and std of the data it was trained on there (as PI0Processor saves them)")  # fmt: skip
        stats = cls(*(np.asarray(doc[k], dtype=np.float32) for k in STATS_KEYS))
        for key, size in (("state", ENV_STATE_SIZE), ("actions", ENV_ACTION_SIZE)):
            for part in ("mean", "std"):
                value = getattr(stats, f"{key}_{part}")
                if value.shape != (size,) or not np.all(np.isfinite(value)):
                    raise ValueError(f"π0 checkpoint {path}: {key}_{part} has shape {value.shape}; physteer's env "
                                     f"has {size} {key} dimensions (finite values)")  # fmt: skip
            if np.any(getattr(stats, f"{key}_std") <= 0):
                raise ValueError(f"π0 checkpoint {path}: {key}_std must be > 0 in every dimension")
        return stats

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready (the processor_config.json fields)."""
        return {k: getattr(self, k).astype(float).tolist() for k in STATS_KEYS}


#: The shipped tiny π0 (`--agent pi0 --model tiny`), made by `physteer train-pi0`'s recipe.
TINY_PI0_DIR = Path(__file__).resolve().parent / "tiny_pi0"
TINY_PI0_NAMES = ("tiny", "tiny-pi0")


def pi0_dir(model: str | Path) -> Path:
    """The checkpoint folder of `model`: TINY_PI0_DIR for "tiny" / "tiny-pi0", else the path."""
    if str(model) in TINY_PI0_NAMES:
        if not (TINY_PI0_DIR / "config.json").is_file():
            raise FileNotFoundError(f"model={str(model)!r}: no tiny π0 in {TINY_PI0_DIR}; make one with "
                                    f"`physteer train-pi0 --out-dir {TINY_PI0_DIR}` or pass a π0 folder")  # fmt: skip
        return TINY_PI0_DIR
    return Path(model)


def is_pi0_folder(path: str | Path) -> bool:
    """Whether `path` holds a config.json of model_type "pi0"."""
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "pi0"


def check_noise_scale(value: Any, where: str = "noise_scale") -> float:
    """`value` as a float in [0, 2], or ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 2.0:
        raise ValueError(f"{where}={value!r}: must be a number in [0, 2] (the starting noise's scale; 1: π0's own "
                         "sampling, 0: every decision from the same zero noise)")  # fmt: skip
    return float(value)


def check_blend(value: Any, where: str = "blend") -> float:
    """`value` as a float in [0, 1), or ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{where}={value!r}: must be a number in [0, 1) (the previous decision's share of "
                         "each overlapping action; 0: none)")  # fmt: skip
    return float(value)


def check_pi0_folder(path: str | Path, chunk: int | None = None, steps: int | None = None,
                     noise_scale: float | None = None, blend: float | None = None) -> None:  # fmt: skip
    """Before any episode, from the folder's JSON files alone: a π0 config, normalisation
    statistics, an action and state space the env fits in, `chunk` in 1..chunk_size, `steps`
    >= 1, `noise_scale` in [0, 2] and `blend` in [0, 1) (None: the model's own, checked too);
    "tiny" is the shipped tiny π0 (pi0_dir)."""
    path = pi0_dir(path)
    if not is_pi0_folder(path):
        raise ValueError(f"model {str(path)!r} is not a π0 checkpoint: expected a folder with a config.json of "
                         "model_type 'pi0' (transformers' PI0ForConditionalGeneration)")  # fmt: skip
    PI0Stats.from_folder(path)
    cfg = json.loads((Path(path) / "config.json").read_text())
    for key, need in (("max_action_dim", ENV_ACTION_SIZE), ("max_state_dim", ENV_STATE_SIZE)):
        if int(cfg.get(key, 32)) < need:
            raise ValueError(f"π0 checkpoint {path}: {key}={cfg.get(key)} is smaller than the env's {need} "
                             f"{'action' if 'action' in key else 'state'} dimensions")  # fmt: skip
    size = int(cfg.get("chunk_size", 50))
    doc = processor_doc(path)
    execute = doc.get("n_action_steps")
    if execute is not None and (
        isinstance(execute, bool) or not isinstance(execute, int) or not 1 <= execute <= size
    ):
        raise ValueError(f"π0 checkpoint {path}: n_action_steps={execute!r} in {STATS_FILE} must be an int in "
                         f"1..{size} (its chunk_size)")  # fmt: skip
    if chunk is not None and (
        isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= size
    ):
        raise ValueError(
            f"chunk={chunk!r}: must be an int in 1..{size} (the π0 checkpoint's chunk_size)"
        )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"denoise_steps={steps!r}: must be an int >= 1")
    if "noise_scale" in doc:
        check_noise_scale(doc["noise_scale"], f"π0 checkpoint {path}: noise_scale in {STATS_FILE}")
    if noise_scale is not None:
        check_noise_scale(noise_scale)
    if "blend" in doc:
        check_blend(doc["blend"], f"π0 checkpoint {path}: blend in {STATS_FILE}")
    if blend is not None:
        check_blend(blend)


def pi0_fingerprint(path: str | Path) -> str:
    """sha1 of a π0 folder's weight files and its processor_config.json (the execution defaults:
    actions per decision, noise scale, blend; the statistics): what decides its episodes."""
    import hashlib

    path = pi0_dir(path)
    return hashlib.sha1((weights_sha1(path) + (path / STATS_FILE).read_text()).encode()).hexdigest()
