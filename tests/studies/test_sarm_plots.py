"""The SARM ROC figure keeps its whole title inside the figure, above the panels, even with a
single (narrow) panel."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from studies.sarm.plots import roc_figure
from studies.sarm.summary import summarize

TITLE = "per-decision ROC: clean vs perturbed (after onset), AUC in brackets"


def rec(seed, cond, scores, material="fragile"):
    decisions = [{"step": 10 * i, "scores": {"s": x}} for i, x in enumerate(scores)]
    return {"seed": seed, "material": material, "condition": cond, "monitor": None,
            "onset": None if cond == "clean" else 10, "steps": 10 * len(scores), "broken": False,
            "first_veto_step": None, "decisions": decisions}  # fmt: skip


@pytest.mark.parametrize("perturbations", [["atk"], ["atk", "b", "c", "d", "e"]])
def test_roc_title_is_whole_and_inside(perturbations):
    records = [rec(0, "clean", [0.1, 0.2]), rec(1, "clean", [0.3], "rigid")]
    records += [rec(s, p, [0.1, 5.0 + s]) for p in perturbations for s in (0, 1)]
    fig = roc_figure(records, ["s"], perturbations, summarize(records, {"s": 1.0}, n_boot=20))
    try:
        renderer = fig.canvas.get_renderer()
        title = next(t for t in fig.findobj(Text) if t.get_text().startswith("per-decision"))
        assert title.get_text().split() == TITLE.split()  # wrapped, no word lost
        box, frame = title.get_window_extent(renderer), fig.bbox
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1, (box, frame)
        assert all(
            box.y0 >= ax.title.get_window_extent(renderer).y1 - 1
            for ax in fig.axes
            if ax.get_title()
        )
    finally:
        plt.close(fig)
