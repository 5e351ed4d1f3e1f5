"""MP4 writing with text overlays (condition, step, P(fragile), monitor score, banners)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import storage

BANNER_COLORS = {"VETO": (230, 150, 0), "BROKEN": (200, 20, 20), "SUCCESS": (20, 150, 40)}


def annotate(frame: np.ndarray, lines: Sequence[str], banner: str | None = None) -> np.ndarray:
    """Return a copy of `frame` with text lines top-left and an optional banner at the bottom."""
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    y = 4
    for line in lines:
        box = draw.textbbox((6, y), line, font=font)
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
        draw.text((6, y), line, fill=(255, 255, 255), font=font)
        y = box[3] + 5
    if banner:
        h, w = frame.shape[:2]
        color = BANNER_COLORS.get(banner.split()[0], (60, 60, 60))
        draw.rectangle((0, h - 26, w, h), fill=color)
        box = draw.textbbox((0, 0), banner, font=font)
        draw.text(((w - (box[2] - box[0])) // 2, h - 20), banner, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Concatenate two frames horizontally (pads the shorter one)."""
    h = max(left.shape[0], right.shape[0])
    pad = [np.pad(f, ((0, h - f.shape[0]), (0, 0), (0, 0))) for f in (left, right)]
    return np.concatenate(pad, axis=1)


def write_mp4(path: str, frames: Sequence[np.ndarray], fps: int = 12) -> str:
    """Write frames to an H.264 MP4 atomically (`storage.write_mp4`); return the path."""
    storage.write_mp4(path, frames, fps=fps)
    return str(path)
