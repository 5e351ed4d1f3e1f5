"""PNG figures of a SARM evaluation (matplotlib, Agg backend): ROC curves and score timelines.

Both read the episode records described in rollouts.sarm_summary; files are written
atomically (`storage.write_png`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rollouts.sarm_summary import decision_scores, roc_points
from storage import write_png


def _pyplot():  # noqa: ANN202 - the pyplot module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _suptitle(fig: Any, text: str, fontsize: float) -> None:
    """The figure's title, wrapped to its width (a one-panel figure is narrower than the line)."""
    chars = max(20, int(fig.get_figwidth() * 72 / (0.62 * fontsize)))  # a character ~0.6 em wide
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def plot_roc(
    records: Sequence[dict[str, Any]],
    scorers: Sequence[str],
    perturbations: Sequence[str],
    summary: dict[str, Any],
    path: str | Path,
) -> Path:
    """Write `roc_figure` as a PNG at `path`; returns the path."""
    fig = roc_figure(records, scorers, perturbations, summary)
    try:
        return write_png(path, fig, dpi=110)
    finally:
        _pyplot().close(fig)


def roc_figure(
    records: Sequence[dict[str, Any]],
    scorers: Sequence[str],
    perturbations: Sequence[str],
    summary: dict[str, Any],
) -> Any:
    """One panel per perturbation, one ROC curve per scorer (clean vs post-onset decisions);
    returns the matplotlib Figure."""
    plt = _pyplot()
    clean = [r for r in records if r["condition"] == "clean" and r["monitor"] is None]
    n = max(1, len(perturbations))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    for ax, cond in zip(axes.flat, perturbations, strict=False):
        off = [r for r in records if r["condition"] == cond and r["monitor"] is None]
        for s in scorers:
            neg = [x for r in clean for x in decision_scores(r, s)]
            pos = [x for r in off for x in decision_scores(r, s, after=r["onset"] or 0)]
            if not neg or not pos:
                continue
            fpr, tpr = roc_points(neg, pos)
            auc = summary["perturbations"][cond][s]["auc"]["auc"]
            ax.plot(fpr, tpr, label=f"{s} ({auc:.2f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set_title(cond, fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    _suptitle(fig, "per-decision ROC: clean vs perturbed (after onset), AUC in brackets", 10)
    fig.tight_layout()
    return fig


def plot_timelines(
    records: Sequence[dict[str, Any]],
    scorer: str,
    threshold: float,
    perturbations: Sequence[str],
    path: str | Path,
) -> Path:
    """Decision score vs step for clean (grey) and each perturbation's monitor-off episodes."""
    plt = _pyplot()
    n = len(perturbations) + 1
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False, sharey=True
    )
    for ax, cond in zip(axes.flat, ["clean", *perturbations], strict=False):
        eps = [r for r in records if r["condition"] == cond and r["monitor"] is None]
        for r in eps:
            pts = [
                (d["step"], d["scores"][scorer])
                for d in r["decisions"]
                if d["scores"].get(scorer) is not None
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                color = "C3" if r["material"] == "fragile" else "C0"
                ax.plot(xs, ys, marker=".", lw=0.8, color=color, alpha=0.7)
        ax.axhline(threshold, color="k", ls="--", lw=0.8)
        onsets = {r["onset"] for r in eps if r["onset"] is not None}
        for o in onsets:
            ax.axvline(o, color="0.5", ls=":", lw=0.8)
        ax.set_title(cond, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_yscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    _suptitle(
        fig,
        f"{scorer} score per decision (red fragile, blue rigid; dashed threshold, dotted onset)",
        9,
    )
    fig.tight_layout()
    try:
        return write_png(path, fig, dpi=110)
    finally:
        plt.close(fig)
