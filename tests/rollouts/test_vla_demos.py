"""Behaviour-cloning demonstrations come from the one closed loop, with clean labels under
noisy execution, and replay exactly from their seeds."""

import numpy as np

from rollouts.vla_demos import collect_demonstrations


def test_demonstrations_are_reproducible_and_labelled_with_the_clean_action():
    a = collect_demonstrations(2, seed=7_000_000, horizon=3, frame_every=5)
    b = collect_demonstrations(2, seed=7_000_000, horizon=3, frame_every=5)
    assert len(a) == len(b) > 4
    for name in ("frames", "states", "efforts", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.frames.shape[1:] == (384, 384, 3) and a.labels.shape[1:] == (3, 4) and a.states.shape[1] == 17
    assert set(a.episodes.tolist()) == {7_000_000, 7_000_001}
    assert a.efforts[0] == -1.0  # nothing executed before an episode's first step
    # the label is the oracle's handling of the true material: firm (grip 1.0) or gentle (0.15)
    grips = {m: a.labels[a.materials == m][:, 0, 3].max() for m in set(a.materials.tolist())}
    for material, grip in grips.items():
        assert grip == (0.15 if material == "fragile" else 1.0) or grip == -1.0


def test_noise_moves_the_executed_motion_not_the_label():
    from agents.protocol import NoisyOracle

    agent = NoisyOracle(sigma=0.5, prob=1.0)
    agent.reset(3, lane=0)
    info = {"ee_pos": [0.0, 0.0, 0.2], "object_pos": [0.1, 0.0, 0.02], "bin_pos": [0.0, 0.3, 0.0],
            "holding": False, "object": {"material": "fragile"}}  # fmt: skip
    executed = agent.act({}, info)
    label = np.asarray(agent.decision_for(0)["label"])
    assert not np.allclose(executed[:3], label[:3]) and executed[3] == label[3]
