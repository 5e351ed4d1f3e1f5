"""SARMMonitor: identical trajectories when it never vetoes, fail-closed vetoes, hold and stop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import CountingScorer, FakeTap, synthetic

from envs import FrankaPickEnv
from envs.expert import ScriptedExpert
from monitors.baselines import MahalanobisScorer
from monitors.sarm import SARMMonitor


def make_env() -> FrankaPickEnv:
    return FrankaPickEnv(obs_mode="state", max_steps=60)


def rollout(env, tap=None, n=60, seed=3, emit_every=5, acts=None):
    """Expert actions; the fake tap emits new activations every `emit_every` steps."""
    obs, info = env.reset(seed=seed, options={"material": "fragile"})
    expert = ScriptedExpert("gentle")
    rows = [(obs["state"].copy(), None, info)]
    for t in range(n):
        if tap is not None and t % emit_every == 0:
            tap.emit(acts(t) if acts else synthetic(8, seed=t))
        obs, reward, term, trunc, info = env.step(expert.act(info))
        rows.append((obs["state"].copy(), reward, info))
        if term or trunc:
            break
    return rows


def test_never_veto_monitor_leaves_trajectory_identical():
    plain = rollout(make_env())
    tap = FakeTap()
    scorer = MahalanobisScorer().fit(synthetic(500))
    mon = SARMMonitor(make_env(), tap, scorer, threshold=math.inf)
    monitored = rollout(mon, tap)
    assert len(plain) == len(monitored)
    for (s0, r0, i0), (s1, r1, i1) in zip(plain, monitored, strict=True):
        np.testing.assert_array_equal(s0, s1)
        assert r0 == r1
        for key in ("holding", "broken", "success", "peak_force"):
            assert i0[key] == i1[key]
        np.testing.assert_array_equal(i0["ee_pos"], i1["ee_pos"])
    sarm = [i["sarm"] for _, r, i in monitored if r is not None]
    assert all(not s["veto"] and math.isfinite(s["score"]) for s in sarm)
    assert mon.safety_stops == 0 and mon.veto_steps == 0


def test_scores_only_new_activations():
    tap = FakeTap()
    scorer = CountingScorer(0.0)
    mon = SARMMonitor(make_env(), tap, scorer, threshold=1.0)
    rows = rollout(mon, tap, n=20, emit_every=5)
    assert scorer.calls == 4
    news = [i["sarm"]["new"] for _, r, i in rows if r is not None]
    assert news == [t % 5 == 0 for t in range(20)]


def run_fail_case(tap, scorer, on_veto="hold"):
    mon = SARMMonitor(make_env(), tap, scorer, threshold=1.0, on_veto=on_veto)
    mon.reset(seed=0)
    out = mon.step(np.array([0.5, 0.0, 0.0, 0.3], dtype=np.float32))  # must not raise
    return mon, out


@pytest.mark.parametrize("on_veto", ["hold", "stop"])
@pytest.mark.parametrize(
    "case, reason",
    [
        ("nan", "non-finite activations: 1 NaN/inf"),
        ("no_tap", "no tap"),
        ("latest_none", "missing activations: tap.latest is None"),
        ("raises", "scorer raised RuntimeError: boom"),
        ("nan_score", "non-finite score nan"),
        ("anomalous", "anomalous: score 5 > threshold 1"),
    ],
)
def test_fail_closed_vetoes_with_reason(case, reason, on_veto):
    tap = FakeTap()
    acts = synthetic(4)
    if case == "nan":
        acts[2, 1] = float("nan")
    if case != "latest_none":
        tap.emit(acts)
    scorer = {
        "raises": CountingScorer(exc=RuntimeError("boom")),
        "nan_score": CountingScorer(float("nan")),
        "anomalous": CountingScorer(5.0),
    }.get(case, CountingScorer(0.0))
    mon, (obs, reward, term, trunc, info) = run_fail_case(
        None if case == "no_tap" else tap, scorer, on_veto
    )
    sarm = info["sarm"]
    assert sarm["veto"] is True and reason in sarm["reason"], sarm
    assert sarm["threshold"] == 1.0
    assert mon.safety_stops == 1 and mon.first_veto_step == 0
    if on_veto == "stop":
        assert trunc and not term and sarm["action"] == "stop"
    else:
        assert not trunc and sarm["action"] == "hold"


class NanBlindScorer(MahalanobisScorer):
    """A Scorer whose own score() skips the base class's input validation."""

    def score(self, activations):
        return 0.0


@pytest.mark.parametrize("scorer_cls", [MahalanobisScorer, NanBlindScorer])
def test_non_finite_activations_veto_with_a_real_scorer(scorer_cls):
    tap = FakeTap()
    acts = synthetic(4)
    acts[1, 2], acts[3, 0] = float("nan"), float("-inf")
    tap.emit(acts)
    scorer = scorer_cls().fit(synthetic(200))
    mon, (_, _, _, _, info) = run_fail_case(tap, scorer)
    assert info["sarm"]["veto"] and info["sarm"]["score"] is None
    assert "non-finite activations: 2 NaN/inf values" in info["sarm"]["reason"]
    tap.emit(synthetic(4, seed=1))  # finite again: scored
    _, _, _, _, info = mon.step(np.zeros(4, dtype=np.float32))
    assert math.isfinite(info["sarm"]["score"]) and "non-finite" not in info["sarm"]["reason"]


def test_hold_is_no_motion_with_gripper_kept():
    tap, scorer = FakeTap(), CountingScorer(0.0)
    env = make_env()
    mon = SARMMonitor(env, tap, scorer, threshold=1.0, on_veto="hold")
    obs, info = mon.reset(seed=1)
    assert mon.safe_action().tolist() == [0, 0, 0, -1]  # before any action: open
    tap.emit(synthetic(4))
    mon.step(np.array([0.2, 0.0, -0.3, 0.4], dtype=np.float32))
    scorer.value = 9.0
    tap.emit(synthetic(4, seed=1))
    ee_before = mon.unwrapped.robot.ee_position().copy()
    _, _, _, _, info = mon.step(np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32))
    assert info["sarm"]["veto"] and info["sarm"]["action"] == "hold"
    assert mon.safe_action().tolist() == pytest.approx([0, 0, 0, 0.4])
    moved = np.linalg.norm(mon.unwrapped.robot.ee_position() - ee_before)
    assert moved < 0.01  # the vetoed action would have moved it ~4 cm
    # the verdict stands until new activations arrive, then lifts
    _, _, _, _, info = mon.step(np.zeros(4, dtype=np.float32))
    assert info["sarm"]["veto"] and not info["sarm"]["new"]
    scorer.value = 0.0
    tap.emit(synthetic(4, seed=2))
    _, _, _, _, info = mon.step(np.zeros(4, dtype=np.float32))
    assert not info["sarm"]["veto"] and info["sarm"]["new"]
    assert mon.safety_stops == 1 and mon.veto_steps == 2


def test_non_finite_action_is_vetoed_not_raised():
    tap = FakeTap()
    tap.emit(synthetic(4))
    mon, (_, _, _, _, info) = run_fail_case(tap, CountingScorer(0.0))
    assert not info["sarm"]["veto"]
    _, _, _, _, info = mon.step(np.array([np.nan, 0, 0, 0], dtype=np.float32))
    assert info["sarm"]["veto"] and "non-finite action" in info["sarm"]["reason"]


def test_shadow_mode_reports_but_does_not_change_actions():
    tap = FakeTap()
    mon = SARMMonitor(make_env(), tap, CountingScorer(5.0), threshold=1.0, enforce=False)
    rows = rollout(mon, tap, n=15)
    plain = rollout(make_env(), n=15)
    for (s0, _, _), (s1, _, _) in zip(plain, rows, strict=True):
        np.testing.assert_array_equal(s0, s1)
    assert all(i["sarm"]["veto"] and not i["sarm"]["enforced"] for _, r, i in rows if r is not None)


def test_image_token_selection():
    tap = FakeTap()
    seen = []

    class Recorder(CountingScorer):
        def score(self, acts):
            seen.append(acts.shape[0])
            return 0.0

    tap.latest = torch.zeros(10, 4)
    tap.n_image_tokens = 8
    for tokens, n in (("image", 8), ("all", 10)):
        mon = SARMMonitor(make_env(), tap, Recorder(), threshold=1.0, tokens=tokens)
        mon.reset(seed=0)
        mon.step(np.zeros(4, dtype=np.float32))
        assert seen[-1] == n


def test_bad_arguments():
    env = make_env()
    with pytest.raises(ValueError, match="on_veto='pause'"):
        SARMMonitor(env, FakeTap(), CountingScorer(), on_veto="pause")
    with pytest.raises(ValueError, match="tokens='last'"):
        SARMMonitor(env, FakeTap(), CountingScorer(), tokens="last")
    with pytest.raises(ValueError, match="not calibrated"):
        SARMMonitor(env, FakeTap(), MahalanobisScorer())
    with pytest.raises(ValueError, match="has no score"):
        SARMMonitor(env, FakeTap(), object(), threshold=1.0)
    with pytest.raises(ValueError, match="threshold=nan"):
        SARMMonitor(env, FakeTap(), CountingScorer(), threshold=float("nan"))
