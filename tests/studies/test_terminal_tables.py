"""Terminal tables that fit: at 80 columns (a plain terminal, or output to a file or pipe) the
steering and SARM tables show their key columns with every number whole; wide, the full table.
Tables list the baseline first and the conditions in the order given."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from reports.steering import compare_conditions, specificity, steering_table
from studies.sarm.eval import print_summary
from studies.sarm.summary import summarize

# Given order; the names sort differently (a run's episodes.parquet is sorted by name).
CONDITIONS = ["unsteered", "sae:fragility:-0.25", "dom:-2", "random:-1", "neuron-random:5@10"]


def _episodes():
    """Hand-made episodes with effects of every size: breakage 0% -> 100%, tiny P(fragile) shifts."""
    rows = []
    for c in CONDITIONS:
        for s in range(12):
            broken = c == "sae:fragility:-0.25" or (c == "dom:-2" and s % 2 == 0)
            p = {"unsteered": 0.9, "sae:fragility:-0.25": 0.1, "dom:-2": 0.45}.get(
                c, 0.9
            ) + 0.0004 * (s % 3)
            rows.append(dict(condition=c, seed=s, success=not broken, broken=broken, peak_force=7.07 + 40 * broken + 0.01 * s,
                             steps=93 + s % 4 + (12 if broken else 0), p_fragile_mean=p))  # fmt: skip
    return sorted(rows, key=lambda r: (r["condition"], r["seed"]))


@pytest.fixture(scope="module")
def results():
    return compare_conditions(_episodes(), "unsteered", CONDITIONS)


@pytest.fixture(scope="module")
def sarm_doc():
    return _sarm_doc()


def _render(renderable, width):
    buf = io.StringIO()
    Console(width=width, file=buf).print(renderable)
    return buf.getvalue()


def _check_fits(text, width=80):
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= width, text
    assert "…" not in text and "..." not in text, text


def test_steering_table_at_80_columns_keeps_numbers_whole_and_the_order_given(results):
    assert [r["condition"] for r in results] == CONDITIONS
    text = _render(steering_table(results, "unsteered", Console(width=80, file=io.StringIO())), 80)
    _check_fits(text)
    for c in CONDITIONS:  # every condition's name, whole, in the order given
        assert c in text
    assert [text.index(c) for c in CONDITIONS] == sorted(text.index(c) for c in CONDITIONS)
    assert (
        "[+100%, +100%]" in text and "[-0.80, -0.80]" in text
    )  # Δ broken and Δ P(fragile) of the SAE steering
    assert "n=12" in text and "p=" in text and "peak force" not in text


def test_steering_table_is_full_where_it_fits(results):
    wide = Console(width=260, file=io.StringIO())
    text = _render(steering_table(results, "unsteered", wide), 260)
    _check_fits(text, 260)
    assert "peak force N" in text and "Δ steps" in text
    assert re.search(r"sae:fragility:-0\.25 +│ 12 │", text)


def test_specificity_tables_follow_the_order_given():
    spec = specificity(_episodes(), "unsteered", CONDITIONS)
    assert list(spec) == ["random:-1"]
    assert [r["condition"] for r in spec["random:-1"]] == ["sae:fragility:-0.25", "dom:-2"]
    text = _render(
        steering_table(spec["random:-1"], "random:-1", Console(width=80, file=io.StringIO())), 80
    )
    _check_fits(text)
    assert (
        "Steered vs random:-1: key columns" in text
    )  # printed as is (":-1:" is also an emoji code)


def _sarm_doc():
    """A SARM summary (studies.sarm.summary.summarize) of hand-made episode records: two
    detectable perturbations, one the scorers cannot see, long scorer and perturbation names."""
    scorers = ["sae-mean", "mahalanobis-mean", "pca-mean"]
    given = ["ta2:4@10", "occlusion:0.35@10", "noise:0.2@10"]
    records = []
    for seed in range(8):
        material = "fragile" if seed % 2 == 0 else "rigid"
        for cond, shift in [
            ("clean", 0.0),
            ("ta2:4@10", 3.0),
            ("occlusion:0.35@10", 2.0),
            ("noise:0.2@10", 0.0),
        ]:
            for monitor in [None, *scorers]:
                scores = [
                    {s: 0.1 * ((seed + i) % 5) + (shift if i >= 1 else 0.0) for s in scorers}
                    for i in range(6)
                ]
                veto = 10 if shift and monitor else (20 if monitor and seed == 3 else None)
                records.append({"seed": seed, "material": material, "condition": cond, "monitor": monitor,
                                "onset": None if cond == "clean" else 10, "steps": 60,
                                "broken": material == "fragile" and monitor is None and shift > 0,
                                "first_veto_step": veto,
                                "decisions": [{"step": 10 * i, "scores": sc} for i, sc in enumerate(scores)]})  # fmt: skip
    thresholds = {s: 0.45 for s in scorers}
    summary = summarize(records, thresholds, n_boot=50)
    return {"layer": 2, "d": 64, "perturbations": dict(zip(given, given, strict=True)), "thresholds": thresholds,
            "summary": summary}  # fmt: skip


def test_sarm_tables_at_80_columns(sarm_doc):
    doc = sarm_doc
    assert list(doc["summary"]["perturbations"]) == sorted(
        doc["perturbations"]
    )  # summarize sorts by name
    buf = io.StringIO()
    print_summary(doc, Console(width=80, file=buf))
    text = buf.getvalue()
    _check_fits(text)
    for name in [
        "sae-mean",
        "mahalanobis-mean",
        "pca-mean",
        "ta2:4@10",
        "occlusion:0.35@10",
        "noise:0.2@10",
    ]:
        assert name in text
    given = list(doc["perturbations"])
    assert [text.index(p) for p in given] == sorted(text.index(p) for p in given)  # the order given
    ta2 = doc["summary"]["perturbations"]["ta2:4@10"]["sae-mean"]
    assert f"[{ta2['detection']['lo']:.2f}, {ta2['detection']['hi']:.2f}]" in text and "n=8" in text
    fp = doc["summary"]["clean"]["mahalanobis-mean"]["fpr_episode"]
    assert f"{fp['rate']:.2f}" in text and f"[{fp['lo']:.2f}, {fp['hi']:.2f}]" in text


def test_sarm_tables_full_where_they_fit_and_piped_output_fits(sarm_doc, capsys, monkeypatch):
    doc = sarm_doc
    buf = io.StringIO()
    print_summary(doc, Console(width=250, file=buf))
    _check_fits(buf.getvalue(), 250)
    assert "latency (steps)" in buf.getvalue() and "broken off" in buf.getvalue()
    monkeypatch.delenv("COLUMNS", raising=False)  # as piped to a file: rich's default width, 80
    print_summary(doc)
    _check_fits(capsys.readouterr().out)


@pytest.mark.parametrize("width", [80, 100, 120])
def test_no_table_prints_wider_than_the_terminal(width, results, sarm_doc):
    _check_fits(
        _render(
            steering_table(results, "unsteered", Console(width=width, file=io.StringIO())), width
        ),
        width,
    )
    buf = io.StringIO()
    print_summary(sarm_doc, Console(width=width, file=buf))
    _check_fits(buf.getvalue(), width)
