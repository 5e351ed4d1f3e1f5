"""Decorrelated discovery: planted material/color features, pure noise, CIs, bad input, outputs."""

import json

import numpy as np
import pytest
from sae_synthetic import design_2x2

from sae import discover
from sae.discovery_report import build_table, save_plot, write_json


def test_planted_material_found_color_excluded():
    z, labels = design_2x2()
    res = discover(z, labels, threshold=0.5, n_boot=300, top=10, prefixes=(8, 16, 48))
    assert res.fragility == [3]
    assert 5 in res.color and 5 not in res.fragility
    assert 7 not in res.fragility  # red-and-fragile only: no effect within blue
    f3 = next(f for f in res.features if f.feature == 3)
    assert f3.kind == "fragility" and f3.prefix == 8
    assert f3.material_score_ci[0] > 0.5 and f3.delta == pytest.approx(1.0, abs=0.15)
    assert f3.delta_ci[0] < f3.delta < f3.delta_ci[1]
    assert set(f3.material_d) == {"blue", "red"} and min(f3.material_d.values()) >= 0.5
    assert res.unit == "image" and res.n_units == 160
    assert all(v == {"rows": 320, "units": 40} for v in res.cell_counts.values())


def test_pure_noise_finds_no_fragility_feature():
    z, labels = design_2x2(planted=False, seed=1)
    res = discover(z, labels, threshold=0.5, n_boot=200)
    assert res.fragility == [] and res.color == []
    assert max(abs(f.material_score) for f in res.features) < 0.5


def test_color_confound_is_not_fragility():
    # A feature that tracks color in a data set where color and material are *not* confounded
    # must not be called fragility even though its raw delta over all data is nonzero.
    z, labels = design_2x2(planted=False, seed=2)
    color = np.array(labels["color"])
    material = np.array(labels["material"])
    z[:, 0] += 2.0 * (color == "red") + 0.6 * (material == "fragile")
    res = discover(z, labels, threshold=0.5, n_boot=200)
    assert 0 in res.color and 0 not in res.fragility


def test_shade_factor():
    z, labels = design_2x2(planted=False, seed=3)
    img = np.array(labels["image_id"])
    labels["shade"] = np.where((img // 4) % 2 == 0, "pale", "dark").tolist()
    material = np.array(labels["material"])
    shade = np.array(labels["shade"])
    z[:, 1] += 1.0 * (material == "fragile")
    z[:, 2] += 1.5 * (shade == "pale")
    z[:, 4] += 1.5 * ((shade == "pale") & (material == "fragile"))  # material effect only when pale
    res = discover(z, labels, threshold=0.5, n_boot=200)
    assert res.fragility == [1]
    assert 2 in res.shade
    assert len(next(f for f in res.features if f.feature == 1).material_d) == 4  # color x shade


def test_image_bootstrap_wider_than_token_bootstrap():
    z, labels = design_2x2()
    by_image = discover(z, labels, n_boot=300, top=3)
    tokens = {k: v for k, v in labels.items() if k != "image_id"}
    by_token = discover(z, tokens, n_boot=300, top=3)
    width = lambda r: np.diff(next(f for f in r.features if f.feature == 3).delta_ci)[0]  # noqa: E731
    # Tokens of one image share image-level noise: resampling tokens understates uncertainty.
    assert width(by_image) > 1.5 * width(by_token)
    assert by_token.unit == "token" and any("image_id" in n for n in by_token.notes)
    agg = discover(z, labels, n_boot=100, aggregate="image")
    assert agg.fragility == [3] and agg.cell_counts["red/fragile"]["units"] == 40


def test_bad_labels_raise():
    z, labels = design_2x2(n_images=16)
    with pytest.raises(ValueError, match=r"material levels found \['glass', 'rigid'\]"):
        discover(
            z,
            {**labels, "material": ["glass" if m == "fragile" else m for m in labels["material"]]},
        )
    with pytest.raises(ValueError, match="color must have exactly 2 levels"):
        discover(z, {**labels, "color": (["red", "blue", "green", "red"] * len(z))[: len(z)]})
    with pytest.raises(ValueError, match="'color' and 'material'"):
        discover(z, {"material": labels["material"]})
    with pytest.raises(ValueError, match="threshold"):
        discover(z, labels, threshold=0)
    with pytest.raises(ValueError, match="has 5 rows"):
        discover(z, {**labels, "color": ["red"] * 5})


def test_outputs(tmp_path):
    z, labels = design_2x2()
    res = discover(z, labels, n_boot=100, top=5)
    write_json(res, tmp_path / "d.json")
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["fragility"] == [3] and data["cell_counts"]["blue/rigid"]["rows"] == 320
    assert save_plot(res, tmp_path / "d.png").stat().st_size > 1000
    table = build_table(res, top=5)
    assert table.row_count == 5 and "n per cell" in str(table.caption)
