"""Labelled camera frames for training and probing vision models.

Frames come from real episodes: a balanced design over color × material × shade × shape
(the env's seed blocks), random object pose and lighting (from the seed), and the arm caught
at a random point of a gentle expert's episode, so frames look like what an agent sees while
acting, not only the first frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.expert import ScriptedExpert
from envs.franka_pick import FrankaPickEnv


def render_labeled_frames(
    n: int,
    seed: int,
    image_size: int = 384,
    max_steps_into_episode: int = 60,
    first_frame_prob: float = 0.5,
    progress: Any = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render `n` frames with their labels.

    Args:
        n: number of frames (a multiple of 16 makes the design exactly balanced).
        seed: first env seed; frame i uses env seed `seed + i`.
        image_size: frame width = height.
        max_steps_into_episode: frames are taken after 0..this many expert steps.
        first_frame_prob: probability of taking the episode's first frame.
        progress: optional callable(i) called after each frame (for progress bars).

    Returns:
        images (n × image_size × image_size × 3 uint8) and one label dict per frame with
        color, material, shade, shape, seed and step.
    """
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=image_size)
    rng = np.random.default_rng([seed, 31337])
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels: list[dict[str, Any]] = []
    try:
        for i in range(n):
            _, info = env.reset(seed=seed + i)
            steps = 0 if rng.random() < first_frame_prob else int(rng.integers(1, max_steps_into_episode + 1))
            expert = ScriptedExpert("gentle")
            for _ in range(steps):
                _, _, terminated, truncated, info = env.step(expert.act(info))
                if terminated or truncated:
                    break
            images[i] = env.render()
            labels.append({**info["object"], "seed": seed + i, "step": info["step"]})
            if progress is not None:
                progress(i)
    finally:
        env.close()
    return images, labels
