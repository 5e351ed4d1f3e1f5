"""The SAE feature dashboard on the embedded tiny model, checked in code and in headless Chromium.

A small real pipeline (32 balanced renders -> tap-layer store -> SAE -> discovery -> a 2-episode
run steering one discovered feature) feeds `build_dashboard`; the page is opened in Debian's
`chromium` (installed by the test set-up: `apt-get install -y chromium`) over the DevTools pipe:
no console errors, every image decodes, the key numbers are in the DOM, the index sorts, nothing
is fetched from the network, and a screenshot is written (to $PHYSTEER_SCREENSHOTS if set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from headless_chromium import HeadlessChromium, find_chromium

from cli.main import main
from reports.dashboard import FrameRenderer, build_dashboard, cell_overlap
from reports.dashboard_html import write_dashboard

SEED = 1_000_000
IMAGES = 32  # two seed blocks: every color x shade x material cell holds 4 images


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from agents.backend import load_vlm
    from agents.vlm_agent import default_tap_layer
    from reports.steering import steering_report
    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig
    from sae import TrainConfig, default_config, discover_store, train_sae
    from sae.discovery_report import write_json
    from studies.collect import collect_activations
    from studies.demo.run import DemoConfig

    root = tmp_path_factory.mktemp("dashboard")
    backend = load_vlm("tiny")
    store = collect_activations(
        backend, default_tap_layer(backend.n_layers), root / "store", IMAGES, seed=SEED
    )
    sae = train_sae(store, default_config(store.d), TrainConfig(lr=DemoConfig.sae_lr, steps=300, batch_size=512, seed=0),
                    progress=False).sae  # fmt: skip
    sae.save(root / "sae")
    discovery = discover_store(sae, store, n_boot=50)
    assert discovery.fragility, "the tiny model's SAE should carry a fragility feature"
    write_json(discovery, root / "discovery.json")
    steered = discovery.fragility[0]
    cfg = ExperimentConfig(name="steer", out=str(root / "runs"), conditions=["unsteered", f"sae:{steered}:6"],
                           seeds=[0], sae=str(root / "sae"), discovery=str(root / "discovery.json"))  # fmt: skip
    run = run_experiment(cfg, progress=False)
    steering_report(run)  # the run's summary.json holds the steering effects
    d = build_dashboard(
        root / "store", root / "sae", root / "discovery.json", run=run, max_panels=3, top_frames=3
    )
    page = write_dashboard(d, root / "out")
    return {"root": root, "dashboard": d, "page": page, "steered": steered, "discovery": discovery}


def test_token_grid_geometry():
    mask = np.zeros((384, 384), dtype=bool)
    mask[84:126, 126:168] = True  # exactly token (row 2, column 3): 3 x 3 patches of 14 px
    overlap = cell_overlap(mask, 9)
    assert overlap.shape == (9, 9) and overlap[2, 3] == 1.0 and overlap.sum() == 1.0


def test_rerender_equals_the_collected_frames():
    from rollouts.frames import COLLECT_RENDERER, render_labeled_frames

    # the store's first frames (same seeds, steps and renderer)
    images, labels = render_labeled_frames(4, seed=SEED, renderer=COLLECT_RENDERER)
    assert any(lab["step"] > 0 for lab in labels), "want a frame taken mid-episode too"
    renderer = FrameRenderer()
    try:
        for image, lab in zip(images, labels, strict=True):
            frame, mask, got = renderer.render(lab["seed"], lab["step"])
            assert np.array_equal(frame, image), lab
            assert (
                got == {k: lab[k] for k in got} and 200 < mask.sum() < 0.2 * mask.size
            )  # the object, seen
    finally:
        renderer.close()


def test_cards_hold_frames_cells_effects_and_steering(pipeline):
    d, disc, steered = pipeline["dashboard"], pipeline["discovery"], pipeline["steered"]
    assert d.n_images == IMAGES and d.grid == 9 and d.n_rows == IMAGES * 81
    assert [c.feature for c in d.cards] == disc.fragility[:3] + [f.feature for f in disc.features
                                                                  if f.feature not in disc.fragility][: 3 - len(disc.fragility[:3])]  # fmt: skip
    for card in d.cards:
        assert len(card.cells) == 8 and sum(len(v) for v in card.cells.values()) == IMAGES
        assert 1 <= len(card.frames) <= 3
        assert all(fr.png is not None and fr.png[:4] == b"\x89PNG" for fr in card.frames)
        assert 0.0 <= card.object_share <= 1.0 and 0.0 < card.object_area < 0.5
        assert card.verdict in (
            "on the object",
            "partly on the object",
            "spread over the frame",
            "off the object",
        )
        maxima = [fr.max_act for fr in card.frames]
        assert maxima == sorted(maxima, reverse=True) and maxima[0] == pytest.approx(
            card.frames[0].grid.max()
        )
    card = next(c for c in d.cards if c.feature == steered)
    (entry,) = [s for s in card.steering if s["condition"] == f"sae:{steered}:6"]
    summary = json.loads((pipeline["root"] / "runs" / "steer" / "summary.json").read_text())
    row = next(r for r in summary["conditions"] if r["condition"] == entry["condition"])
    assert entry["n_features"] == 1 and entry["p_fragile_mean_diff"] == row["p_fragile_mean_diff"]


@pytest.mark.skipif(
    find_chromium() is None, reason="no chromium binary (apt-get install -y chromium)"
)
def test_page_in_headless_chromium(pipeline, tmp_path):
    d, page = pipeline["dashboard"], pipeline["page"]
    with HeadlessChromium() as browser:
        tab = browser.open(page, width=1280, height=900)
        assert tab.console_errors == []
        media = tab.media
        assert len(media) == sum(len(c.frames) for c in d.cards)
        assert all(m["complete"] and m["width"] == m["height"] == 176 for m in media), media
        # Nothing leaves the page: every resource is the file itself or inline data.
        urls = tab.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith(("data:", "file:")) for u in urls), urls
        text = tab.evaluate("document.body.innerText")
        for card in d.cards:
            shown = tab.evaluate(f"document.querySelector('#f{card.feature} .d').textContent")
            assert shown == f"{card.effect['material_score']:+.2f}"
            assert (
                tab.evaluate(f"document.querySelector('#f{card.feature} .share').textContent")
                == f"{100 * card.object_share:.0f}%"
            )
        assert "Do the fragility features look at the object's pattern?" in text
        assert f"sae:{pipeline['steered']}:6" in text
        shots = Path(os.environ.get("PHYSTEER_SCREENSHOTS") or tmp_path)
        shot = tab.screenshot(shots / "dashboard.png")
        rows = tab.evaluate("document.querySelectorAll('#index tbody tr').length")
        assert rows == len(d.discovery["features"])
        # Sorting: the |d| column, descending then ascending.
        col = tab.evaluate(
            "Array.from(document.querySelectorAll('#index th')).findIndex(th => th.textContent === '|d|')"
        )
        values = f"Array.from(document.querySelectorAll('#index tbody tr')).map(r => parseFloat(r.cells[{col}].dataset.v))"
        tab.evaluate(f"document.querySelectorAll('#index th')[{col}].click()")
        down = tab.evaluate(values)
        assert down == sorted(down, reverse=True)
        tab.evaluate(f"document.querySelectorAll('#index th')[{col}].click()")
        assert tab.evaluate(values) == sorted(down)
        assert tab.console_errors == []
    import imageio.v3 as iio

    image = iio.imread(shot)
    assert image.shape[1] == 1280 and image.shape[0] > 900 and image.std() > 10


def test_cli_runs_discovery_itself_and_rejects_bad_input(pipeline, tmp_path, capsys):
    root = pipeline["root"]
    out = tmp_path / "dash"
    assert main(["dashboard", "--store", str(root / "store"), "--sae", str(root / "sae"), "--out", str(out),
                 "--features", "1", "--top-frames", "1", "--n-boot", "20"]) == 0  # fmt: skip
    html = (out / "dashboard.html").read_text()
    assert "computed here" in html and "No steering run given" in html
    assert "Dashboard:" in capsys.readouterr().out
    assert main(["dashboard", "--store", str(tmp_path / "none"), "--sae", str(root / "sae")]) == 2
    assert "no activation store" in capsys.readouterr().err
    bad = json.loads((root / "discovery.json").read_text())
    bad["features"][0]["feature"] = 10**6
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="names latents \\[1000000\\]"):
        build_dashboard(root / "store", root / "sae", tmp_path / "bad.json")
    blind = build_dashboard(root / "store", root / "sae", root / "discovery.json", max_panels=1, top_frames=1,
                            render_frames=False)  # fmt: skip
    (card,) = blind.cards
    assert (
        card.verdict == "not checked"
        and card.frames[0].note == "frame not re-rendered"
        and card.frames[0].png
    )
    from reports.dashboard_html import render_html

    assert "Object overlap: not checked" in render_html(blind)
    with pytest.raises(ValueError, match="max_panels"):
        build_dashboard(root / "store", root / "sae", root / "discovery.json", max_panels=0)
