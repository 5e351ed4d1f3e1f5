"""Labelled frames are real renders with balanced labels."""

from collections import Counter

import numpy as np

from rollouts.frames import render_labeled_frames


def test_render_labeled_frames_balanced():
    images, labels = render_labeled_frames(16, seed=0, image_size=64)
    assert images.shape == (16, 64, 64, 3) and images.dtype == np.uint8
    assert Counter((lab["color"], lab["material"], lab["shade"]) for lab in labels) == Counter(
        {k: 2 for k in Counter((lab["color"], lab["material"], lab["shade"]) for lab in labels)}
    )
    assert len({lab["seed"] for lab in labels}) == 16
    assert images.std() > 10  # not blank frames
