"""The demo runs end to end (quick sizes) and the world-model probe reports honest baselines."""

import json

import numpy as np
import pytest

from rollouts.demo import DemoConfig, run_demo
from rollouts.probe import ProbeData, broken_verdict, collect_probe_data, fit_probes


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(DemoConfig.quick(out=str(out), name="q"))
    return report.parent


def test_demo_writes_report_and_summary(demo_root):
    text = (demo_root / "report.md").read_text()
    for section in ("## SAE", "## Decorrelated discovery", "## Steering on fragile objects", "## SARM monitor",
                    "## World-model probe", "## VLA mode", "### Graded steering", "### SARM on the VLA"):
        assert section in text
    summary = json.loads((demo_root / "summary.json").read_text())
    assert {"sae", "discovery", "steering", "sarm", "probe", "probe_verdict", "wall_s", "vla"} <= set(summary)
    vla = summary["vla"]
    assert set(vla["closed_loop"]["materials"]) == {"fragile", "rigid"} and "gap_ratio" in vla["closed_loop"]["control"]
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
        h=h, groups=groups, color=np.where(groups % 2, "red", "blue"), material=np.where(groups % 3, "rigid", "fragile"),
        release_height=np.zeros(2 * n_eps), broken=y > 0, impact_speed=y, final_height=-y,
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
    from rollouts.demo import STAGE_MARKERS, marker_reads

    before = _results(demo_root)
    for rel in STAGE_MARKERS.values():
        path = demo_root / rel
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        assert not marker_reads(path), rel
    run_demo(DemoConfig.quick(out=str(demo_root.parent), name="q"))
    assert all(marker_reads(demo_root / rel) for rel in STAGE_MARKERS.values())
    assert _results(demo_root) == before
