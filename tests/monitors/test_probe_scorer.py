"""LinearProbeScorer: learns a planted direction, generalises to a held-out kind that shares it
and not to one that does not, reads the last token, saves and loads, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import D, FakeTap
from sklearn.metrics import roc_auc_score

from monitors.probe import LinearProbeScorer
from monitors.scorers import load_scorer, make_scorer

N_IMG = 8  # image rows per decision; one more row is the last token


def decision(seed: int, image_shift=None, last_shift=None) -> torch.Tensor:
    """(N_IMG + 1) × D rows: isotropic gaussian tokens (so that directions orthogonal in
    activation space are independent for the probe), optionally shifted (image rows and/or the
    last row) along planted directions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_IMG + 1, D, generator=g) + 1.0
    if image_shift is not None:
        x[:N_IMG] += image_shift
    if last_shift is not None:
        x[N_IMG] += last_shift
    return x


def unit(seed: int, orthogonal_to: torch.Tensor | None = None) -> torch.Tensor:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    if orthogonal_to is not None:
        v = v - (v @ orthogonal_to) * orthogonal_to
    return v / v.norm()


U = unit(7)  # the planted direction of the training attack
V = unit(8, orthogonal_to=U)  # a direction the training attack never used


def auc(probe: LinearProbeScorer, clean: list, attacked: list) -> float:
    s = np.r_[probe.score_many(clean), probe.score_many(attacked)]
    return float(roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(attacked))], s))


@pytest.fixture(scope="module")
def probe():
    clean = [decision(i) for i in range(200)]
    attacked = [decision(1000 + i, image_shift=1.0 * U) for i in range(200)]
    return LinearProbeScorer(n_image_tokens=N_IMG, model="toy", layer=1).fit(
        clean, attacked, kinds=["ta2"]
    )


def test_separates_the_planted_direction(probe):
    clean = [decision(5000 + i) for i in range(100)]
    attacked = [decision(6000 + i, image_shift=1.0 * U) for i in range(100)]
    assert auc(probe, clean, attacked) > 0.95
    assert probe.trained_on == ["ta2"] and probe.use_last
    assert probe.n_train == {"clean": 200, "perturbed": 200}


def test_generalises_to_a_held_out_kind_sharing_the_direction_only(probe):
    clean = [decision(5000 + i) for i in range(100)]
    # held-out kind sharing U: another magnitude, on top of noise in every direction
    g = torch.Generator().manual_seed(3)
    sharing = [
        decision(7000 + i, image_shift=1.5 * U + 0.3 * torch.randn(D, generator=g))
        for i in range(100)
    ]
    # held-out kind along V, orthogonal to U, shifted as far
    other = [decision(8000 + i, image_shift=1.5 * V) for i in range(100)]
    assert auc(probe, clean, sharing) > 0.9
    assert auc(probe, clean, other) < 0.7


def test_reads_the_last_token():
    """A perturbation of the last token only (where a prompt injection shows) is learnable from
    the last-token features, and invisible to a probe that pools the image rows alone."""
    clean = [decision(i) for i in range(150)]
    attacked = [decision(1000 + i, last_shift=3.5 * U) for i in range(150)]
    test_clean = [decision(5000 + i) for i in range(80)]
    test_attacked = [decision(6000 + i, last_shift=3.5 * U) for i in range(80)]
    with_last = LinearProbeScorer(n_image_tokens=N_IMG).fit(clean, attacked)
    image_only = LinearProbeScorer(n_image_tokens=N_IMG).fit(
        [c[:N_IMG] for c in clean], [a[:N_IMG] for a in attacked]
    )
    assert with_last.use_last and not image_only.use_last
    assert auc(with_last, test_clean, test_attacked) > 0.95
    assert (
        auc(image_only, [c[:N_IMG] for c in test_clean], [a[:N_IMG] for a in test_attacked]) < 0.7
    )
    with pytest.raises(ValueError, match="last token"):
        with_last.score(test_clean[0][:N_IMG])


def test_save_load_round_trip(probe, tmp_path):
    probe.calibrate(probe.score_many([decision(9000 + i) for i in range(50)]), method="sigma", k=2)
    probe.save(tmp_path / "probe")
    back = load_scorer(tmp_path / "probe", model="toy", layer=1, d=D)
    assert isinstance(back, LinearProbeScorer)
    xs = [decision(9500 + i, image_shift=0.3 * U) for i in range(20)]
    np.testing.assert_allclose(back.score_many(xs), probe.score_many(xs), rtol=1e-6)
    assert back.threshold == probe.threshold and back.trained_on == ["ta2"]
    assert back.use_last and back.n_image_tokens == N_IMG and back.n_train == probe.n_train
    with pytest.raises(ValueError, match="layer"):
        load_scorer(tmp_path / "probe", layer=2)


def test_the_monitor_gives_the_probe_every_row(probe):
    """With tokens="image" the monitor scores image rows only, but the probe reads the last
    token too: it gets every row (else its score would raise and the monitor fail closed)."""
    from envs import FrankaPickEnv
    from monitors.sarm import SARMMonitor

    probe.calibrate(probe.score_many([decision(9000 + i) for i in range(50)]), method="sigma", k=2)
    tap = FakeTap()
    mon = SARMMonitor(FrankaPickEnv(obs_mode="state", max_steps=5), tap, probe, tokens="image")
    mon.reset(seed=0)
    x = decision(42)
    tap.emit(x)
    tap.n_image_tokens = N_IMG
    info = mon.step(np.zeros(4, dtype=np.float32))[-1]["sarm"]
    assert info["score"] == pytest.approx(probe.score(x)), info["reason"]
    mon.close()


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"n_image_tokens": 0}, "n_image_tokens=0"),
        ({"C": -1.0}, "C=-1.0"),
        ({"max_iter": 0}, "max_iter=0"),
        ({"aggregate": "median"}, "aggregate='median'"),
    ],
)
def test_bad_settings(kwargs, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        LinearProbeScorer(**kwargs)


def test_bad_fit_input():
    clean = [decision(i) for i in range(4)]
    with pytest.raises(ValueError, match="supervised"):
        LinearProbeScorer().fit(clean)
    with pytest.raises(ValueError, match="perturbed: expected a non-empty list"):
        LinearProbeScorer().fit(clean, [])
    with pytest.raises(ValueError, match=r"perturbed\[0\] have d=3"):
        LinearProbeScorer().fit(clean, [torch.zeros(4, 3)])
    with pytest.raises(ValueError, match="NaN"):
        LinearProbeScorer().fit(clean, [torch.full((4, D), float("nan"))])
    with pytest.raises(ValueError, match="not fitted"):
        make_scorer("probe").score(clean[0])
