"""The VLA study's terminal tables (<= 80 columns) and dose-response figure
(`studies.vla.summary.summarize_vla_study`'s summary in, nothing computed here)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Table columns: (summary key, header, unit scale, format); SI units in summary.json.
COLUMNS = (("peak_grip_force", "grip N", 1, ".1f"), ("grip_command", "grip cmd", 100, ".0f%"), ("carry_speed", "carry cm/s", 100, ".1f"),
           ("release_height", "release cm", 100, ".1f"), ("broken", "broken", 100, ".0f%"),
           ("success", "success", 100, ".0f%"))  # fmt: skip


def _cell(
    e: dict[str, Any] | None, scale: float = 1, fmt: str = ".3g", signed: bool = False
) -> str:
    """Value over its [low, high] on two lines, times `scale` in format `fmt` (a trailing "%"
    is printed), or "–" when there is none."""
    if not e or not e.get("n") or e["value"] is None or math.isnan(e["value"]):
        return "–"
    spec, pct = ("+" if signed else "") + fmt.rstrip("%"), "%" if fmt.endswith("%") else ""
    f = lambda x: f"{scale * x:{spec}}{pct}"  # noqa: E731
    return f"{f(e['value'])}\n[{f(e['low'])},{f(e['high'])}]"


def conditions_table(summary: dict[str, Any]) -> Table:
    """Per condition: n and each outcome's mean (rate) with its 95% CI."""
    t = Table(title=Text(f"VLA study on {_objects(summary['dose_response'])} (95% CIs, {summary['n_seeds']} paired seeds)"),
              box=box.SIMPLE_HEAD, padding=(0, 0, 0, 0), pad_edge=False, show_edge=False, show_lines=True)  # fmt: skip
    t.add_column("condition")
    for _, header, _, _ in COLUMNS:
        t.add_column(header, no_wrap=True, justify="right")
    for r in summary["conditions"]:
        cells = (_cell(r.get(k), scale, fmt) for k, _, scale, fmt in COLUMNS)
        name = "\n".join(
            r["condition"][i : i + 13] for i in range(0, len(r["condition"]), 13)
        )  # fits 80 columns
        t.add_row(Text(f"{name}\nn={r['n']}"), *map(Text, cells))
    return t


def _objects(dose: dict[str, Any]) -> str:
    """The study's objects in words (summaries made before `material` existed: fragile)."""
    from studies.vla.config import objects_label

    return objects_label(dose.get("material", "fragile"), bool(dose.get("unbreakable")))


def _nan(e: dict[str, Any] | None) -> dict[str, float]:
    """An estimate with None (no episode to estimate from; NaN in summary.json) as NaN."""
    e = e or {}
    return {k: float("nan") if e.get(k) is None else e[k] for k in ("value", "low", "high")}


def _p(p: float | None) -> str:
    return "n/a" if p is None or p != p else f"{p:.2g}"


def _flag(value: bool) -> Text:
    return Text("yes" if value else "no", style="green" if value else "red")


def acceptance_table(summary: dict[str, Any]) -> Table:
    """Each acceptance flag beside the numbers it is read from."""
    d, acc = summary["dose_response"], summary["acceptance"]
    t = Table(title=Text("Acceptance (criteria fixed in studies.vla.study.ACCEPTANCE)"), box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)  # fmt: skip
    for col in ("check", "figures", "pass"):
        t.add_column(col, overflow="fold")
    sep = ", ".join(f"{s:g}" for s in d["separated_intermediates"]) or "none"
    f = d["flags"]
    d = {
        k: (float("nan") if v is None else v) for k, v in d.items()
    }  # summary.json writes NaN as null
    need = (
        f">= {acc['spearman_rho_min']:g}"
        if d.get("direction", 1) > 0
        else f"<= -{acc['spearman_rho_min']:g}"
    )
    t.add_row(
        "SAE monotone",
        f"rho {d['spearman_rho']:.2f} (p {d['spearman_p']:.2g}); need {need}",
        _flag(f["monotone"]),
    )
    t.add_row(
        "SAE graded",
        f"separated strengths: {sep}; need >= {acc['min_separated_intermediates']}",
        _flag(f["graded"]),
    )
    if "breakage_rises" in f:  # fragile objects only
        t.add_row("breakage", f"{_cell(d['broken_unsteered'], 100, '.0f%')} → {_cell(d['broken_strongest'], 100, '.0f%')}"
                  .replace("\n", " ") + f" (paired p {d['broken_change_p']:.2g}); need <= "
                  f"{100 * acc['broken_unsteered_max']:.0f}% → >= {100 * acc['broken_strongest_min']:.0f}%", _flag(f["breakage_rises"]))  # fmt: skip
    t.add_row("random small", f"Δgrip {_cell(d['random_grip_change'], 1, '.2f', True)} vs SAE "
              f"{_cell(d['sae_grip_change'], 1, '.2f', True)} N".replace("\n", " ") +
              f"; fraction {d['random_fraction']:.2f}, need |.| < {acc['random_fraction_max']:g}",
              _flag(f["random_small"]))  # fmt: skip
    for word, n in summary["neurons"].items():
        figures = f"Δcarry {_cell(n['carry_speed_change'], 100, '.1f', True)}".replace("\n", " ")
        flags, p = n["flags"], n["carry_speed_p"]
        if word.startswith("random"):  # the control passes when it does NOT move the speed
            t.add_row(
                f"{word} cluster", f"{figures} cm/s, p {_p(p)}", _flag(not flags["significant"])
            )
            continue
        ok = flags.get("expected_direction", flags["significant"])
        t.add_row(f"neuron {word}", f"{figures} cm/s, p {_p(p)}", _flag(ok))
    return t


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Both tables and the matched norm."""
    m = summary["matched_norm"]
    console.print(conditions_table(summary))
    console.print(f"norm-matched random: {m['random_condition']} (per-token ||Δh|| {m['random_norm']:.3g} vs "
                  f"{m['sae_condition']} {m['sae_norm']:.3g})")  # fmt: skip
    console.print(acceptance_table(summary))


def plot_dose_response(summary: dict[str, Any], path: Path) -> Path:
    """Peak grip force, carry speed and breakage vs SAE strength (95% CIs), with the
    norm-matched random direction at the strongest strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from reports.steering import errorbar_estimates
    from storage import write_png

    d = summary["dose_response"]
    by = {r["condition"]: r for r in summary["conditions"]}
    xs = np.array(d["strengths"])
    other = "rigid" if d.get("material", "fragile") == "fragile" else "fragile"
    random = by[summary["matched_norm"]["random_condition"]]
    panels = (("peak_grip_force", "peak grip force (N)"), ("grip_command", "commanded grip (fraction of full)"), ("carry_speed", "carry speed (m/s)"),
              ("release_height", "release height (m)"), ("broken", "breakage rate"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(21, 4))
    for ax, (key, label) in zip(axes, panels, strict=True):
        errorbar_estimates(
            ax,
            xs,
            [_nan(by[c].get(key)) for c in d["conditions"]],
            label=f"SAE fragility → {other}",
        )
        errorbar_estimates(ax, [xs[-1] + 0.08], [_nan(random.get(key))], marker="s", color="grey", linestyle="none",
                           label="random, norm-matched")  # fmt: skip
        ax.set(xlabel="strength s = |X − own level| (0: unsteered)", ylabel=label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"VLA dose response on {_objects(d)} ({summary['n_seeds']} paired seeds, 95% CIs)")
    fig.tight_layout()
    try:
        write_png(path, fig, dpi=100)
    finally:
        plt.close(fig)
    return path
