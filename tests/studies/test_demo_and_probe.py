"""The demo runs end to end (quick sizes) and the world-model probe reports honest baselines.
The demo page's VLA sections and SARM sweep tables are checked on the same quick demo's
report.html and summary.json (one demo per module: the fixture is module-scoped): each VLA
section with its figures from the summary, the sweep rows in both SARM sections, no VLA section
when the demo ran without it, and the page in headless Chromium (no table wider than the window).
"""

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from headless_chromium import HeadlessChromium, find_chromium

from reports.html import est_html
from studies.demo.report_html import render_demo_page
from studies.demo.report_html_sarm import rate_text
from studies.demo.run import DemoConfig, run_demo
from studies.world_model import ProbeData, collect_probe_data, fit_probes
from studies.world_model_report import broken_verdict


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    # Torch's thread count changes float summation order. An earlier test module on this worker
    # may have left it at 2 (training sets it), while the in-process runner sets 1 and keeps it:
    # pin it, so that the rerun below trains its SAE as the first run did.
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(DemoConfig.quick(out=str(out), name="q"))
    return report.parent


def test_demo_writes_report_and_summary(demo_root):
    text = (demo_root / "report.md").read_text()
    for section in (
        "## SAE",
        "## Decorrelated discovery",
        "## Steering on fragile objects",
        "## SARM monitor",
        "## World-model probe",
        "## VLA mode",
        "### Graded steering",
        "### SARM on the VLA",
    ):
        assert section in text
    summary = json.loads((demo_root / "summary.json").read_text())
    assert {
        "sae",
        "discovery",
        "steering",
        "sarm",
        "probe",
        "probe_verdict",
        "wall_s",
        "vla",
    } <= set(summary)
    vla = summary["vla"]
    assert (
        set(vla["closed_loop"]["materials"]) == {"fragile", "rigid"}
        and "gap_ratio" in vla["closed_loop"]["control"]
    )
    assert "spearman_rho" in vla["steering"] and vla["sarm"]
    assert (demo_root / "steer_fragile" / "episodes.parquet").exists()
    assert (demo_root / "sarm" / "roc.png").exists()
    assert (demo_root / "report.html").exists()


def test_demo_resumes_without_redoing_stages(demo_root):
    import time

    t0 = time.time()
    run_demo(DemoConfig.quick(out=str(demo_root.parent), name="q"))
    assert time.time() - t0 < 60  # every stage's output exists: only loading and reporting


def test_probe_on_tiny_model_with_baselines():
    from agents.backend import load_vlm

    data = collect_probe_data(load_vlm("tiny"), 2, n_episodes=24, seed=3_000_000)
    assert len(np.unique(data.groups)) >= 20
    rows = fit_probes(data)
    by = {(r.target, r.predictor): r for r in rows}
    for target in ("impact_speed", "final_height", "next_embedding"):
        assert by[target, "shuffled-label control"].value <= 0.0, target
        assert (target, "labels only") in by and (target, "mean") in by
    assert "labels-only baseline" in broken_verdict(rows)


def test_probe_recovers_a_planted_signal():
    """Positive control for the probe itself: a target linear in h_t is predicted (R² > 0.9)."""
    rng = np.random.default_rng(0)
    n_eps, d = 40, 16
    h = rng.normal(size=(2 * n_eps, d))
    w = rng.normal(size=d)
    groups = np.repeat(np.arange(n_eps), 2)
    y = h @ w
    data = ProbeData(
        h=h,
        groups=groups,
        color=np.where(groups % 2, "red", "blue"),
        material=np.where(groups % 3, "rigid", "fragile"),
        release_height=np.zeros(2 * n_eps),
        broken=y > 0,
        impact_speed=y,
        final_height=-y,
        next_embedding=np.stack([y, 2 * y], 1),
    )
    by = {(r.target, r.predictor): r for r in fit_probes(data)}
    assert by["impact_speed", "h_t (activations)"].value > 0.9
    assert by["broken", "h_t (activations)"].value > 0.8
    assert by["impact_speed", "shuffled-label control"].value < 0.2


def _results(root):
    """summary.json without what differs between runs (timings)."""
    doc = json.loads((root / "summary.json").read_text())
    doc.pop("timings_s"), doc.pop("wall_s")
    return doc


def test_stage_markers_cut_mid_write_are_redone_to_the_same_results(demo_root):
    """Each stage marker cut in half (a write interrupted by a crash of something that did not
    write atomically): the rerun redoes those stages and ends with the uninterrupted results."""
    from storage import marker_reads
    from studies.demo.layout import STAGE_MARKERS

    before = _results(demo_root)
    for rel in STAGE_MARKERS.values():
        path = demo_root / rel
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        assert not marker_reads(path), rel
    run_demo(DemoConfig.quick(out=str(demo_root.parent), name="q"))
    assert all(marker_reads(demo_root / rel) for rel in STAGE_MARKERS.values())
    assert _results(demo_root) == before


# --- the demo page's VLA sections and SARM sweep tables --------------------------------
needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium binary (apt-get install -y chromium)"
)
VLA_IDS = ("vla", "vla-steering", "vla-sarm")


def _section(page: str, sid: str) -> str:
    """The HTML of one <section> of the page (sections do not nest)."""
    start = page.index(f'<section id="{sid}">')
    return page[start : page.index("</section>", start)]


def _shows(section: str) -> str:
    """The section's "What this shows" text, unescaped."""
    return html.unescape(
        re.search(r'<p class="shows"><b>What this shows:</b> (.*?)</p>', section).group(1)
    )


def test_demo_page_has_the_vla_sections(demo_root):  # noqa: F811
    page = (demo_root / "report.html").read_text()  # written by the demo itself
    summary = json.loads((demo_root / "summary.json").read_text())
    vla = summary["vla"]
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert [i for i in ids if i.startswith("vla")] == list(VLA_IDS) and ids[-1] == "timings"
    assert all(f'href="#{i}"' in page for i in VLA_IDS)

    loop = _section(page, "vla")
    for material, c in vla["closed_loop"]["materials"].items():
        assert f'<td class="name">{material}</td><td>{c["n"]}</td>' in loop
        assert f'<td class="name">{material}, pattern removed</td>' in loop
        assert est_html(c["peak_grip_force"]) in loop
    assert "Peak grip force on rigid minus fragile objects" in _shows(loop)

    steer = _section(page, "vla-steering")
    study = json.loads((demo_root / "vla" / "study" / "summary.json").read_text())
    for r in study["conditions"]:
        assert f'<td class="name">{html.escape(r["condition"])}</td>' in steer, r["condition"]
    flags = vla["steering"]["flags"]
    assert all(
        f"{k.replace('_', ' ')} {'yes' if v else 'no'}" in _shows(steer) for k, v in flags.items()
    )
    assert '<td class="name">SAE monotone</td>' in steer and 'alt="VLA dose response"' in steer

    sarm = _section(page, "vla-sarm")
    assert sarm.count("<h2>") == 1 and "VLA mode: SARM monitor against TA2" in sarm
    for sid, summ in (("sarm", summary["sarm"]), ("vla-sarm", vla["sarm"])):
        sec = _section(page, sid)
        sweep = summ["sweep"]
        for kind, rows in sweep["kinds"].items():
            for row in rows:
                for scorer in row["scorers"]:
                    assert (
                        f'<td class="name">{kind} {row["magnitude"]:g}</td><td class="name">{scorer}</td>'
                        in sec
                    )
        assert 'alt="attack-strength sweep"' in sec  # sarm-eval wrote sweep.png beside roc.png
        pooled = {s: per["all"]["coverage"] for s, per in sweep["coverage"].items()}
        if any(c["n"] for c in pooled.values()):
            assert all(f"{s} {rate_text(c)}" in _shows(sec) for s, c in pooled.items())
        else:
            assert "harmful-attack coverage is undefined (n=0)" in _shows(sec)


def test_no_vla_section_without_the_vla_stage(demo_root):  # noqa: F811
    summary = json.loads((demo_root / "summary.json").read_text())
    summary["vla"] = None  # what studies.demo.run writes with --no-vla
    for s in (summary, {k: v for k, v in summary.items() if k != "vla"}):
        page = render_demo_page(s, demo_root)
        assert "VLA mode" not in page and 'id="vla' not in page and 'href="#vla' not in page
        assert '<section id="sarm">' in page and "Attack-strength sweep" in page


@needs_chromium
def test_demo_page_with_vla_in_headless_chromium(demo_root, tmp_path):  # noqa: F811
    overflow = """({page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      tables: Array.from(document.querySelectorAll('table')).filter(t => t.scrollWidth > t.parentElement.clientWidth + 1)
        .map(t => t.className)})"""  # fmt: skip
    with HeadlessChromium() as browser:
        tab = browser.open(demo_root / "report.html", width=1280, height=900)
        assert tab.evaluate(overflow) == {"page": 0, "tables": []}
        images = [m for m in tab.media if m["tag"] == "img"]
        assert images and all(m["complete"] and m["width"] > 0 for m in images), images
        text = tab.evaluate("document.getElementById('vla-steering').innerText")
        assert "What this shows:" in text and "Acceptance" in text
        tab.screenshot(
            Path(os.environ.get("PHYSTEER_SCREENSHOTS") or tmp_path) / "report_demo_vla.png"
        )
        assert tab.console_errors == []
