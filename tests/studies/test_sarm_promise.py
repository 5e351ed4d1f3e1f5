"""The calibration promise: a scorer whose realised clean false-alarm rate is above its promised
alpha (95% lower bound) is marked "not calibrated", and no report presents its detections or
breakage as results; a scorer within its promise is reported as before."""

from __future__ import annotations

import io

from rich.console import Console

from studies.sarm.summary import is_calibrated, promise_check, summarize, wilson
from studies.sarm.tables import print_summary


def rec(seed, cond, monitor, scores, veto=None, broken=False, onset=10):
    decisions = [{"step": 10 * i, "scores": {"s": x}} for i, x in enumerate(scores)]
    return {"seed": seed, "material": "fragile", "condition": cond, "monitor": monitor,
            "onset": None if cond == "clean" else onset, "steps": 10 * len(scores), "broken": broken,
            "first_veto_step": veto, "success": not broken, "decisions": decisions}  # fmt: skip


def records(clean_alarm: bool, n: int = 12) -> list[dict]:
    """n clean seeds (alarming at step 10 with the monitor on when `clean_alarm`) and an attack
    that the monitor stops on every seed."""
    out = []
    for seed in range(n):
        clean = [0.1, 5.0 if clean_alarm else 0.2]
        out += [rec(seed, "clean", None, clean), rec(seed, "clean", "s", clean, veto=10 if clean_alarm else None),
                rec(seed, "atk", None, [0.1, 5.0], broken=True), rec(seed, "atk", "s", [0.1, 5.0], veto=10)]  # fmt: skip
    return out


CONFORMAL = {"s": {"conformal-episode": {"threshold": 1.0, "alpha": 0.1, "unit": "episode"},
                   "sigma": {"threshold": 3.0, "alpha": None, "unit": "decision"}}}  # fmt: skip


def test_promise_check_compares_the_lower_bound_with_alpha():
    assert promise_check({"fpr_episode": wilson(2, 8), "fpr_decision": wilson(2, 80)}, 0.1, "episode")[
        "calibrated"] is True  # 2/8: Wilson lower bound 0.07  # fmt: skip
    # the planner figure, 3 of 8 clean episodes stopped: lower bound 0.14 > 0.1
    assert promise_check({"fpr_episode": wilson(3, 8), "fpr_decision": wilson(3, 80)}, 0.1, "episode")[
        "calibrated"] is False  # fmt: skip
    row = {"fpr_episode": wilson(6, 6), "fpr_decision": wilson(9, 80)}
    checked = promise_check(row, 0.1, "episode")
    assert checked["calibrated"] is False and checked["verdict"] == "not calibrated"
    assert (
        promise_check(row, 0.1, "decision")["calibrated"] is True
    )  # 9/80 per decision is within 0.1
    assert promise_check({"fpr_episode": wilson(0, 0), "fpr_decision": wilson(0, 0)}, 0.1, "episode")[
        "calibrated"] is None  # fmt: skip


def test_a_scorer_that_stops_clean_robots_is_not_calibrated_and_has_no_results():
    summ = summarize(records(clean_alarm=True), {"s": 1.0}, n_boot=20, calibrations=CONFORMAL)
    promise = summ["clean"]["s"]["promise"]
    assert (promise["alpha"], promise["unit"], promise["calibrated"]) == (0.1, "episode", False)
    assert promise["realised"]["k"] == 12 and not is_calibrated(summ, "s")
    console = Console(file=io.StringIO(), width=250)
    print_summary({"summary": summ, "layer": 2, "config": {}}, console)
    text = console.file.getvalue()
    assert "NOT calibrated (α 0.1/episode)" in text
    atk_rows = [line for line in text.splitlines() if line.strip().startswith("│ atk")]
    assert atk_rows and all(
        "not calibrated" in line and "1.00 [" not in line.split("│")[3] for line in atk_rows
    )


def test_a_calibrated_scorer_keeps_its_figures_and_sigma_is_judged_on_the_run_alpha():
    summ = summarize(records(clean_alarm=False), {"s": 1.0}, n_boot=20, calibrations=CONFORMAL)
    assert summ["clean"]["s"]["promise"]["calibrated"] is True and is_calibrated(summ, "s")
    sigma = {"s": {"sigma": {"threshold": 1.0, "alpha": None, "unit": "decision"}}}
    summ = summarize(
        records(clean_alarm=True), {"s": 1.0}, n_boot=20, calibrations=sigma, alpha=0.2
    )
    assert (summ["clean"]["s"]["promise"]["alpha"], summ["clean"]["s"]["promise"]["unit"]) == (
        0.2,
        "episode",
    )
    assert not is_calibrated(summ, "s")


def test_the_demo_page_and_markdown_withhold_an_uncalibrated_scorers_results(tmp_path):
    from studies.demo.report_html_sarm import sarm_findings, sarm_section
    from studies.demo.report_md import sarm_markdown

    summ = summarize(records(clean_alarm=True), {"s": 1.0}, n_boot=20, calibrations=CONFORMAL)
    html = sarm_section(summ, ["atk"], tmp_path)
    assert "NOT calibrated" in html and html.count("not calibrated") >= 3
    findings = " ".join(sarm_findings(summ, ["atk"]))
    assert "Not calibrated" in findings and "Detected (AUC" not in findings
    md = sarm_markdown({"summary": summ, "perturbations": {"atk": "atk"}})
    atk = [line for line in md.splitlines() if line.startswith("| atk | s |")]
    assert atk and "not calibrated" in atk[0]
