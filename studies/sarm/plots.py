"""PNG figures of a SARM evaluation (matplotlib, Agg backend): ROC curves, score timelines and
the attack-strength sweep.

The ROC and timelines read the episode records described in studies.sarm.summary, the sweep
plot studies.sarm.sweep.summarize_sweep's figures; files are written atomically
(`storage.write_png`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from storage import write_png
from studies.sarm.summary import decision_scores, roc_points


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


def plot_sweep(sweep: dict[str, Any], path: str | Path) -> Path:
    """Write `sweep_figure` as a PNG at `path`; returns the path."""
    fig = sweep_figure(sweep)
    try:
        return write_png(path, fig, dpi=110)
    finally:
        _pyplot().close(fig)


def sweep_figure(sweep: dict[str, Any]) -> Any:
    """Detection and harm against attack magnitude, one panel per perturbation kind
    (studies.sarm.sweep.summarize_sweep's output): breakage without a monitor (black), and per
    scorer its detection rate (solid) and the breakage with its monitor enforcing (dashed), each
    with its 95% Wilson interval (series side by side, slightly dodged along x); returns the
    matplotlib Figure."""
    plt = _pyplot()
    kinds = sweep["kinds"]
    n = max(1, len(kinds))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(6.0, 3.4 * cols), 3.0 * rows + 0.9), squeeze=False
    )
    for ax, (kind, points) in zip(axes.flat, kinds.items(), strict=False):
        xs = [r["magnitude"] for r in points]
        log = len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 4
        scorers = list(points[0]["scorers"]) if points else []
        series = [
            ("broken, no monitor", [r["broken_off"] for r in points], {"color": "k", "marker": "s"})
        ]
        for i, s in enumerate(scorers):
            series += [(f"{s} detection", [r["scorers"][s]["detection"] for r in points], {"color": f"C{i}", "marker": "o"}),
                       (f"broken, {s} on", [r["scorers"][s]["broken_on"] for r in points],
                        {"color": f"C{i}", "marker": "x", "ls": "--"})]  # fmt: skip
        span = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
        for j, (label, rates, style) in enumerate(series):
            shift = j - (len(series) - 1) / 2
            dodged = [x * 1.025**shift if log else x + 0.008 * span * shift for x in xs]
            ys = [r["rate"] for r in rates]
            err = [
                [max(0.0, r["rate"] - r["lo"]) for r in rates],
                [max(0.0, r["hi"] - r["rate"]) for r in rates],
            ]
            ax.errorbar(dodged, ys, yerr=err, capsize=2, lw=1.2, ms=4, label=label, **style)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs], fontsize=7)
        ax.minorticks_off()
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{kind} (n={points[0]['n'] if points else 0} per point)", fontsize=9)
        ax.set_xlabel("magnitude", fontsize=8)
        ax.set_ylabel("rate", fontsize=8)
    for ax in list(axes.flat)[len(kinds) :]:
        ax.axis("off")
    _suptitle(fig, "attack-strength sweep: detection (solid), breakage without a monitor (black) and with each "
              "monitor enforcing (dashed); 95% Wilson CIs", 10)  # fmt: skip
    if kinds:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=7, frameon=False
        )
    fig.tight_layout(rect=(0, 0.9 / (3.0 * rows + 0.9), 1, 1))
    return fig
