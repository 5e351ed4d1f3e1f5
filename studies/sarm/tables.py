"""Terminal tables of a SARM evaluation's summary (`physteer sarm-eval`, the demo's SARM stages)."""

from __future__ import annotations

import math
from typing import Any

from studies.sarm.probe import print_probe


def _rate(r: dict[str, Any], compact: bool = False) -> str:
    """A rate with its 95% CI and n, on one line, or on three (`compact`, for narrow tables)."""
    if r["n"] == 0:
        return "–"
    if compact:
        return f"{r['rate']:.2f}\n[{r['lo']:.2f}, {r['hi']:.2f}]\nn={r['n']}"
    return f"{r['rate']:.2f} [{r['lo']:.2f},{r['hi']:.2f}] n={r['n']}"


def promise_text(clean_row: dict[str, Any], compact: bool = False) -> str:
    """'calibrated (α 0.1/episode)' or 'NOT calibrated (α 0.1/episode)': the scorer's realised
    clean false-alarm rate against its promise (studies.sarm.summary.promise_check)."""
    p = clean_row.get("promise")
    if not p:
        return "–"
    word = "NOT calibrated" if p["calibrated"] is False else p["verdict"]
    return f"{word}{chr(10) if compact else ' '}(α {p['alpha']:g}/{p['unit']})"


def _result(
    r: dict[str, Any], key: str, compact: bool, clean_row: dict[str, Any] | None = None
) -> str:
    """r[key] as a rate, or "not calibrated" where the scorer (clean_row: its clean row; r itself
    when None) breaks its false-alarm promise: its detections and outcomes are not results."""
    row = r if clean_row is None else clean_row
    if (row.get("promise") or {}).get("calibrated") is False:
        return "not calibrated"
    return _rate(r[key], compact)


def print_summary(doc: dict[str, Any], console: Any = None) -> None:
    """Rich tables: clean false positives per scorer, then figures per perturbation × scorer,
    then the sweep's harm-based figures per (kind, magnitude) × scorer (studies.sarm.sweep_report).

    Perturbations are listed in the order given. Each table is printed in full where it fits
    `console` (default: a Console of the terminal's width, 80 columns when piped); otherwise
    its key columns, every figure over its CI and n, so that no number is cut.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from reports.steering import table_fits

    console = console or Console()
    summ = doc["summary"]
    order = [p for p in doc.get("perturbations", {}).values() if p in summ["perturbations"]]
    order += [p for p in summ["perturbations"] if p not in order]

    def table(title: str, compact: bool) -> Table:
        if not compact:
            return Table(title=title)
        return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False,
                     show_lines=True)  # fmt: skip

    def auc(a: dict[str, Any], compact: bool) -> str:
        if a["auc"] is None or not math.isfinite(a["auc"]):
            return "–"
        lo, hi = (
            "–" if x is None or not math.isfinite(x) else f"{x:.2f}" for x in (a["lo"], a["hi"])
        )
        return (
            f"{a['auc']:.2f}\n[{lo}, {hi}]\nn={a['n_neg']}+{a['n_pos']}"
            if compact
            else f"{a['auc']:.2f} [{lo},{hi}]"
        )

    def clean(compact: bool) -> Table:
        agent = "VLA" if doc.get("config", {}).get("agent") == "vla" else "planner"
        t = table(
            f"clean episodes: false positives ({agent}, layer {doc['layer']}, 95% Wilson CI)",
            compact,
        )
        t.add_column("scorer\n threshold" if compact else "scorer", overflow="fold")
        cols = ("FPR episodes", "FPR steps", "FPR decisions", "promise", "broken fragile (on)")
        for col in cols if compact else ("threshold", *cols):
            t.add_column(
                col.replace(" ", "\n", 1) if compact else col,
                no_wrap=compact,
                justify="right" if compact else "left",
            )
        for s, r in summ["clean"].items():
            rates = [_rate(r[k], compact) for k in ("fpr_episode", "fpr_step", "fpr_decision")]
            rates += [promise_text(r, compact), _result(r, "broken_fragile_on", compact)]
            name = [f"{s}\n {r['threshold']:.4g}"] if compact else [s, f"{r['threshold']:.4g}"]
            t.add_row(*map(Text, [*name, *rates]))  # Text: no markup or emoji codes in names
        return t

    def perturbed(compact: bool) -> Table:
        title = "perturbations: detection (veto after onset), latency, AUC, fragile broken"
        t = table(title + (" (key columns; all in summary.json)" if compact else ""), compact)
        if compact:
            t.caption = "n: episodes; AUC n: clean + perturbed decisions"
        t.add_column("perturbation\n scorer" if compact else "perturbation", overflow="fold")
        cols = (("detection", "veto\nbefore onset", "AUC", "broken\nfragile (on)") if compact else
                ("scorer", "detection", "veto before onset", "latency (steps)", "AUC [95% CI]", "broken off", "broken on"))  # fmt: skip
        for col in cols:
            t.add_column(col, no_wrap=compact, justify="right" if compact else "left")
        for cond in order:
            per = summ["perturbations"][cond]
            for s in summ["clean"]:
                r = per[s]
                ok = summ["clean"][s]
                if compact:
                    t.add_row(*map(Text, (f"{cond}\n {s}", _result(r, "detection", True, ok), _rate(r["early_veto"], True),
                                          auc(r["auc"], True), _result(r, "broken_fragile_on", True, ok))))  # fmt: skip
                    continue
                lat = r["latency_steps"]
                lat_s = "–" if not lat["n"] else f"{lat['mean']:.1f} (max {lat['max']})"
                t.add_row(*map(Text, (cond, s, _result(r, "detection", False, ok), _rate(r["early_veto"]), lat_s,
                                      auc(r["auc"], False), _rate(per["broken_fragile_off"]),
                                      _result(r, "broken_fragile_on", False, ok))))  # fmt: skip
        return t

    def alarms(compact: bool) -> Table:
        t = table(
            "clean false alarms: realised (unmonitored clean episodes, 95% Wilson CI) vs promised α",
            compact,
        )
        t.add_column("scorer\n calibration" if compact else "scorer", overflow="fold")
        cols = ("threshold", "promised α", "per episode", "per decision")
        for col in cols if compact else ("calibration", *cols):
            t.add_column(
                col.replace(" ", "\n", 1) if compact else col,
                no_wrap=compact,
                justify="right" if compact else "left",
            )
        for s, methods in summ.get("false_alarms", {}).items():
            for method, r in methods.items():
                name = method + (" (on)" if r.get("enforced") else "")
                thr = "–" if r.get("threshold") is None else f"{r['threshold']:.4g}"
                alpha = "–" if r.get("alpha") is None else f"{r['alpha']:.3g} / {r['unit']}"
                rates = [_rate(r[k], compact) if k in r else "–" for k in ("episode", "decision")]
                t.add_row(
                    *map(Text, [f"{s}\n {name}"] if compact else [s, name]),
                    *map(Text, [thr, alpha, *rates]),
                )
        return t

    def outcomes(compact: bool) -> Table:
        policy = doc.get("config", {}).get("on_veto", "?")
        t = table(
            f"success and breakage (all materials), monitor off vs on (on_veto={policy})", compact
        )
        t.add_column("condition\n scorer" if compact else "condition", overflow="fold")
        fallback = policy == "fallback" and not compact
        cols = (
            "success off",
            "success on",
            "broken off",
            "broken on",
            *(("fallback",) if fallback else ()),
        )
        for col in ("scorer", *cols) if not compact else cols:
            t.add_column(
                col.replace(" ", "\n", 1) if compact else col,
                no_wrap=compact,
                justify="right" if compact else "left",
            )
        for cond in ["clean", *order]:
            off = summ["clean_outcomes_off"] if cond == "clean" else summ["perturbations"][cond]
            for s in summ["clean"]:
                r = summ["clean"][s] if cond == "clean" else summ["perturbations"][cond][s]
                if "success_on" not in r:
                    continue
                ok = summ["clean"][s]
                rates = [_rate(off["success_off"], compact), _result(r, "success_on", compact, ok),
                         _rate(off["broken_off"], compact), _result(r, "broken_on", compact, ok)]  # fmt: skip
                head = [f"{cond}\n {s}"] if compact else [cond, s]
                t.add_row(
                    *map(Text, [*head, *rates, *([_rate(r["fallback_on"])] if fallback else [])])
                )
        return t

    for build in (clean, alarms, perturbed, outcomes):
        if build is outcomes and "clean_outcomes_off" not in summ:
            continue
        full = build(False)
        console.print(full if table_fits(full, console) else build(True))
    if summ.get("sweep", {}).get("kinds"):
        from studies.sarm.sweep_report import print_sweep

        print_sweep(doc, console)
    print_probe(doc, console)
