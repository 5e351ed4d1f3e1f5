"""Resolve where and how a model runs and where its files are: device, dtype, model path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from agents.tiny_model import TINY_VLM_DIR

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" | "mps" to an available torch device.

    "auto" picks cuda, then mps, then cpu. Raises ValueError for an unknown name or an
    accelerator that is not available here.
    """
    name = str(device)
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise ValueError(f"device={device!r}: expected one of {', '.join(DEVICES)} (or 'cuda:N')")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if base == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device={device!r}: MPS is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    """Map "float32" | "bfloat16" | "float16" (or a torch dtype among them) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype={dtype}: expected one of {', '.join(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_model_path(model: str | Path) -> tuple[str, bool]:
    """Return (path or hub id, is_local). "tiny" means the shipped tiny checkpoint."""
    text = str(model)
    if not text:
        raise ValueError("model='': pass 'tiny', a local directory or a hub id")
    if text == "tiny":
        if not (TINY_VLM_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"the tiny checkpoint is missing from {TINY_VLM_DIR}; run `physteer train-tiny`"
            )
        return str(TINY_VLM_DIR), True
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model={text!r}: directory has no config.json (not a saved model)")
        return str(path), True
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ValueError(f"model={text!r}: no such directory")
    return text, False


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def check_weight_files(folder: str | Path) -> None:
    """Read the header of every safetensors file of a local checkpoint (cheap: no tensor is
    loaded), so a truncated or corrupt file is named before anything is built from it.

    Raises:
        ValueError: the file, and what the safetensors reader found wrong.
    """
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:  # SafetensorError and OSError alike: the file cannot be read
            raise ValueError(f"weights file {path} is truncated or corrupt ({exc}); save or copy the "
                             "checkpoint again") from None  # fmt: skip


def weights_sha1(folder: str | Path) -> str:
    """sha1 over a local checkpoint's weight files (by name; every file that ends in one of
    WEIGHT_SUFFIXES, in sorted order). A run records it because a name such as "tiny" points
    at a folder whose weights change when a new checkpoint ships. Reads every weight byte once
    (seconds for a multi-GB model)."""
    files = sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )
    if not files:
        raise ValueError(
            f"{folder} holds no weight files (expected one ending in {', '.join(WEIGHT_SUFFIXES)})"
        )
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
