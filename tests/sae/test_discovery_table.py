"""The discovery table fits the terminal: at 80 columns (a plain terminal, a pipe) the key columns
with every number whole; wide, the full table with the color x material group means."""

import io

import pytest
from rich.console import Console
from sae_synthetic import design_2x2

from sae import discover
from sae.discovery_report import render_table


@pytest.fixture(scope="module")
def result():
    z, labels = design_2x2()
    shade = [
        "pale" if (i // 4) % 2 == 0 else "deep" for i in labels["image_id"]
    ]  # the env's third factor
    return discover(z, {**labels, "shade": shade}, threshold=0.5, n_boot=100, top=8)


def printed(result, width):
    console = Console(file=io.StringIO(), width=width, color_system=None)
    render_table(result, console, top=8)
    return console.file.getvalue()


def test_narrow_terminal_gets_whole_numbers(result):
    text = printed(result, 80)
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    for f in result.features[:8]:
        lo, hi = f.material_score_ci
        assert f"{f.material_score:+.2f}" in text and f"[{lo:+.2f}, {hi:+.2f}]" in text, f.feature
        assert f"{f.delta:+.3f}" in text
    assert "blue/fragile" not in text and "discovery.json" in text  # group means: in the files


def test_wide_terminal_gets_the_full_table(result):
    text = printed(result, 220)
    assert "…" not in text and "blue/fragile" in text and "red/rigid" in text
    assert "discovery.json" not in text
