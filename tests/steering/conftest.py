"""Fixtures: the shipped tiny VLA, 16 labelled renders and FitData read at every layer, with two
demonstration episodes of each material handled as the other (LoReFT's data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def vla_backend():
    """The shipped tiny VLA's backend."""
    from agents.vla_model import TINY_VLA_DIR, load_vla

    return load_vla(TINY_VLA_DIR, "cpu", "float32")[0]


@pytest.fixture(scope="session")
def fit_data(vla_backend):
    """FitData of 16 balanced labelled frames (image tokens at every layer, frames kept)."""
    from agents.taps import ResidualTap
    from rollouts.frames import render_labeled_frames
    from steering import FitData

    images, labels = render_labeled_frames(16, 3_000_000)
    taps = [
        ResidualTap(n, include_last=False).attach(vla_backend) for n in range(vla_backend.n_layers)
    ]
    acts: dict[int, list[torch.Tensor]] = {n: [] for n in range(vla_backend.n_layers)}
    try:
        for _, batch in vla_backend.batches(images, 8):
            vla_backend.prob_yes(batch)
            for n, tap in enumerate(taps):
                acts[n].append(tap.latest_batch.reshape(-1, vla_backend.hidden_size).cpu())
    finally:
        for tap in taps:
            tap.remove()
    from rollouts.vla_demos import other_handling_demonstrations
    from steering.behaviour import VLABehaviour

    demos, toward = other_handling_demonstrations(2, 3_100_002, frame_every=4, max_steps=60)
    per_frame = acts[0][0].shape[0] // 8
    material = np.array([lab["material"] for lab in labels])
    color = np.array([lab["color"] for lab in labels])
    return FitData({n: torch.cat(a) for n, a in acts.items()}, np.repeat(material, per_frame),
                   np.repeat(color, per_frame), np.repeat(np.arange(16), per_frame), layer=2,
                   frames=images, frame_material=material, source="16 test frames",
                   demos=VLABehaviour(vla_backend, demos, toward, "2 test episodes"))  # fmt: skip
