"""Outputs of decorrelated discovery: a rich table, a JSON file and a PNG of group means."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

import storage
from sae.discovery import DiscoveryResult, FeatureEffect


def _fmt_ci(ci: tuple[float, float], spec: str = ".2f") -> str:
    return "" if any(math.isnan(v) for v in ci) else f"[{ci[0]:+{spec}}, {ci[1]:+{spec}}]"


def group_means(result: DiscoveryResult, f: FeatureEffect) -> dict[str, float]:
    """2x2 color/material means of a feature, averaging shade levels with equal weight."""
    shades = result.levels.get("shade", [""]) if len(result.levels.get("shade", [])) > 1 else [""]
    out = {}
    for c in result.levels["color"]:
        for m in result.levels["material"]:
            keys = ["/".join(p for p in (c, s, m) if p) for s in shades]
            out[f"{c}/{m}"] = sum(f.cell_means[k] for k in keys) / len(keys)
    return out


_STYLE = {"fragility": "bold green", "color": "red", "shade": "yellow", "none": "dim"}


def _title(result: DiscoveryResult) -> str:
    return (f"Decorrelated discovery: {len(result.fragility)} fragility, {len(result.color)} color, "
            f"{len(result.shade)} shade features (|d| >= {result.threshold}, {result.ci:.0%} CI, "
            f"{result.n_boot} bootstrap resamples of {result.unit}s)")  # fmt: skip


def _caption(result: DiscoveryResult) -> str:
    counts = ", ".join(
        f"{k} {v['rows']} ({v['units']} {result.unit}s)" for k, v in result.cell_counts.items()
    )
    return f"n per cell: {counts}" + "".join(f"\n{n}" for n in result.notes)


def table_fits(table: Table, console: Console) -> bool:
    """Whether `table` prints within `console.width` without wrapping or cutting any cell."""
    unbounded = console.options.update(width=100_000, max_width=100_000)
    return Measurement.get(console, unbounded, table).maximum <= console.width


def build_table(
    result: DiscoveryResult, top: int | None = None, console: Console | None = None
) -> Table:
    """A rich Table of the ranked features: effect sizes with CIs, raw deltas, 2x2 group means.

    With `console`, the full table where it fits `console.width`, else `compact_table` (no cell
    cut: 80 columns, a plain terminal or a pipe, cannot hold the group means)."""
    table = _full_table(result, top)
    if console is None or table_fits(table, console):
        return table
    return compact_table(result, top)


def compact_table(result: DiscoveryResult, top: int | None = None) -> Table:
    """The ranked features' key columns, each effect size over its CI: fits 80 columns; the
    color x material group means are left to the JSON and the PNG."""
    caption = _caption(result) + "\ngroup means per color x material: discovery.json, discovery.png"
    table = Table(title=_title(result), caption=caption, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  pad_edge=False, show_edge=False, show_lines=True)  # fmt: skip
    for col in ("#", "feature", "prefix", "kind", "material d", "delta", "color d"):
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for rank, f in enumerate(result.features[:top] if top else result.features, 1):
        table.add_row(
            str(rank), str(f.feature), str(f.prefix or ""), f.kind,
            f"{f.material_score:+.2f}\n{_fmt_ci(f.material_score_ci)}",
            f"{f.delta:+.3f}\n{_fmt_ci(f.delta_ci, '.3f')}", f"{f.color_score:+.2f}", style=_STYLE.get(f.kind),
        )  # fmt: skip
    return table


def _full_table(result: DiscoveryResult, top: int | None) -> Table:
    table = Table(title=_title(result), caption=_caption(result))
    for col in ("#", "feature", "prefix", "kind", "material d [CI]", "delta [CI]", "color d"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    cells = [f"{c}/{m}" for c in result.levels["color"] for m in result.levels["material"]]
    for c in cells:
        table.add_column(c, justify="right")
    for rank, f in enumerate(result.features[:top] if top else result.features, 1):
        means = group_means(result, f)
        table.add_row(
            str(rank), str(f.feature), str(f.prefix or ""), f.kind,
            f"{f.material_score:+.2f} {_fmt_ci(f.material_score_ci)}",
            f"{f.delta:+.3f} {_fmt_ci(f.delta_ci, '.3f')}", f"{f.color_score:+.2f}",
            *(f"{means[c]:.3f}" for c in cells), style=_STYLE.get(f.kind),
        )  # fmt: skip
    return table


def render_table(
    result: DiscoveryResult, console: Console | None = None, top: int | None = None
) -> None:
    """Print the ranked table to `console` (a new stdout Console by default), within its width."""
    console = console or Console()
    console.print(build_table(result, top, console))


def result_to_dict(result: DiscoveryResult) -> dict[str, Any]:
    """JSON-friendly dict of the whole result (NaN becomes None)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float):
            return None if math.isnan(x) or math.isinf(x) else x
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return clean(asdict(result))


def write_json(result: DiscoveryResult, path: str | Path) -> Path:
    """Write the result as JSON atomically; returns the path."""
    storage.write_json(path, result_to_dict(result))
    return Path(path)


def _pick(result: DiscoveryResult, top: int) -> list[FeatureEffect]:
    """Fragility features first, then the best-ranked others, then color features."""
    by_id = {f.feature: f for f in result.features}
    ids = result.fragility + [f.feature for f in result.features] + result.color
    seen: list[int] = []
    for i in ids:
        if i not in seen:
            seen.append(i)
    return [by_id[i] for i in seen[:top]]


def save_plot(result: DiscoveryResult, path: str | Path, top: int = 6) -> Path:
    """PNG of color x material group means (averaged over shades) of the top features."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    feats = _pick(result, top)
    colors, materials = result.levels["color"], result.levels["material"]
    ncol = min(3, max(1, len(feats)))
    nrow = max(1, math.ceil(len(feats) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.4 * nrow), squeeze=False)
    n_units = {
        m: sum(v["units"] for k, v in result.cell_counts.items() if k.endswith("/" + m))
        for m in materials
    }
    for ax, f in zip(axes.flat, feats, strict=False):
        means = group_means(result, f)
        for m, mark in zip(materials, ("o-", "s--"), strict=True):
            ys = [means[f"{c}/{m}"] for c in colors]
            ax.plot(colors, ys, mark, label=f"{m} (n={n_units[m]} {result.unit}s)")
        ax.set_title(
            f"f{f.feature} [{f.kind}] d={f.material_score:+.2f} {_fmt_ci(f.material_score_ci)}",
            fontsize=9,
        )
        ax.set_ylabel("mean activation")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(feats) :]:
        ax.axis("off")
    fig.suptitle("Group means: color x material (decorrelated design)")
    fig.tight_layout()
    try:
        return storage.write_png(path, fig, dpi=110)
    finally:
        plt.close(fig)
