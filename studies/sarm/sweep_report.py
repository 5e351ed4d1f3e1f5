"""Tables of the attack-strength sweep (studies.sarm.sweep.summarize_sweep's figures): rich
tables for the terminal, each in full where it fits and as key columns (every figure whole,
over its 95% CI and n) where it does not, and a Markdown table for reports (the demo)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["print_sweep", "sweep_markdown"]


def _rate(r: dict[str, Any] | None, compact: bool = False) -> str:
    if not r or r.get("n", 0) == 0 or r["rate"] != r["rate"]:
        return "–"
    sep = "\n" if compact else " "
    return f"{r['rate']:.2f}{sep}[{r['lo']:.2f}, {r['hi']:.2f}]{sep}n={r['n']}"


def _mean(e: dict[str, Any] | None, compact: bool = False, fmt: str = ".1f") -> str:
    if not e or e.get("n", 0) == 0 or not math.isfinite(e["value"]):
        return "–"
    sep = "\n" if compact else " "
    return f"{e['value']:{fmt}}{sep}[{e['low']:{fmt}}, {e['high']:{fmt}}]{sep}n={e['n']}"


def _auroc(a: dict[str, Any], compact: bool = False) -> str:
    if a["auc"] is None or not math.isfinite(a["auc"]):
        return "–"
    lo, hi = ("–" if x is None or not math.isfinite(x) else f"{x:.2f}" for x in (a["lo"], a["hi"]))
    sep = "\n" if compact else " "
    return f"{a['auc']:.2f}{sep}[{lo}, {hi}]{sep}ep={a['episodes_neg']}+{a['episodes_pos']}"


def attack_label(kind: str, row: dict[str, Any]) -> str:
    """The attack's label in every sweep table: kind and magnitude ("ta2 4")."""
    return f"{kind} {row['magnitude']:g}"


def print_sweep(doc: dict[str, Any], console: Any = None) -> None:
    """Print the sweep's tables: harm without a monitor per (kind, magnitude); per scorer the
    harm-based detection figures (coverage, breakage with the monitor on, fixed-window alarms,
    per-decision AUROC); harmful-attack coverage pooled per kind. Each fits `console`'s width
    (default: the terminal's, 80 columns when piped)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from reports.steering import table_fits

    console = console or Console()
    sweep = doc["summary"]["sweep"]
    w = sweep["window"]

    def table(title: str, compact: bool) -> Table:
        if not compact:
            return Table(title=title)
        return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False,
                     show_lines=True)  # fmt: skip

    def columns(t: Table, names: tuple[str, ...], compact: bool) -> None:
        t.add_column(names[0], overflow="fold")
        for c in names[1:]:
            t.add_column(c, no_wrap=compact, justify="right" if compact else "left")

    def harm(compact: bool) -> Table:
        t = table("attack-strength sweep: harm without a monitor (95% CIs)", compact)
        columns(t, ("attack", "broken", "success", "peak force N"), compact)
        for kind, rows in sweep["kinds"].items():
            for r in rows:
                cells = (
                    _rate(r["broken_off"], compact),
                    _rate(r["success_off"], compact),
                    _mean(r["peak_force_off"], compact),
                )
                t.add_row(*map(Text, (attack_label(kind, r), *cells)))
        return t

    def detection(compact: bool) -> Table:
        title = (f"sweep: harmful-attack coverage (alarm before the break, of the episodes broken without a monitor), "
                 f"breakage with the monitor on, alarms within {w} decisions after onset, per-decision AUROC")  # fmt: skip
        t = table(title, compact)
        if compact:
            t.caption = "key columns (all in summary.json); AUROC ep: clean + attacked episodes"
            columns(
                t,
                (
                    "attack\n scorer",
                    "coverage",
                    "broken\nmonitor on",
                    f"alarm in\n{w} dec.",
                    "AUROC",
                ),
                compact,
            )
        else:
            columns(t, ("attack", "scorer", "coverage", "after onset", "broken remaining", "broken on", "detection", "latency steps",
                        f"alarm in {w} dec.", f"clean alarm in {w} dec.", "AUROC [95% CI]"), compact)  # fmt: skip
        for kind, rows in sweep["kinds"].items():
            for r in rows:
                for s, x in r["scorers"].items():
                    if compact:
                        cells = (f"{attack_label(kind, r)}\n {s}", _rate(x["coverage"], True), _rate(x["broken_on"], True),
                                 _rate(x["window_detection"], True), _auroc(x["auroc"], True))  # fmt: skip
                    else:
                        cells = (attack_label(kind, r), s, _rate(x["coverage"]), _rate(x["coverage_after_onset"]), _rate(x["broken_remaining"]),
                                 _rate(x["broken_on"]), _rate(x["detection"]), _mean(x["latency_steps"]),
                                 _rate(x["window_detection"]), _rate(x["window_false_alarm"]), _auroc(x["auroc"]))  # fmt: skip
                    t.add_row(*map(Text, cells))
        return t

    def pooled(compact: bool) -> Table:
        t = table(
            "harmful-attack coverage pooled over magnitudes, and breakage remaining with the monitor on",
            compact,
        )
        names = ("coverage", "after onset", "coverage enforced", "broken remaining")
        columns(t, ("scorer\n attack", *(n.replace(" ", "\n") for n in names)) if compact else
                ("scorer", "attack", *names), compact)  # fmt: skip
        for s, per in sweep["coverage"].items():
            for kind, c in per.items():
                keys = ("coverage", "coverage_after_onset", "coverage_enforced", "broken_remaining")
                rates = [_rate(c.get(k), compact) for k in keys]
                t.add_row(*map(Text, ([f"{s}\n {kind}"] if compact else [s, kind]) + rates))
        return t

    for build in (harm, detection, pooled):
        full = build(False)
        console.print(full if table_fits(full, console) else build(True))


def sweep_markdown(summary: dict[str, Any]) -> str:
    """The harm-based table as Markdown: per attack (kind, magnitude) and scorer, breakage
    without a monitor, harmful-attack coverage, breakage remaining and with the monitor on,
    fixed-window alarms (attacked and clean) and per-decision AUROC; "" without a sweep."""
    sweep = summary.get("sweep") or {}
    if not sweep.get("kinds"):
        return ""
    w = sweep["window"]
    lines = [f"Harm-based: **coverage** = of the attacked episodes that break the object without a monitor, the "
             f"fraction the monitor vetoes before the break; alarms within {w} decisions after onset (clean: the same "
             "window of clean episodes); AUROC per decision, CI over episodes.", "",
             "| attack | broken, no monitor | scorer | coverage | coverage, alarms after onset | broken remaining (those "
             f"seeds, on) | broken, monitor on | alarm ≤ {w} decisions | clean alarm ≤ {w} decisions | AUROC per decision |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind, rows in sweep["kinds"].items():
        for r in rows:
            for s, x in r["scorers"].items():
                cells = [attack_label(kind, r), _rate(r["broken_off"]), s, *(_rate(x[k]) for k in (
                    "coverage", "coverage_after_onset", "broken_remaining", "broken_on", "window_detection", "window_false_alarm")), _auroc(x["auroc"])]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    for s, per in sweep["coverage"].items():
        all_ = per.get("all", {})
        cells = [
            _rate(all_.get(k)) for k in ("coverage", "coverage_after_onset", "broken_remaining")
        ]
        lines.append(f"| all attacks | | {s} | " + " | ".join(cells) + " | | | | |")
    return "\n".join(lines)
