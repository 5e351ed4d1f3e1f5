"""Processor-equal model inputs for same-size frames, rebuilt without the processor.

For a fixed prompt and frames that need no resize, split or padding, a VLM processor's output
is a per-byte function of the pixels plus token rows that are the same for every frame. A
`FrameRecipe` rebuilds it from a lookup table and cached rows, bit for bit, and is only kept
after it reproduces the processor itself on probe frames (see `VLMBackend.frame_recipe`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class FrameRecipe:
    """The processor's output for one prompt and one frame shape, rebuilt without the processor.

    The processor (Idefics3's image processor: PIL round trips, float64 rescale, normalise,
    pad) took ~3.5 ms per 384² frame on one core of the dev machine, ~15% of a tiny-model
    step. When frames need no resize, split or padding, its pixel values are a function of
    (channel, byte value) alone and every other output (token ids, attention mask, pixel mask)
    is the same row for every frame. `build` reads a 256-entry table per channel off the
    processor's own output and keeps only a recipe that reproduces the processor exactly on
    probe frames.

    Attributes:
        rows: processor outputs other than pixel values, for one frame (leading dim 1).
        table: (C × 256) pixel value of byte v in channel c, in the processor's float dtype.
        pixel_shape: shape of one frame's pixel values, e.g. (1, 3, H, W) (one image per row).
    """

    rows: dict[str, torch.Tensor] = field(repr=False)
    table: np.ndarray = field(repr=False)
    pixel_shape: tuple[int, ...]

    @classmethod
    def build(
        cls, call: Callable[[list[np.ndarray]], dict], shape: tuple[int, int, int]
    ) -> FrameRecipe | None:
        """A recipe equal to `call` (the processor on a list of frames) for frames of `shape`.

        Returns None when the processor's output for that shape is not reproduced bit for bit
        (it resizes, splits or pads such frames, or is not a per-pixel map): callers then use
        the processor.
        """
        height, width, channels = shape
        if height * width < 256:
            return None
        # Byte value v sits at flat pixel v (and repeats after), in every channel.
        ramp = (np.arange(height * width) % 256).astype(np.uint8).reshape(height, width, 1)
        ramp = np.repeat(ramp, channels, axis=2)
        ref = call([ramp])
        pixels = ref.get("pixel_values")
        if not all(torch.is_tensor(v) for v in ref.values()) or pixels is None:
            return None
        if pixels.numel() != height * width * channels or not pixels.is_floating_point():
            return None
        if pixels.dtype not in (torch.float32, torch.float64):
            return None
        table = pixels.reshape(channels, height * width)[:, :256].numpy().copy()
        recipe = cls(
            rows={k: v.clone() for k, v in ref.items() if k != "pixel_values"},
            table=table,
            pixel_shape=tuple(pixels.shape[1:]),
        )
        probes = np.random.default_rng(0).integers(0, 256, (2, *shape), dtype=np.uint8)
        for frames in ([ramp], list(probes)):
            if not _same_inputs(recipe.inputs(frames), call(frames)):
                return None
        return recipe

    def inputs(self, frames: Sequence[np.ndarray] | np.ndarray) -> dict[str, torch.Tensor]:
        """Processor-equal CPU inputs for a batch of frames of the recipe's shape."""
        batch = np.asarray(frames)  # stacks a list; a contiguous (N, H, W, C) array is kept
        n, channels = batch.shape[0], self.table.shape[0]
        pixels = np.empty((n, channels, *batch.shape[1:3]), dtype=self.table.dtype)
        for c in range(channels):
            np.take(self.table[c], batch[..., c], out=pixels[:, c])
        out = {k: v.repeat(n, *[1] * (v.dim() - 1)) for k, v in self.rows.items()}
        out["pixel_values"] = torch.from_numpy(pixels).reshape(n, *self.pixel_shape)
        return out


def _same_inputs(a: dict, b: dict) -> bool:
    """True when two input dicts hold the same keys and bitwise-equal tensors of one dtype."""
    if set(a) != set(b):
        return False
    for key, value in a.items():
        other = b[key]
        if not (torch.is_tensor(value) and torch.is_tensor(other)):
            return False
        if value.dtype != other.dtype or value.shape != other.shape:
            return False
        if not torch.equal(value, other):
            return False
    return True
