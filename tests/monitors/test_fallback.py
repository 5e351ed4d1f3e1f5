"""on_veto="fallback": a veto hands control to the gentle expert for the rest of the episode,
which takes over where the arm is (a held object is carried on to the bin); "hold" freezes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeTap, synthetic

from envs import FrankaPickEnv
from envs.expert import PROFILES, ScriptedExpert
from monitors.baselines import MahalanobisScorer
from monitors.sarm import FALLBACK_HANDLING, SARMMonitor

SEED = 4  # a rigid object the firm expert picks and places on its own


@pytest.fixture(scope="module")
def scorer():
    return MahalanobisScorer().fit(synthetic(500))


def run(scorer, on_veto: str | None, veto_phase: str | None, max_steps: int = 160):
    """The firm expert on a rigid object; clean activations until it reaches `veto_phase`
    holding the object, then one anomalous decision that stands (no later decision)."""
    env = FrankaPickEnv(obs_mode="state", max_steps=max_steps)
    tap = FakeTap()
    if on_veto is not None:
        env = SARMMonitor(env, tap, scorer, threshold=5.0, on_veto=on_veto)
    obs, info = env.reset(seed=SEED, options={"material": "rigid"})
    expert, infos, alarm = ScriptedExpert("firm"), [info], None
    tap.emit(synthetic(8, seed=0))
    for t in range(max_steps):
        if alarm is None and info["holding"] and expert.phase == veto_phase:
            alarm = t
            tap.emit(synthetic(8, shift=3.0, seed=1))  # scores ~40 against the threshold 5
        obs, reward, term, trunc, info = env.step(expert.act(info))
        infos.append(info)
        if term or trunc:
            break
    return env, infos, alarm


@pytest.mark.parametrize("phase", ["lift", "carry"])
def test_fallback_carries_a_held_object_to_the_bin_where_hold_freezes(scorer, phase):
    _, plain, _ = run(scorer, None, None)
    assert plain[-1]["success"]  # the unmonitored agent succeeds on this seed
    mon, infos, alarm = run(scorer, "fallback", phase)
    assert alarm is not None and mon.fallback_step == alarm == mon.first_veto_step
    assert mon.handling == FALLBACK_HANDLING
    assert infos[-1]["success"] and not infos[-1]["broken"]
    after = infos[alarm + 1 :]
    released = next(i for i, x in enumerate(after) if not x["holding"])
    # carried, not dropped: still held until it is over the bin, let go low above its floor
    last_held = after[released - 1]
    assert np.linalg.norm(last_held["ee_pos"][:2] - last_held["bin_pos"][:2]) < 0.02
    assert last_held["ee_pos"][2] - last_held["bin_pos"][2] < 0.1
    assert all(x["sarm"]["action"] == "fallback" for x in after)
    grips = {round(float(x["executed_action"][3]), 3) for x in after}
    assert grips <= {PROFILES["gentle"].grip, -1.0}  # the gentle expert's grip, not the firm one
    hold, held_infos, _ = run(scorer, "hold", phase)
    assert not held_infos[-1]["success"] and held_infos[-1]["step"] == 160  # held to the limit
    assert hold.fallback_step is None and hold.handling is None


def test_vetoes_after_the_fallback_change_nothing(scorer):
    """Once the fallback has control, the monitor still scores and reports, but its later
    vetoes (or their absence) leave the fallback driving."""
    env = SARMMonitor(FrankaPickEnv(obs_mode="state", max_steps=40), FakeTap(), scorer,
                      threshold=5.0, on_veto="fallback")  # fmt: skip
    tap = env.tap
    obs, info = env.reset(seed=SEED)
    tap.emit(synthetic(8, shift=3.0, seed=1))
    agent = np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32)  # what the agent asks, every step
    reports = []
    for t in range(12):
        if t == 4:
            tap.emit(synthetic(8, seed=2))  # clean again: no veto, still the fallback
        obs, _, _, _, info = env.step(agent)
        reports.append(info["sarm"])
    assert [r["veto"] for r in reports] == [True] * 4 + [False] * 8
    assert all(r["action"] == "fallback" and r["fallback_step"] == 0 for r in reports)
    assert not np.allclose(info["executed_action"], agent)
    env.reset(seed=SEED)  # a new episode starts with the agent in control
    assert env.fallback_step is None and env.handling is None


def test_bad_on_veto_names_the_choices(scorer):
    with pytest.raises(ValueError, match="'fallback'"):
        SARMMonitor(FrankaPickEnv(obs_mode="state"), FakeTap(), scorer, threshold=1.0,
                    on_veto="retreat")  # fmt: skip
