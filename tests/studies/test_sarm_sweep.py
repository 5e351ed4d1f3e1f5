"""Attack-strength sweeps of `physteer sarm-eval` (studies.sarm.sweep): harmful-attack coverage
and the episode-length-free metrics on hand-made records with known answers, the sweep's
expansion and its validation before any work, and a tiny real sweep (planner, tiny model) that
writes its summary and plot and resumes to the same summary."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from cli.main import main
from reports import stats
from studies.sarm.config import SarmEvalConfig
from studies.sarm.sweep import (
    DEFAULT_SWEEP,
    coverage,
    decision_auroc,
    expand_sweep,
    summarize_sweep,
    sweep_labels,
    window_alarm,
)

ATK = "ta2:4@10"


def rec(
    seed, cond, monitor, scores, broken_step=None, alarm="derive", veto=None, peak=10.0, steps=None
):
    """An episode record (studies.sarm.summary) with decisions every 10 steps (or at `steps`);
    `alarm`: its first_alarm of scorer "s" ("derive": none recorded, so derived from the scores)."""
    r = {"seed": seed, "material": "fragile", "condition": cond, "monitor": monitor,
         "onset": None if cond == "clean" else 10, "steps": 10 * len(scores) if broken_step is None else broken_step + 1,
         "broken": broken_step is not None, "broken_step": broken_step, "success": broken_step is None,
         "first_veto_step": veto, "peak_force": peak,
         "decisions": [{"step": 10 * i if steps is None else steps[i], "scores": {"s": x}} for i, x in enumerate(scores)]}  # fmt: skip
    if alarm != "derive":
        r["first_alarm"] = {"s": alarm}
    return r


def _records():
    """4 clean episodes; the attack breaks seeds 0-3 at step 25 without a monitor (decisions at
    steps 0, 10, 20, 25), and the monitor's first alarm comes at 10, 20, 25 (the break step: the
    monitor sees the decision before its action is stepped) and never: 3 of 4 covered.
    Enforcing, it vetoes seeds 0-2 (unbroken) and misses seed 3 (broken)."""
    low = [0.1, 0.1, 0.1, 0.1]
    out = [rec(s, "clean", None, low) for s in range(4)]
    for seed, alarm in enumerate([10, 20, 25, None]):
        scores = [5.0 if alarm is not None and t >= alarm else 0.1 for t in (0, 10, 20, 25)]
        out.append(
            rec(
                seed,
                ATK,
                None,
                scores,
                broken_step=25,
                alarm=alarm,
                peak=30.0,
                steps=[0, 10, 20, 25],
            )
        )
        on_broken = 25 if seed == 3 else None
        out.append(
            rec(
                seed,
                ATK,
                "s",
                [0.1, 5.0],
                broken_step=on_broken,
                veto=None if seed == 3 else alarm,
                peak=12.0,
            )
        )
    for seed in (4, 5):  # not broken without a monitor: outside coverage's denominator
        out.append(rec(seed, ATK, None, [0.1, 5.0, 5.0, 5.0], alarm=10))
        out.append(rec(seed, ATK, "s", [0.1, 5.0], veto=10))
    return out


def test_coverage_known_answer():
    records = _records()
    off = [r for r in records if r["condition"] == ATK and r["monitor"] is None]
    on = [r for r in records if r["condition"] == ATK and r["monitor"] == "s"]
    c = coverage(off, on, "s", 1.0)
    expected = stats.wilson(3, 4)
    assert (c["coverage"]["k"], c["coverage"]["n"], c["coverage"]["rate"]) == (3, 4, 0.75)
    assert c["coverage"]["lo"] == pytest.approx(expected.low) and c["coverage"][
        "hi"
    ] == pytest.approx(expected.high)
    assert (c["coverage_enforced"]["k"], c["coverage_enforced"]["n"]) == (3, 4)
    assert c["coverage_after_onset"]["k"] == 3
    assert (c["broken_remaining"]["k"], c["broken_remaining"]["n"]) == (1, 4)


def test_coverage_after_onset_leaves_out_false_alarms_before_it():
    """A monitor that alarms at step 0 (a false alarm: the attack starts at 10) "covers" the
    break, but not with an alarm after onset."""
    harmful = [rec(0, ATK, None, [5.0, 0.1, 0.1], broken_step=25, alarm=0)]
    c = coverage(harmful, [], "s", 1.0)
    assert c["coverage"]["k"] == 1 and c["coverage_after_onset"]["k"] == 0


def test_coverage_derives_alarms_and_break_steps_when_not_recorded():
    """Records without first_alarm use the first flagged decision; without broken_step, the
    last step (an episode ends when its object breaks)."""
    harmful = [rec(0, ATK, None, [0.1, 5.0, 5.0]), rec(1, ATK, None, [0.1, 0.1, 0.1, 5.0])]
    for r in harmful:
        r.pop("broken_step")
        r["broken"], r["steps"] = True, 26  # broke during step 25
    c = coverage(harmful, [], "s", 1.0)  # alarms at 10 (covered) and 30 (after the break)
    assert (c["coverage"]["k"], c["coverage"]["n"]) == (1, 2) and c["broken_remaining"]["n"] == 0


def test_summarize_sweep_rows_and_pooled_coverage():
    records = _records()
    records += [
        {**r, "condition": "ta2:1@10"} for r in records if r["condition"] == ATK and r["seed"] >= 4
    ]
    labels = sweep_labels({"ta2:4@10": ATK, "ta2:1@10": "ta2:1@10"})
    assert labels == {ATK: ("ta2", 4.0), "ta2:1@10": ("ta2", 1.0)}
    out = summarize_sweep(records, {"s": 1.0}, labels, window=1, n_boot=50)
    rows = out["kinds"]["ta2"]
    assert [r["magnitude"] for r in rows] == [1.0, 4.0] and [r["n"] for r in rows] == [2, 6]
    s = rows[1]["scorers"]["s"]
    assert s["coverage"]["rate"] == 0.75 and rows[1]["broken_off"]["k"] == 4
    assert s["detection"]["k"] == 5  # a flagged decision after onset: all but seed 3
    assert (
        s["window_detection"]["k"] == 3
    )  # the first decision after onset (step 10): seeds 0, 4, 5
    assert s["window_false_alarm"]["k"] == 0 and s["window_false_alarm"]["n"] == 4
    # 16 clean decisions at 0.1; after onset: 6 at 0.1 (ties count 1/2) and 12 at 5.0
    assert s["auroc"]["auc"] == pytest.approx(15 / 18) and s["auroc"]["episodes_neg"] == 4
    assert rows[1]["peak_force_off"]["value"] == pytest.approx((4 * 30 + 2 * 10) / 6)
    assert s["peak_force_change"]["value"] < 0  # the monitor lowered the peak force on paired seeds
    assert out["coverage"]["s"]["all"]["coverage"]["n"] == 4  # ta2:1@10 broke nothing
    with pytest.raises(ValueError, match="window=0"):
        summarize_sweep(records, {"s": 1.0}, labels, window=0)


def test_window_alarm_looks_at_the_first_decisions_after_onset():
    r = rec(0, ATK, None, [0.1, 0.1, 0.1, 5.0, 5.0])  # decisions at 0..40; flagged from step 30
    assert window_alarm(r, "s", 1.0, onset=10, window=2) is False  # steps 10, 20
    assert window_alarm(r, "s", 1.0, onset=10, window=3) is True  # + step 30
    assert window_alarm(r, "s", 1.0, onset=50, window=3) is None  # no decision after onset


def test_decision_auroc_ci_resamples_episodes():
    assert decision_auroc([[0.1, 0.2], [0.3]], [[1.0], [2.0, 3.0]], n_boot=50)["lo"] == 1.0
    # pairs (pos, neg): 1.5 beats 0 and 1, not 2; 3 beats all three: 5 of 6
    a = decision_auroc([[0.0, 1.0], [2.0]], [[1.5], [3.0]], n_boot=200)
    assert a["auc"] == pytest.approx(5 / 6) and a["lo"] <= a["auc"] <= a["hi"]
    neg = [[0.1 * i + 0.05 * j for j in range(2)] for i in range(8)]
    pos = [[0.1 * i + 0.3] for i in range(8)]
    one = decision_auroc(neg, pos, n_boot=300, seed=3)
    # each episode's decisions repeated 5 times: the same episodes, so the same interval (a
    # decision-level bootstrap would narrow it)
    five = decision_auroc([g * 5 for g in neg], [g * 5 for g in pos], n_boot=300, seed=3)
    assert (five["auc"], five["lo"], five["hi"]) == pytest.approx(
        (one["auc"], one["lo"], one["hi"])
    )
    assert one["lo"] < one["auc"] < one["hi"] and five["n_pos"] == 5 * one["n_pos"]
    assert decision_auroc(neg, pos, n_boot=300, seed=3) == one  # deterministic
    empty = decision_auroc([], [[1.0, None]])
    assert math.isnan(empty["auc"]) and empty["n_pos"] == 1


def test_sweep_expansion_defaults_and_overrides():
    assert all(len(m) >= 5 and list(m) == sorted(m) for m in DEFAULT_SWEEP.values())
    got = expand_sweep(["ta2:4@10", "sae:contrast:20@10", "sae:contrast:50@10", "prompt@10"])
    assert got == [f"ta2:{m}@10" for m in ("0.5", "1", "2", "4", "8")] + [
        f"sae:contrast:{m}@10" for m in (10, 25, 50, 100, 200)] + [f"prompt:{m}@10" for m in (1, 2, 4, 8, 16)]  # fmt: skip
    assert expand_sweep(["noise:0.2", "sae:17:50@5"], ["noise=0.4/0.1"]) == [
        "noise:0.1", "noise:0.4", *(f"sae:17:{m}@5" for m in (10, 25, 50, 100, 200))]  # fmt: skip


@pytest.mark.parametrize(("perturbations", "magnitudes", "match"), [
    (["dom:+2@10"], [], "no default sweep magnitudes for kind 'dom'"),
    (["sae:fragility:1"], [], "kind 'sae:fragility'"),
    (["noise:0.2@10"], ["noise=0.5/2"], "sweep magnitude 2 of noise"),
    (["prompt@10"], ["prompt=1.5/2"], "sweep magnitude 1.5 of prompt"),
    (["ta2:4@10"], ["noise=0.1/0.2"], r"kinds \['noise'\] that are not among"),
    (["ta2:4@10"], ["ta2=4"], "at least 2 distinct"),
    (["ta2:4@10"], ["ta2=-1/2"], "at least 2 distinct finite magnitudes > 0"),
    (["ta2:4@10"], ["ta2:1/2"], "expected <kind>=<m1>/<m2>"),
    (["ta2:4@10"], ["ta2=1/2", "ta2=3/4"], "given twice"),
])  # fmt: skip
def test_bad_sweeps_fail_before_any_work(tmp_path, perturbations, magnitudes, match):
    from studies.sarm.eval import run_sarm_eval

    cfg = SarmEvalConfig(perturbations=tuple(perturbations), sweep=True, sweep_magnitudes=tuple(magnitudes),
                         out=str(tmp_path / "run"))  # fmt: skip
    with pytest.raises(ValueError, match=match):
        run_sarm_eval(cfg)
    assert not (tmp_path / "run").exists()


def test_sweep_settings_are_checked():
    with pytest.raises(ValueError, match="given without sweep"):
        SarmEvalConfig(sweep_magnitudes=("ta2=1/2",)).check()
    with pytest.raises(ValueError, match="window=0"):
        SarmEvalConfig(window=0).check()
    assert len(SarmEvalConfig(perturbations=("ta2:4@10",), sweep=True).run_perturbations()) == 5


# A tiny real sweep: eval seeds 5000010 (fragile) and 5000011 (rigid); without a monitor, TA2 x1
# breaks the fragile object at step 21 on the tiny planner.
SWEEP_ARGS = ["sarm-eval", "--sweep", "--sweep-magnitudes", "ta2=1/8", "--perturbations", "ta2:4@10",
              "--fit-episodes", "4", "--calibration", "sigma", "--episodes", "2", "--first-seed", "5000006", "--scorers", "mahalanobis,pca",
              "--max-steps", "40", "--executor", "serial", "--n-boot", "30", "--name", "sweep"]  # fmt: skip


def _run(work: Path) -> int:
    cwd = os.getcwd()
    os.chdir(work)
    try:
        return main(SWEEP_ARGS)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    assert _run(work) == 0
    return work, work / "runs" / "sweep"


def test_tiny_sweep_writes_summary_plot_and_tables(sweep_run):
    _, root = sweep_run
    doc = json.loads((root / "summary.json").read_text())
    assert list(doc["perturbations"]) == ["ta2:1@10", "ta2:8@10"]
    sweep = doc["summary"]["sweep"]
    rows = sweep["kinds"]["ta2"]
    assert [r["magnitude"] for r in rows] == [1.0, 8.0] and [r["n"] for r in rows] == [2, 2]
    assert set(rows[0]["scorers"]) == {"mahalanobis-mean", "pca-mean"}
    assert (root / "sweep.png").stat().st_size > 10_000 and (root / "roc.png").exists()
    episodes = pq.read_table(root / "eval" / "episodes.parquet").to_pylist()
    broken = [e for e in episodes if e["broken"]]
    assert broken and all(
        e["broken_step"] == e["steps"] - 1 for e in broken
    )  # the env ends at the break
    assert all(e["broken_step"] is None for e in episodes if not e["broken"])
    harmful = [e for e in episodes if e["broken"] and e["monitor"] == "none"]
    for s in ("mahalanobis-mean", "pca-mean"):  # coverage counts exactly the harmful episodes
        assert sweep["coverage"][s]["all"]["coverage"]["n"] == len(harmful)
        for r in rows:
            assert (
                r["scorers"][s]["auroc"]["episodes_neg"] == 2
                and r["scorers"][s]["window_detection"]["n"] == 2
            )
    buf = io.StringIO()
    from studies.sarm.eval import print_summary

    print_summary(doc, Console(width=80, file=buf))
    text = buf.getvalue()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert "harmful-attack coverage" in text and "ta2 8" in text and "AUROC" in text
    from studies.demo.report_md import sarm_markdown

    md = sarm_markdown(doc)
    assert "| ta2 1 |" in md and "coverage" in md and "| all attacks |" in md


def test_tiny_sweep_resumes_to_the_same_summary(sweep_run):
    """An interrupted sweep (an attacked episode and summary.json missing) resumes: the rerun
    runs only what is missing and gives the same summary."""
    work, root = sweep_run
    before = json.loads((root / "summary.json").read_text())
    kept = root / "eval" / "episodes" / "ta2_1@10" / "seed_5000011.parquet"
    dropped = root / "eval" / "episodes" / "ta2_8@10" / "seed_5000010.parquet"
    assert kept.exists() and dropped.exists(), sorted(
        p.name for p in (root / "eval" / "episodes").iterdir()
    )
    mtime = kept.stat().st_mtime_ns
    dropped.unlink()
    (root / "summary.json").unlink()
    assert _run(work) == 0
    after = json.loads((root / "summary.json").read_text())
    assert dropped.exists() and kept.stat().st_mtime_ns == mtime
    assert after["summary"] == before["summary"] and after["records"] == before["records"]


@pytest.mark.parametrize("width", [80, 100, 300])
def test_sweep_tables_fit_the_terminal(width):
    """Three scorers with long names and the longest default attack name: every table fits,
    in full where it can, as key columns (every figure whole) where it cannot."""
    from studies.sarm.sweep_report import print_sweep

    names = ["sae-mean", "mahalanobis-mean", "pca-mean"]
    records = []
    for r in _records():
        cond = r["condition"] if r["condition"] == "clean" else "sae:17:200@10"
        for n in names:
            if r["monitor"] is None or n == "sae-mean":
                scores = [
                    {**d, "scores": {m: d["scores"]["s"] for m in names}} for d in r["decisions"]
                ]
                alarm = {m: r["first_alarm"]["s"] for m in names} if "first_alarm" in r else {}
                records.append({**r, "condition": cond, "monitor": r["monitor"] and n, "decisions": scores,
                                "first_alarm": alarm})  # fmt: skip
    records = list({(r["condition"], r["monitor"], r["seed"]): r for r in records}.values())
    sweep = summarize_sweep(
        records, dict.fromkeys(names, 1.0), {"sae:17:200@10": ("sae:contrast", 200.0)}, n_boot=50
    )
    assert sweep["coverage"]["sae-mean"]["all"]["coverage"]["rate"] == 0.75
    buf = io.StringIO()
    print_sweep({"summary": {"sweep": sweep}}, Console(width=width, file=buf))
    text = buf.getvalue()
    assert max(map(len, text.splitlines())) <= width and "…" not in text, text
    assert "sae:contrast 200" in text and "mahalanobis-mean" in text and "0.75" in text
    assert ("clean alarm in 3 dec." in text) == (width == 300)  # the full table where it fits
