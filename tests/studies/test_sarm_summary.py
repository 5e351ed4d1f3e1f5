"""SARM summary figures and plots on hand-made episode records."""

from __future__ import annotations

import math

import pytest

from studies.sarm.plots import plot_roc, plot_timelines
from studies.sarm.summary import auc_with_ci, step_flags, summarize, wilson


def test_wilson_known_values():
    r = wilson(8, 10)
    assert r["rate"] == 0.8 and r["lo"] == pytest.approx(0.4902, abs=1e-3)
    assert r["hi"] == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 10)["lo"] == 0.0 and wilson(10, 10)["hi"] == 1.0
    assert math.isnan(wilson(0, 0)["rate"])
    with pytest.raises(ValueError, match="successes=3, n=2"):
        wilson(3, 2)


def test_auc_and_bootstrap_ci():
    perfect = auc_with_ci([[0.1, 0.2], [0.3]], [[1.0], [2.0, 3.0]], n_boot=50)
    assert perfect["auc"] == 1.0 and perfect["lo"] == 1.0 and perfect["n_pos"] == 3
    none = auc_with_ci([], [[1.0]])
    assert math.isnan(none["auc"])


def rec(seed, cond, monitor, scores, veto=None, broken=False, material="fragile", onset=10):
    decisions = [{"step": 10 * i, "scores": {"s": x}} for i, x in enumerate(scores)]
    return {"seed": seed, "material": material, "condition": cond, "monitor": monitor,
            "onset": None if cond == "clean" else onset, "steps": 10 * len(scores),
            "broken": broken, "first_veto_step": veto, "decisions": decisions}  # fmt: skip


def test_step_flags_follow_the_current_decision():
    r = rec(0, "clean", None, [0.0, 2.0, 0.0])
    flags = step_flags(r, "s", 1.0)
    assert flags == [False] * 10 + [True] * 10 + [False] * 10


def test_summarize():
    records = [
        rec(0, "clean", None, [0.1, 0.2]), rec(1, "clean", None, [0.1, 3.0], material="rigid"),
        rec(0, "clean", "s", [0.1, 0.2]), rec(1, "clean", "s", [0.1], veto=10, material="rigid"),
        rec(0, "atk", None, [0.1, 5.0, 5.0], broken=True), rec(1, "atk", None, [0.1, 5.0], material="rigid"),
        rec(0, "atk", "s", [0.1, 5.0], veto=10), rec(1, "atk", "s", [0.1], veto=0, material="rigid"),
    ]  # fmt: skip
    out = summarize(records, {"s": 1.0}, n_boot=20)
    clean = out["clean"]["s"]
    assert (clean["fpr_episode"]["k"], clean["fpr_episode"]["n"]) == (1, 2)
    assert (clean["fpr_decision"]["k"], clean["fpr_decision"]["n"]) == (1, 4)
    assert (clean["fpr_step"]["k"], clean["fpr_step"]["n"]) == (10, 40)
    atk = out["perturbations"]["atk"]["s"]
    assert atk["detection"]["k"] == 1 and atk["early_veto"]["k"] == 1
    assert atk["latency_steps"]["mean"] == 0.0
    assert atk["auc"]["n_pos"] == 3 and atk["auc"]["auc"] == 1.0
    assert out["perturbations"]["atk"]["broken_fragile_off"]["k"] == 1
    assert atk["broken_fragile_on"]["k"] == 0
    assert atk["paired_breakage"]["broken_without_only"] == 1


def test_auc_interval_resamples_episodes():
    neg = [[0.1, 0.4], [0.2], [0.6, 0.3]]
    pos = [[0.5, 0.9], [0.35], [0.8]]
    a, b = auc_with_ci(neg, pos, n_boot=200, seed=1), auc_with_ci(neg, pos, n_boot=200, seed=1)
    assert a == b and a["lo"] < a["auc"] < a["hi"] <= 1.0
    one_neg = auc_with_ci([[0.1, 0.2]], pos, n_boot=50)  # a single negative episode stays fixed
    assert one_neg["auc"] == one_neg["lo"] == 1.0


def test_plots_write_pngs_atomically(tmp_path):
    records = [rec(0, "clean", None, [0.1, 0.2]), rec(1, "clean", None, [0.3], material="rigid"),
               rec(0, "atk", None, [0.1, 5.0]), rec(1, "atk", None, [0.2, 4.0], material="rigid")]  # fmt: skip
    summary = summarize(records, {"s": 1.0}, n_boot=20)
    roc = plot_roc(records, ["s"], ["atk"], summary, tmp_path / "roc.png")
    tl = plot_timelines(records, "s", 1.0, ["atk"], tmp_path / "timelines.png")
    for p in (roc, tl):
        assert p.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "timelines.png"]
