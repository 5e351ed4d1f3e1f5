"""ScriptedExpert.resume: taking over mid-episode from the scene in the env's info."""

from __future__ import annotations

import numpy as np
import pytest

from envs.expert import GRASP_Z, HOVER, ScriptedExpert

BIN = np.array([0.0, 0.17, 0.006])
OBJ = np.array([0.02, -0.06, 0.03])


def info(ee, obj=OBJ, holding=False):
    return {"ee_pos": np.asarray(ee, float), "object_pos": np.asarray(obj, float),
            "bin_pos": BIN, "holding": holding}  # fmt: skip


@pytest.mark.parametrize("scene, phase", [
    (info([0.0, 0.0, 0.3]), "approach"),                       # far from everything
    (info([0.02, -0.06, HOVER + 0.02]), "approach"),            # above the object, above hover
    (info([0.02, -0.06, 0.07]), "descend"),                     # above it, on the way down
    (info([0.02, -0.06, GRASP_Z + 0.004]), "close"),            # fingers around it
    (info([0.02, -0.06, 0.05], holding=True), "lift"),          # just grasped
    (info([0.0, 0.05, 0.16], [0.0, 0.05, 0.13], True), "lift"),  # carrying (lift → carry at once)
    (info([0.0, 0.17, 0.1], [0.0, 0.17, 0.07], True), "lower"),  # above the bin
    (info([0.0, 0.17, 0.1], [0.01, 0.16, 0.03]), "retreat"),     # let go in the bin
])  # fmt: skip
def test_resume_picks_the_phase_of_the_scene(scene, phase):
    expert = ScriptedExpert("gentle")
    assert expert.resume(scene) == phase == expert.phase
    action = expert.act(scene)
    assert action.shape == (4,) and np.all(np.isfinite(action))
    if scene["holding"]:
        assert action[3] > 0  # a held object is never let go on the way


def test_resume_needs_the_scene():
    with pytest.raises(ValueError, match=r"info lacks \['holding'\]"):
        ScriptedExpert().resume({"ee_pos": [0] * 3, "object_pos": [0] * 3, "bin_pos": [0] * 3})
