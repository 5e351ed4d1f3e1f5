"""Collect tap-layer activations of balanced env renders into an ActivationStore.

Every image contributes its image tokens (81 for a 384² frame) as rows, each with metadata
(image id, token position, color, material, shade, shape, seed, layer, model). The
difference-of-means steering vector (mean fragile − mean rigid over image tokens) is saved
beside the store as `dom_vector.safetensors`, since every steering experiment needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae.store import ActivationStore
from storage import write_safetensors


def image_token_activations(
    backend: Any, tap: Any, images: np.ndarray, batch_size: int = 16
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """The VLM stage of collection: one forward per batch, the tap's image tokens on the CPU.

    Args:
        backend: a loaded agents.backend.VLMBackend.
        tap: an agents.taps.ResidualTap attached to `backend` (include_last=False).
        images: N × H × W × 3 uint8 frames.
        batch_size: images per forward.

    Yields:
        (index of the batch's first image, B × n_image_tokens × d activations,
        B × n_image_tokens token positions), both on the CPU.
    """
    for start, batch in backend.batches(images, batch_size):
        backend.prob_yes(batch)  # one forward; the tap records its layer
        yield start, tap.latest_batch.cpu(), tap.positions_batch.cpu()


def collect_activations(
    backend: Any,
    layer: int,
    store_dir: str | Path,
    n_images: int,
    seed: int = 0,
    batch_size: int = 16,
    frames_per_chunk: int = 64,
    progress: Any = None,
    workers: int = 1,
) -> ActivationStore:
    """Render `n_images` balanced frames, run the VLM in batches, append image-token activations.

    Args:
        backend: a loaded agents.backend.VLMBackend.
        layer: decoder layer to tap.
        store_dir: the store folder (created; must be new or hold the same d).
        n_images: number of frames (multiples of 16 are exactly balanced).
        seed: first env seed of the frames.
        batch_size: images per VLM forward.
        frames_per_chunk: frames rendered before each forward pass (memory bound).
        progress: optional callable(n_done) after each chunk.
        workers: processes rendering the next chunks meanwhile (the same frames).
    """
    (store,) = collect_many(
        [(backend, layer, store_dir)],
        n_images,
        seed,
        batch_size,
        frames_per_chunk,
        progress,
        workers,
    )
    return store


def collect_many(
    targets: list[tuple[Any, int, str | Path]],
    n_images: int,
    seed: int = 0,
    batch_size: int = 16,
    frames_per_chunk: int = 64,
    progress: Any = None,
    workers: int = 1,
    paired: bool = False,
) -> list[ActivationStore]:
    """`collect_activations` for several (backend, layer, store folder) targets from ONE rendering
    pass: each chunk of frames is rendered once and fed to every target (several models, or one
    model at several layers). Each store equals what `collect_activations` alone would write.
    `workers` > 1 renders the next chunks in that many processes while the models read the
    current one (rollouts.frames.labeled_frame_chunks: the same frames in the same order).
    `paired`: contrast pairs, one scene with each material (rollouts.frames.render_labeled_frames;
    the two frames of a pair share their rows' `episode`)."""
    from agents.taps import ResidualTap
    from rollouts.frames import COLLECT_RENDERER, labeled_frame_chunks

    if n_images < 1:
        raise ValueError(f"n_images must be ≥ 1, got {n_images}")
    if not targets:
        raise ValueError("no (backend, layer, store folder) target to collect for")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an int >= 1")
    writers = [(backend, StoreWriter(store_dir, backend.hidden_size, layer, backend.name))
               for backend, layer, store_dir in targets]  # fmt: skip
    # The render processes take `workers` cores; torch threads beyond the cores they leave (at
    # least one) only spin against them (2 cores, 256 frames for two models: 18.2 -> 15.8 s, the
    # same activations).
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(min(threads, max(1, (os.cpu_count() or 1) - workers)))
    done = 0
    try:
        for images, labels in labeled_frame_chunks(
            n_images,
            seed,
            frames_per_chunk,
            workers,
            image_size=384,
            renderer=COLLECT_RENDERER,
            paired=paired,
        ):
            n = len(labels)
            for backend, w in writers:
                with ResidualTap(w.layer, include_last=False).attach(backend) as tap:
                    w.add(image_token_activations(backend, tap, images, batch_size), labels, done)
            done += n
            if progress is not None:
                progress(done)
    finally:
        torch.set_num_threads(threads)
    return [w.finish(n_images) for _, w in writers]


class StoreWriter:
    """A new store filled with labelled image-token activations (one target of `collect_many`,
    or an agent's closed-loop decisions: studies.rollout_store), and the sums behind its dom
    vector.

    Args:
        store_dir: a new store folder.
        d: the activations' width.
        layer, model: recorded in every row (and the dom vector's metadata).
    """

    def __init__(self, store_dir: str | Path, d: int, layer: int, model: str) -> None:
        self.layer, self.model, self.store_dir = layer, model, Path(store_dir)
        self.store = ActivationStore(store_dir, d=d)
        if len(self.store):
            raise ValueError(
                f"store {store_dir} already holds {len(self.store)} rows; collect into a new folder"
            )
        self.sums = {m: torch.zeros(d, dtype=torch.float64) for m in ("fragile", "rigid")}
        self.counts = {"fragile": 0, "rigid": 0}

    def add(
        self,
        batches: Iterator[tuple[int, torch.Tensor, torch.Tensor]],
        labels: list[dict],
        done: int,
    ) -> None:
        """Append one chunk's image-token activations (`done`: images before the chunk)."""
        acts, meta = [], []
        for start, block, positions in batches:
            for b in range(block.shape[0]):
                lab = labels[start + b]
                acts.append(block[b])
                meta.extend(
                    {
                        "image_id": done + start + b,
                        "token_position": p,
                        "token_index": t,
                        "color": lab["color"],
                        "material": lab["material"],
                        "shade": lab["shade"],
                        "shape": lab["shape"],
                        "episode": lab["seed"],
                        "step": lab["step"],
                        "layer": self.layer,
                        "model": self.model,
                    }
                    for t, p in enumerate(positions[b].tolist())
                )
                self.sums[lab["material"]] += block[b].double().sum(0)
                self.counts[lab["material"]] += block[b].shape[0]
        self.store.append(torch.cat(acts), meta)

    def finish(self, n_images: int) -> ActivationStore:
        """Write the dom vector (mean fragile − mean rigid) beside the store; returns the store."""
        if min(self.counts.values()) > 0:
            dom = (
                self.sums["fragile"] / self.counts["fragile"]
                - self.sums["rigid"] / self.counts["rigid"]
            ).float()
            write_safetensors(
                self.store_dir / "dom_vector.safetensors",
                {"dom": dom},
                metadata={
                    "layer": str(self.layer),
                    "model": self.model,
                    "n_images": str(n_images),
                },
            )
        return self.store


def load_dom_vector(path: str | Path) -> torch.Tensor:
    """The difference-of-means vector saved by `collect_activations`."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "dom_vector.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no steering vector at {path} (run `physteer collect`)")
    return load_file(str(path))["dom"]


def mean_pooled(store: ActivationStore) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per-image mean activations and labels (for probes and quick checks)."""
    acts, meta = store.load_all(with_metadata=True)
    meta = meta.to_pylist() if hasattr(meta, "to_pylist") else meta
    ids = np.array([m["image_id"] for m in meta])
    order = np.unique(ids)
    x = acts.numpy() if hasattr(acts, "numpy") else np.asarray(acts)
    pooled = np.stack([x[ids == i].mean(0) for i in order])
    first = {m["image_id"]: m for m in reversed(meta)}
    return pooled, [first[i] for i in order]


def random_weights_backend(backend: Any, seed: int = 0) -> Any:
    """The same architecture and processor as `backend` with freshly initialised weights.

    This is the discovery control: an SAE trained on a random-weight model's activations of
    the same images must find no fragility feature, or discovery is picking up something other
    than what the trained model learned (pixel statistics passed through any network).
    """
    from agents.backend import VLMBackend

    model = backend.model
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = type(model)(model.config)  # transformers' own initialisation of this architecture
    fresh = fresh.to(
        device=next(model.parameters()).device, dtype=next(model.parameters()).dtype
    ).eval()
    name = f"{backend.name} (random weights, seed {seed})"
    if getattr(backend, "model_type", None) == "pi0":  # a π0: its tokenizer, statistics, sampling
        from agents.pi0_model import PI0Backend

        out = PI0Backend(fresh, backend.tokenizer, backend.stats, name=name)
        out.n_action_steps, out.noise_scale, out.blend = (backend.n_action_steps, backend.noise_scale,
                                                          backend.blend)  # fmt: skip
        return out
    return VLMBackend(fresh, backend.processor, name=name)
