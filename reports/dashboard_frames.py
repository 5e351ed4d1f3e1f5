"""The dashboard's frames: collection frames re-rendered with the object's pixel mask, the share
of each image token on the object, and a token-activation heatmap over a frame."""

from __future__ import annotations

from typing import Any

import numpy as np

PATCH_PX = 14  # vision patch size of the tiny model and SmolVLM
IMAGE_SIZE = 384  # frames of `physteer collect`


class FrameRenderer:
    """Re-renders collection frames (env seed + gentle expert steps, drawn with
    rollouts.frames.COLLECT_RENDERER) with the object's pixel mask, through the one closed loop
    (rollouts.frames: an ExpertAgent and a FrameAndMask recorder)."""

    def __init__(self, image_size: int = IMAGE_SIZE) -> None:
        from agents.protocol import ExpertAgent
        from rollouts.episode import ClosedLoop
        from rollouts.frames import COLLECT_RENDERER, FrameAndMask

        self._step = 0
        self.loop = ClosedLoop(ExpertAgent("gentle"), image_size=image_size, record_decisions=False,
                               renderer=COLLECT_RENDERER, recorders=lambda spec: [FrameAndMask(self._step)])  # fmt: skip
        self.size = image_size

    def render(self, seed: int, step: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(frame H × W × 3, object mask H × W, object labels) of env seed `seed` after `step`
        expert steps (the last frame when the episode ends earlier)."""
        from rollouts.episode import EpisodeSpec

        if int(step) < 0:
            raise ValueError(f"step={step!r}: expected the number of expert steps, an int >= 0")
        self._step = int(step)
        (record,) = self.loop.run([EpisodeSpec(int(seed))])
        frame, mask, label = record.extra["frame"]
        return frame, mask, {k: v for k, v in label.items() if k not in ("seed", "step")}

    def close(self) -> None:
        """Release the env."""
        self.loop.close()


def cell_overlap(mask: np.ndarray, grid: int) -> np.ndarray:
    """grid × grid share of object pixels per token (token = (size // 14 // grid) × 14 px square)."""
    cell = (mask.shape[0] // PATCH_PX // grid) * PATCH_PX
    m = mask[: grid * cell, : grid * cell].astype(np.float64)
    return m.reshape(grid, cell, grid, cell).mean((1, 3))


def heatmap_png(
    frame: np.ndarray, grid_acts: np.ndarray, vmax: float, mask: np.ndarray | None, size: int = 176
) -> bytes:
    """The frame with the token activations over it (inferno, opacity 0.55 × activation) and the
    object's outline in cyan, as PNG bytes of `size` × `size`."""
    import io

    import matplotlib
    from PIL import Image

    g = grid_acts.shape[0]
    cell = (frame.shape[0] // PATCH_PX // g) * PATCH_PX
    heat = np.zeros(frame.shape[:2])
    heat[: g * cell, : g * cell] = np.kron(
        np.clip(grid_acts / max(vmax, 1e-12), 0, 1), np.ones((cell, cell))
    )
    rgb = matplotlib.colormaps["inferno"](heat)[..., :3] * 255
    alpha = (0.55 * heat)[..., None]
    out = frame.astype(np.float64) * (1 - alpha) + rgb * alpha
    if mask is not None and mask.any():
        inner = mask.copy()
        inner[1:-1, 1:-1] = (
            mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        )
        edge = mask & ~inner
        edge = edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)  # 2 px, visible after downscaling
        out[edge] = (0, 255, 255)
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.LANCZOS
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
