"""Learned failure predictors (monitors.failure) and signal scorers (monitors.signals): they learn
a planted failure signal and not noise, save and load to the same scores, keep one history per
episode inside the monitor, and refuse training data without failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monitors.calibration import calibrate_episodes
from monitors.failure import FailurePredictor
from monitors.scorers import load_scorer, make_scorer
from monitors.signals import SignalScorer


def episodes(n: int, planted: bool, seed: int = 0, d: int = 8, tokens: int = 4):
    """n episodes of 6 decisions; failing ones drift along feature 0 from decision 3 on."""
    g = torch.Generator().manual_seed(seed)
    eps, failed = [], []
    for i in range(n):
        fail = i % 2 == 0
        decisions = []
        for t in range(6):
            x = torch.randn(tokens, d, generator=g)
            if planted and fail and t >= 3:
                x[:, 0] += 2.0
            decisions.append(x)
        eps.append(decisions)
        failed.append(fail)
    return eps, failed


def _auroc(scorer, eps, failed):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(failed, [scorer.score_many(e).max() for e in eps])


@pytest.mark.parametrize("arch", ["mlp", "lstm"])
def test_a_predictor_learns_a_planted_failure_signal_and_not_noise(arch):
    train, y = episodes(40, planted=True)
    test, yt = episodes(40, planted=True, seed=1)
    p = FailurePredictor(arch=arch).fit_episodes(train, y)
    p.set_time_profile([e for e, f in zip(train, y, strict=True) if not f])  # as the bench scores
    assert _auroc(p, test, yt) > 0.9
    noise, yn = episodes(40, planted=False, seed=2)
    q = FailurePredictor(arch=arch).fit_episodes(noise, yn)
    q.set_time_profile([e for e, f in zip(noise, yn, strict=True) if not f])
    held, yh = episodes(40, planted=False, seed=3)
    assert _auroc(q, held, yh) < 0.75  # nothing to learn: near chance on new episodes


def test_time_profile_calibration_and_round_trip(tmp_path):
    train, y = episodes(40, planted=True)
    p = FailurePredictor(arch="lstm", model="m", layer=1).fit_episodes(train, y)
    ok = [e for e, f in zip(train, y, strict=True) if not f]
    p.set_time_profile(ok)
    cal, yc = episodes(40, planted=True, seed=5)
    p.calibration = calibrate_episodes([p.score_many(e) for e, f in zip(cal, yc, strict=True) if not f],
                                       "conformal-episode", alpha=0.1)  # fmt: skip
    p.save(tmp_path / "f")
    q = load_scorer(tmp_path / "f", model="m", layer=1, d=8)
    assert q.threshold == p.threshold and q.name == "failure-lstm/mean"
    np.testing.assert_allclose(q.score_many(cal[0]), p.score_many(cal[0]))
    state = q.new_state()
    online = [q.score_step(a, state) for a in cal[0]]
    np.testing.assert_allclose(online, p.score_many(cal[0]), rtol=1e-6)


def test_one_episode_of_a_label_trains_without_early_stopping():
    eps, _ = episodes(2, planted=True)
    p = FailurePredictor(epochs=20).fit_episodes(eps, [True, False])
    assert p.n_train["held_out"] == 0 and p.n_train["epochs"] == 20


def test_training_data_without_failures_is_refused():
    eps, _ = episodes(6, planted=True)
    with pytest.raises(ValueError, match="needs failed and successful episodes"):
        FailurePredictor().fit_episodes(eps, [False] * 6)
    with pytest.raises(ValueError, match="arch='gru'"):
        FailurePredictor(arch="gru")


def test_signal_scorers_read_the_agents_signals():
    s = make_scorer("signal", signal="chunk_change", model="tiny-vla", layer=2)
    assert isinstance(s, SignalScorer) and s.name == "chunk-change"
    s.fit([torch.zeros(3, 16)])
    assert s.d == 16 and s.score_signals({"chunk_change": 0.25, "action_entropy": 0.5}) == 0.25
    with pytest.raises(ValueError, match="no 'chunk_change' signal"):
        s.score_signals({"action_entropy": 0.5})
    with pytest.raises(ValueError, match="signal='loss'"):
        SignalScorer("loss")


def test_an_oriented_signal_learns_which_way_failures_go(tmp_path):
    """Failed episodes reach a *lower* entropy than successful ones: the oriented scorer learns
    the sign -1 from the labels (ranking them first), saves and reloads it; the plain one would
    rank them last. One-label data and an unoriented scorer are refused."""
    rng = np.random.default_rng(0)
    episodes = [[{"action_entropy": float(x)} for x in rng.uniform(0.3 if failed else 0.5, 0.9, 6)]
                for failed in [True] * 10 + [False] * 10]  # fmt: skip
    failed = [True] * 10 + [False] * 10
    s = make_scorer("signal", signal="action_entropy", oriented=True, model="tiny-vla", layer=2)
    s.fit([torch.zeros(3, 16)]).orient(episodes, failed)
    assert (
        s.name == "action-entropy-oriented" and s.sign == -1.0 and s.orientation["fit_auroc"] > 0.8
    )
    assert s.score_signals({"action_entropy": 0.4}) == -0.4
    s.calibration = calibrate_episodes([s.score_many(e) for e in episodes[10:]], "sigma")
    loaded = load_scorer(s.save(tmp_path / "oriented"))
    assert loaded.sign == -1.0 and loaded.name == "action-entropy-oriented"
    with pytest.raises(ValueError, match="needs failed and successful"):
        s.orient(episodes, [False] * 20)
    with pytest.raises(ValueError, match="not oriented"):
        SignalScorer("action_entropy").orient(episodes, failed)
