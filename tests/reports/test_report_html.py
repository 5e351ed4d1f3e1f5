"""report.html for a real run (and the demo's page), checked in code and in headless Chromium.

A small real run on the embedded tiny model (unsteered, dom:+2 and its random control, 3
fragile seeds, one video seed) writes report.html beside report.md; Debian's `chromium`
(installed by the test set-up) opens it over the DevTools pipe: no console errors, every image
decodes and every video loads its metadata, the key numbers are in the DOM, no table is wider
than a 1280 px window, and a screenshot is written (to $PHYSTEER_SCREENSHOTS if set).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from headless_chromium import HeadlessChromium, find_chromium
from rich.console import Console

from reports.html import excludes_zero, num, render_run_page, steering_findings
from reports.steering import steering_report
from studies.demo.report_html import render_demo_page, write_demo_html

CONDITIONS = ["unsteered", "dom:+2", "random:+2"]
needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium binary (apt-get install -y chromium)"
)

# Every <video> of the page, once its metadata has loaded or failed (at most 10 s).
VIDEOS_JS = """Promise.all(Array.from(document.querySelectorAll('video')).map(v => new Promise(done => {
  const report = () => done({src: v.getAttribute('src'), ready: v.readyState, network: v.networkState,
                             error: v.error ? v.error.code : null, width: v.videoWidth, duration: v.duration});
  if (v.readyState >= 1 || v.error) return report();
  v.addEventListener('loadedmetadata', report); v.addEventListener('error', report); setTimeout(report, 10000);
})))"""
# Tables wider than their box, and the page wider than the window.
OVERFLOW_JS = """({page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  tables: Array.from(document.querySelectorAll('table')).filter(t => t.scrollWidth > t.parentElement.clientWidth + 1)
    .map(t => t.className)})"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A demo-like folder: root/store (dom vector from 32 renders) and root/steer_fragile (the run)."""
    from agents.backend import load_vlm
    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig
    from studies.collect import collect_activations

    root = tmp_path_factory.mktemp("report")
    collect_activations(load_vlm("tiny"), 2, root / "store", n_images=32, seed=600_000)
    cfg = ExperimentConfig(name="steer_fragile", out=str(root), conditions=CONDITIONS, seeds=[0, 1, 2],
                           material="fragile", vector=str(root / "store" / "dom_vector.safetensors"), videos=1,
                           executor="serial")  # fmt: skip
    run = run_experiment(cfg, progress=False)
    steering_report(run)  # what `physteer run` writes after the episodes
    return run


def test_report_html_beside_report_md(run):
    page = run / "report.html"
    assert page.is_file() and (run / "report.md").is_file()
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count("data:image/png;base64,") == 1  # dose_response.png, inline
    srcs = [
        s.split('"')[0] for s in text.split('<video controls muted preload="metadata" src="')[1:]
    ]
    assert len(srcs) == 2 + 3  # side-by-side vs each condition, and one episode per condition
    assert all((run / s).is_file() for s in srcs), srcs  # relative to the page's folder
    summary = json.loads((run / "summary.json").read_text())
    assert [
        r["condition"] for r in summary["conditions"]
    ] == CONDITIONS  # baseline first, then as given
    assert text.index(">dom:+2<") < text.index(">random:+2<")


def test_what_this_shows_is_written_from_the_data(run):
    summary = json.loads((run / "summary.json").read_text())
    (line,) = [s for s in steering_findings(summary) if s.startswith("Differs")] or [""]
    for r in summary["conditions"][1:]:
        moved = any(
            excludes_zero(r.get(f"{k}_diff"))
            for k in ("broken", "success", "p_fragile_mean", "steps", "peak_force")
        )
        assert (r["condition"] in line) == moved, (r["condition"], line)
    made_up = {"baseline": "unsteered", "specificity": {}, "conditions": [
        {"condition": "unsteered", "n": 4, "n_paired": 4},
        {"condition": "dom:+2", "n": 4, "n_paired": 4, "broken_diff": {"value": 0.5, "low": 0.25, "high": 0.75, "n": 4}},
        {"condition": "random:+2", "n": 4, "n_paired": 4, "broken_diff": {"value": 0.0, "low": 0.0, "high": 0.0, "n": 4}}]}  # fmt: skip
    assert steering_findings(made_up) == [
        "Differs from unsteered (95% CI of the paired difference excludes 0; n=4 pairs): dom:+2 (breakage +50% [+25%, +75%]).",
        "No outcome differs from unsteered for random:+2 (every paired CI includes 0)."]  # fmt: skip


def test_steering_report_prints_within_80_columns(run):
    buf = io.StringIO()
    steering_report(run, console=Console(width=80, file=buf))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text, text
    lines = text.splitlines()
    first = [
        next(i for i, line in enumerate(lines) if line.startswith(c + " ")) for c in CONDITIONS
    ]
    assert first == sorted(first)  # the baseline first, then the conditions as given


@needs_chromium
def test_run_report_in_headless_chromium(run, tmp_path):
    summary = json.loads((run / "summary.json").read_text())
    with HeadlessChromium() as browser:
        tab = browser.open(run / "report.html", width=1280, height=900)
        videos = tab.evaluate(VIDEOS_JS)
        assert len(videos) == 5 and all(
            v["ready"] >= 1 and v["error"] is None and v["width"] > 0 for v in videos
        ), videos
        images = [m for m in tab.media if m["tag"] == "img"]
        assert len(images) == 1 and all(m["complete"] and m["width"] > 0 for m in images), images
        assert tab.evaluate(OVERFLOW_JS) == {"page": 0, "tables": []}
        rows = tab.evaluate("Array.from(document.querySelectorAll('table.steering:not(.specificity) tbody tr'))"
                            ".map(r => Array.from(r.cells).map(c => c.innerText.replace(/\\s+/g, ' ')))")  # fmt: skip
        assert [r[0] for r in rows] == CONDITIONS
        for r, cells in zip(summary["conditions"], rows, strict=True):
            assert cells[1].startswith(str(r["n"]))
            p = r["p_fragile_mean"]
            assert cells[8] == f"{num(p['value'])} [{num(p['low'])}, {num(p['high'])}]"
            if r["condition"] != "unsteered":
                d = r["p_fragile_mean_diff"]
                assert cells[9].startswith(
                    f"{num(d['value'], signed=True)} [{num(d['low'], signed=True)}, "
                )
        text = tab.evaluate("document.body.innerText")
        assert "What this shows:" in text and "Specificity" in text
        shots = Path(os.environ.get("PHYSTEER_SCREENSHOTS") or tmp_path)
        shot = tab.screenshot(shots / "report_run.png")
        assert tab.console_errors == []
    import imageio.v3 as iio

    image = iio.imread(shot)
    assert image.shape[1] == 1280 and image.shape[0] > 900 and image.std() > 10


def _demo_summary(run, broken=True):
    """A demo summary.json dict around the real run: SAE, discovery, SARM and probe figures as
    studies.demo.run writes them (the SARM part, with its attack-strength sweep, from
    studies.sarm.summary and studies.sarm.sweep on hand-made records, as sarm-eval does);
    `broken`: whether TA2 breaks the odd seeds' objects without a monitor."""
    from studies.sarm.summary import summarize
    from studies.sarm.sweep import summarize_sweep, sweep_labels

    scorers = ["sae-mean", "mahalanobis-mean"]
    records = []
    for seed in range(6):
        for cond, shift in [("clean", 0.0), ("ta2:4@10", 3.0), ("noise:0.2@10", 0.0)]:
            for monitor in [None, *scorers]:
                records.append({"seed": seed, "material": "fragile" if seed % 2 else "rigid", "condition": cond,
                                "monitor": monitor, "onset": None if cond == "clean" else 10, "steps": 40,
                                "broken": bool(broken and shift and monitor is None and seed % 2), "first_veto_step": 10 if shift and monitor else None,
                                "decisions": [{"step": 10 * i, "scores": {s: 0.1 * ((seed + i) % 4) + shift * (i >= 1) for s in scorers}}
                                              for i in range(4)]})  # fmt: skip
    probe = [{"target": "broken", "predictor": p, "metric": "AUROC", "value": v, "low": v - 0.1, "high": v + 0.05,
              "n_episodes": 40, "train_value": 0.9, "notes": []} for p, v in [("h_t (activations)", 0.81), ("labels only", 0.55)]]  # fmt: skip
    steering = json.loads((run / "summary.json").read_text())
    steering["steering_norms"] = {"dom:+2": 2.0, "random:+2": 2.0}
    thresholds = {s: 0.45 for s in scorers}
    sarm = summarize(records, thresholds, n_boot=50)
    sarm["sweep"] = summarize_sweep(
        records, thresholds, sweep_labels({c: c for c in ("ta2:4@10", "noise:0.2@10")}), n_boot=50
    )
    return {"model": "tiny", "seeds": 3, "sae": {"fve": 0.998, "l0": 16.0, "dead_fraction": 0.02, "n": 5184, "n_dead": 3},
            "discovery": {"fragility": [22, 27], "color": [5], "threshold": 0.5, "unit": "image", "n_units": 64,
                          "top": [{"feature": 22, "kind": "fragility", "material_score": -5.49, "material_score_ci": [-7.53, -4.19],
                                   "color_score": 0.0, "color_score_ci": [0.0, 0.0]}]},
            "discovery_control": {"model": "tiny (random weights, seed 0)", "fve": 0.79, "fragility": [], "threshold": 0.5,
                                  "strongest_material_score": 0.08},
            "steering": {"fragile": steering}, "sarm": sarm,
            "sarm_perturbations": ["ta2:4@10", "noise:0.2@10"], "probe": probe,
            "probe_verdict": "Breakage after release is predicted from h_t with AUROC 0.81.", "timings_s": {"1. collect": 12.0},
            "wall_s": 60.0}  # fmt: skip


def test_demo_page_sections_and_findings(run):
    summary = _demo_summary(run)
    page = render_demo_page(summary, run.parent)
    for title in ("SAE", "Discovery and its random-weight control", "Steering on fragile objects (3 paired seeds)",
                  "SARM monitor under perturbations", "World-model probe", "Stage timings"):  # fmt: skip
        assert f">{title}" in page, title
    assert "Detected (AUC 95% CI above 0.5): ta2:4@10 by sae-mean (AUC 1.00 [1.00, 1.00])" in page
    assert "Detected by no scorer: noise:0.2@10." in page
    assert "h_t beats labels only (CIs apart) for broken" in page
    assert page.index(">ta2:4@10<") < page.index(">noise:0.2@10<")  # as given, not sorted
    assert "feature dashboard" not in page
    (run.parent / "dashboard").mkdir()
    (run.parent / "dashboard" / "dashboard.html").write_text("<html></html>")
    assert '<a href="dashboard/dashboard.html">feature dashboard</a>' in render_demo_page(
        summary, run.parent
    )


def test_demo_page_sweep_table_and_no_vla_section(run):
    """The harm-based sweep rows (attack, scorer, coverage) and their finding, computed from the
    numbers: on fragile seeds TA2 breaks the object without a monitor (3 of 6) and every scorer
    alarms at step 10, before the break; noise never breaks it. No "vla" key: no VLA section."""
    from studies.demo.report_html_sarm import rate_text

    summary = _demo_summary(run)
    sweep = summary["sarm"]["sweep"]
    page = render_demo_page(summary, run.parent)
    assert (
        "Attack-strength sweep: harm-based detection" in page and "harmful-attack coverage" in page
    )
    for attack in ("ta2 4", "noise 0.2"):
        for scorer in ("sae-mean", "mahalanobis-mean"):
            assert f'<td class="name">{attack}</td><td class="name">{scorer}</td>' in page, (
                attack,
                scorer,
            )
    for scorer, per in sweep["coverage"].items():
        assert (per["all"]["coverage"]["k"], per["all"]["coverage"]["n"]) == (3, 3)
        assert (
            f"{scorer} {rate_text(per['all']['coverage'])}, still broken with it enforcing" in page
        )
        assert per["noise"]["coverage"]["n"] == 0
    assert "coverage is undefined" not in page
    assert 'id="vla' not in page and "VLA mode" not in page and 'href="#vla' not in page
    summary["vla"] = None  # what studies.demo.run writes when the demo ran with --no-vla
    assert 'id="vla' not in render_demo_page(summary, run.parent)
    # The same episodes, none broken: coverage is undefined (the demo's quick runs often are).
    summary = _demo_summary(run, broken=False)
    assert summary["sarm"]["sweep"]["coverage"]["sae-mean"]["all"]["coverage"]["n"] == 0
    assert (
        "No attacked episode broke the object without a monitor: harmful-attack coverage is undefined (n=0)."
        in render_demo_page(summary, run.parent)
    )


@needs_chromium
def test_demo_page_in_headless_chromium(run, tmp_path):
    page = write_demo_html(run.parent, _demo_summary(run))
    with HeadlessChromium() as browser:
        tab = browser.open(page, width=1280, height=900)
        videos = tab.evaluate(VIDEOS_JS)
        assert len(videos) == 5 and all(
            v["ready"] >= 1 and v["src"].startswith("steer_fragile/videos/") for v in videos
        ), videos
        assert tab.evaluate(OVERFLOW_JS) == {"page": 0, "tables": []}
        text = tab.evaluate("document.body.innerText")
        assert "reconstructs 99.8% of the activations' variance" in text and "5184" in text
        tab.screenshot(Path(os.environ.get("PHYSTEER_SCREENSHOTS") or tmp_path) / "report_demo.png")
        assert tab.console_errors == []


def test_a_summary_that_is_not_one_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['baseline'\]"):
        render_run_page({"conditions": []}, tmp_path)
    with pytest.raises(ValueError, match="steering"):
        render_demo_page({"sae": {}}, tmp_path)
