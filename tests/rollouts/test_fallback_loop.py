"""A clean false alarm under each veto policy, through the one loop: with on_veto="fallback"
the gentle expert finishes the episode (the planner's and the VLA's) where "hold" and "stop"
lose it; episode rows carry the committed handling and the fallback step."""

from __future__ import annotations

import pytest
import torch

from envs.expert import PROFILES
from monitors.sarm import FALLBACK_HANDLING
from rollouts.episode import ClosedLoop, EpisodeSpec


class FalseAlarm:
    """A scorer that calls the first `clean` decisions of an episode normal (score 0) and every
    later one anomalous (1e9): a forced false alarm at a fixed decision of a clean episode."""

    threshold = 1.0

    def __init__(self, clean: int) -> None:
        self.clean, self.calls = clean, 0

    def score(self, activations: torch.Tensor) -> float:
        self.calls += 1
        return 0.0 if self.calls <= self.clean else 1e9


@pytest.fixture(scope="module")
def planner():
    from agents.vlm_agent import VLMAgent

    torch.set_num_threads(1)
    agent = VLMAgent("tiny", decide_every=10, device="cpu")
    yield agent
    agent.close()


def episode(agent, on_veto="hold", clean=None, seed=1, max_steps=150):
    scorers = {} if clean is None else {"alarm": FalseAlarm(clean)}
    loop = ClosedLoop(agent, max_steps=max_steps, scorers=scorers, on_veto=on_veto)
    try:
        (record,) = loop.run([EpisodeSpec(seed=seed, monitor="none" if clean is None else "alarm")])
    finally:
        loop.close()
    return record


def test_planner_false_alarm_while_holding_fallback_succeeds_hold_and_stop_do_not(planner):
    """Seed 1: a rigid object the planner handles firmly and places; the alarm comes at its 4th
    decision (step 30), with the object in the gripper."""
    plain = episode(planner)
    assert plain.row["success"] and plain.row["committed_handling"] == "firm"
    assert plain.row["fallback_step"] is None
    assert plain.steps[30]["holding"]
    fb = episode(planner, "fallback", clean=3)
    row = fb.row
    assert row["first_veto_step"] == row["fallback_step"] == 30
    assert row["success"] and not row["broken"] and row["broken_cause"] is None
    assert row["committed_handling"] == FALLBACK_HANDLING
    assert row["profile_last"] == "firm"  # the agent kept its decision; the fallback overrode it
    held = [s["holding"] for s in fb.steps[30:]]
    assert all(held[: held.index(False)]) and held.index(False) > 20  # carried on, then released
    for policy in ("hold", "stop"):
        lost = episode(planner, policy, clean=3).row
        assert not lost["success"] and lost["truncated"] and lost["fallback_step"] is None
        assert lost["committed_handling"] == "firm" and lost["first_veto_step"] == 30


def test_planner_alarm_from_the_first_decision_fallback_does_the_whole_task(planner):
    """Every decision vetoed (like a monitor with threshold -inf): the fallback drives from step 0."""
    assert episode(planner, seed=0).row["success"]
    row = episode(planner, "fallback", clean=0, seed=0).row
    assert row["success"] and row["fallback_step"] == 0 and row["vetoes"] == row["steps"]
    assert not episode(planner, "hold", clean=0, seed=0).row["success"]


def test_vla_fallback_succeeds_and_its_effort_follows_the_fallbacks_grip():
    from agents.vla_agent import VLAAgent

    torch.set_num_threads(1)
    vla = VLAAgent("tiny-vla", device="cpu")
    try:
        record = episode(vla, "fallback", clean=0, seed=1)
        row = record.row
        assert row["success"] and row["fallback_step"] == 0
        assert row["committed_handling"] == FALLBACK_HANDLING
        efforts = {round(d["effort"], 3) for d in vla.decisions}
        # the VLA still decides every chunk, but what it conditions on is what ran: the gentle
        # expert's grip while it held the object, open otherwise
        assert efforts == {-1.0, PROFILES["gentle"].grip}
        assert episode(vla, "hold", clean=0, seed=1, max_steps=8).row["committed_handling"] == "vla"
    finally:
        vla.close()


def test_a_fallback_episode_replays_from_its_logged_executed_actions():
    """The step rows log what the env ran (EXECUTED_COLUMNS): the fallback expert's actions, not
    the agent's, so re-simulation (replay, the LeRobot export) reproduces the episode."""
    import numpy as np

    from agents.protocol import ScriptedAgent
    from rollouts.resimulate import Replayer

    class Always:
        threshold = 1.0

        def score(self, activations: torch.Tensor) -> float:
            return 1e9

    loop = ClosedLoop(ScriptedAgent(), max_steps=150, image_size=64, record_decisions=False,
                      scorers={"a": Always()}, on_veto="fallback")  # fmt: skip
    try:
        (rec,) = loop.run([EpisodeSpec(seed=1, monitor="a", options={"material": "rigid"})])
    finally:
        loop.close()
    assert rec.row["fallback_step"] == 0 and rec.row["success"]
    requested = np.array([[s[c] for c in ("a_dx", "a_dy", "a_dz", "a_grip")] for s in rec.steps])
    ran = np.array([[s[c] for c in ("x_dx", "x_dy", "x_dz", "x_grip")] for s in rec.steps])
    assert not np.allclose(requested, ran)  # the firm agent asked, the gentle fallback ran
    replayer = Replayer({"on_veto": "fallback", "image_size": 64, "max_steps": 150}, render=False)
    try:
        replayer.replay(rec.row, rec.steps)  # raises at the first step that differs
    finally:
        replayer.close()
