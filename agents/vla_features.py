"""The frozen image features the tiny VLA trains on, computed once per demonstrations folder.

`train_vla` keeps the vision tower and connector frozen, so a frame's image features (the
connector outputs the image tokens receive) are the same in every round of the recipe. Without
a cache, each DAgger round recomputed them for every earlier round's frames (254 s of round 1's
938 s in the shipped recipe). `folder_features` stores them beside the frames of a
`Demonstrations` folder (`image_features-<fingerprint>.npy`, float32; the name says which
frozen weights made them) and reads them back on the next round.

The cache is keyed by a fingerprint of the frozen weights and of the processor's image settings:
features made by another vision tower are recomputed, never reused. A frame's features do not
depend on the batch it was computed in (measured: batches of 7, 12 and 32 give identical bits at
a fixed thread count), so a cached round trains bit for bit as an uncached one.

    feats = folder_features(backend, ["runs/train-vla/demos", "runs/train-vla/demos-dagger1"])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from agents.backend import VLMBackend
from storage import atomic_path

#: Name of a folder's cached features; the fingerprint (vision_fingerprint) keys them.
FEATURES_FILE = "image_features-{fingerprint}.npy"


@torch.no_grad()
def image_features(backend: VLMBackend, frames: np.ndarray, batch: int = 32) -> torch.Tensor:
    """(N × n_image_tokens × d) connector outputs (what the image tokens receive), frozen."""
    inner = backend.model.model
    rows = []
    for _, chunk in backend.batches(frames, batch):
        pix = backend.prepare(np.ascontiguousarray(chunk), "")["pixel_values"]
        feats = inner.get_image_features(pix, return_dict=True).pooler_output
        feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
        rows.append(feats.reshape(len(chunk), -1, feats.shape[-1]))
    return torch.cat(rows).float()


def vision_fingerprint(backend: VLMBackend) -> str:
    """sha1 of the frozen vision tower's and connector's weights and the image processor's
    settings: equal fingerprints give equal image features."""
    inner = backend.model.model
    digest = hashlib.sha1()
    for prefix, module in (("vision", inner.vision_model), ("connector", inner.connector)):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{prefix}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    image_processor = getattr(backend.processor, "image_processor", None)
    settings = image_processor.to_json_string() if image_processor is not None else ""
    digest.update(settings.encode())
    return digest.hexdigest()


def folder_features(
    backend: VLMBackend,
    folders: Sequence[str | Path],
    batch: int = 32,
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """The image features of the frames of Demonstrations folders, concatenated in order: each
    folder's from its cache when that was made by the same frozen weights, else computed and
    cached there (atomically). The weights are fingerprinted once for all the folders.

    Raises:
        ValueError: a folder holds no `frames.npy`.
    """
    folders = [Path(f) for f in folders]
    missing = [str(f) for f in folders if not (f / "frames.npy").is_file()]
    if missing:
        raise ValueError(f"{missing}: no frames.npy (not demonstrations folders)")
    name = FEATURES_FILE.format(fingerprint=vision_fingerprint(backend)[:16])
    parts = []
    for folder in folders:
        frames = np.load(folder / "frames.npy", mmap_mode="r")
        path = folder / name
        cached = np.load(path) if path.is_file() else None
        if cached is not None and len(cached) == len(frames):
            log(f"image features of {len(frames)} frames from {path}")
            parts.append(torch.from_numpy(cached))
            continue
        feats = image_features(backend, frames, batch)
        with atomic_path(path) as tmp:
            np.save(tmp, feats.numpy(), allow_pickle=False)
        parts.append(feats)
    return torch.cat(parts)
