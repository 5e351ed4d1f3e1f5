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


def test_paired_frames_differ_only_in_the_object():
    """Contrast pairs: one scene, its object fragile then rigid; every pixel that differs is the
    object's (the env's own segmentation of the same scene), and the labels differ only in material."""
    import pytest

    from envs.franka_pick import FrankaPickEnv
    from rollouts.frames import object_mask

    images, labels = render_labeled_frames(
        4, seed=4_000_003, image_size=96, first_frame_prob=1.0, paired=True
    )
    env = FrankaPickEnv(image_size=96)
    try:
        for j in range(2):
            a, b = labels[2 * j], labels[2 * j + 1]
            assert (a["material"], b["material"]) == ("fragile", "rigid")
            assert {k: v for k, v in a.items() if k != "material"} == {
                k: v for k, v in b.items() if k != "material"
            }
            env.reset(seed=a["seed"], options={"material": "fragile"})
            diff = (images[2 * j].astype(int) != images[2 * j + 1]).any(-1)
            assert diff.any() and not (diff & ~object_mask(env)).any()
    finally:
        env.close()
    with pytest.raises(ValueError, match="n=3: must be ≥ 1, and even for paired frames"):
        render_labeled_frames(3, seed=0, paired=True)
