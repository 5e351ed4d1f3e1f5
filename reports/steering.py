"""Reports: steered vs unsteered tables with CIs and paired tests, dose-response plots.

Each comparison pairs episodes by seed against the baseline condition (the first one, normally
`unsteered`): binary outcomes get Wilson intervals and an exact McNemar test, continuous ones a
bootstrap interval of the paired difference and a Wilcoxon signed-rank test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from reports.stats import bootstrap_mean, mcnemar, paired_difference, wilcoxon, wilson
from rollouts.logs import RunLog
from storage import write_json, write_png, write_text

BINARY = ("success", "broken")
#: Episode outcomes compared as means; the handling ones are None where they do not apply
#: (never held, never released) and are left out of their own estimates, not counted as 0.
CONTINUOUS = (
    "peak_force",
    "steps",
    "p_fragile_mean",
    "peak_grip_force",
    "grip_command",
    "carry_speed",
    "release_height",
)


def _by_condition(rows: list[dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["condition"], {})[int(r["seed"])] = r
    return out


def ordered_conditions(
    names: Sequence[str], baseline: str, order: Sequence[str] | None = None
) -> list[str]:
    """`names` with the baseline first, then in `order` (the run's conditions as given), then
    any others in their first appearance (a log's rows are sorted by name, not as given)."""
    present = set(names)
    return [n for n in dict.fromkeys([baseline, *(order or ()), *names]) if n in present]


def compare_conditions(
    rows: list[dict], baseline: str, order: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per condition: outcome estimates and paired tests against `baseline` on shared seeds.

    Args:
        rows: one dict per episode (condition, seed and the outcome columns).
        baseline: the condition every other is compared with (listed first).
        order: the conditions in the order to list them after the baseline (default: as they
            first appear in `rows`).
    """
    by = _by_condition(rows)
    if baseline not in by:
        raise ValueError(
            f"baseline condition {baseline!r} has no episodes; conditions: {sorted(by)}"
        )
    results = []
    for name in ordered_conditions(list(by), baseline, order):
        eps = by[name]
        seeds = sorted(set(eps) & set(by[baseline]))
        res: dict[str, Any] = {"condition": name, "n": len(eps), "n_paired": len(seeds)}
        for k in BINARY:
            v = np.array([eps[s][k] for s in sorted(eps)], dtype=bool)
            res[k] = wilson(int(v.sum()), len(v)).to_dict()
            if name != baseline and seeds:
                a = np.array([by[baseline][s][k] for s in seeds], dtype=bool)
                b = np.array([eps[s][k] for s in seeds], dtype=bool)
                res[f"{k}_diff"] = paired_difference(a.astype(float), b.astype(float)).to_dict()
                res[f"{k}_p"] = mcnemar(a, b)
        for k in CONTINUOUS:
            if any(k not in r for r in eps.values()):
                continue  # a log written before the column existed
            v = np.array([eps[s][k] for s in sorted(eps)], dtype=float)
            res[k] = bootstrap_mean(v).to_dict()
            if name != baseline and seeds:
                a = np.array([by[baseline][s][k] for s in seeds], dtype=float)
                b = np.array([eps[s][k] for s in seeds], dtype=float)
                res[f"{k}_diff"] = paired_difference(a, b).to_dict()
                res[f"{k}_p"] = wilcoxon(a, b)
        results.append(res)
    return results


def _fmt(e: dict, pct: bool = False) -> str:
    if e is None or e["n"] == 0 or math.isnan(e["value"]):
        return "–"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.3g}")
    return f"{f(e['value'])} [{f(e['low'])}, {f(e['high'])}]"


def _fmt_diff(res: dict, key: str, pct: bool = False) -> str:
    d = res.get(f"{key}_diff")
    if d is None:
        return "(baseline)"
    return f"{_fmt(d, pct)} p={res[f'{key}_p']:.3g}"


def steering_table(results: list[dict], baseline: str, console: Console | None = None) -> Table:
    """A rich table of the comparison (rates, means, paired differences with p-values).

    With a `console` too narrow for the full table's rows on one line each, the compact table
    of key columns (`compact_steering_table`) instead; the full one stays in report.md/.html.
    """
    full = _full_steering_table(results, baseline)
    if console is None or table_fits(full, console):
        return full
    return compact_steering_table(results, baseline)


def table_fits(table: Table, console: Console) -> bool:
    """Whether `table` prints within `console.width` without wrapping or cutting any cell."""
    unbounded = console.options.update(width=100_000, max_width=100_000)
    return Measurement.get(console, unbounded, table).maximum <= console.width


def _short(e: dict | None, pct: bool = False, signed: bool = False) -> str:
    """Value over [low, high] on two lines, in fixed decimals (percent for rates)."""
    if e is None or e["n"] == 0 or math.isnan(e["value"]):
        return "–"
    sign = "+" if signed else ""
    f = (lambda x: f"{100 * x:{sign}.0f}%") if pct else (lambda x: f"{x:{sign}.2f}")
    return f"{f(e['value'])}\n[{f(e['low'])}, {f(e['high'])}]"


def compact_steering_table(results: list[dict], baseline: str) -> Table:
    """Key columns (n, breakage, P(fragile) and their paired differences with p-values), each
    figure over its 95% CI: fits 80 columns with condition names up to 19 characters."""
    t = Table(title=Text(f"Steered vs {baseline}: key columns (95% CIs; paired by seed)"), box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, show_lines=True,
              caption="full tables: report.md, report.html")  # fmt: skip
    t.add_column("condition", overflow="fold")
    for col in ("broken", "Δ broken", "P(fragile)", "Δ P(fragile)"):
        t.add_column(col, no_wrap=True, justify="right")
    for r in results:
        cells = (f"{r['condition']}\nn={r['n']}", _short(r["broken"], True), _short_diff(r, "broken", True),
                 _short(r["p_fragile_mean"]), _short_diff(r, "p_fragile_mean", False))  # fmt: skip
        t.add_row(*map(Text, cells))  # Text: no markup or emoji codes (":-1:") in condition names
    return t


def _short_diff(r: dict, key: str, pct: bool) -> str:
    d = r.get(f"{key}_diff")
    return "(baseline)" if d is None else f"{_short(d, pct, signed=True)}\np={r[f'{key}_p']:.2g}"


def _full_steering_table(results: list[dict], baseline: str) -> Table:
    t = Table(title=Text(f"Steered vs {baseline} (95% CIs; paired by seed: McNemar / Wilcoxon)"))
    for col in (
        "condition",
        "n",
        "success",
        "broken",
        "Δ broken vs base",
        "peak force N",
        "steps",
        "Δ steps",
        "P(fragile)",
        "Δ P(fragile)",
    ):
        t.add_column(col)
    for r in results:
        t.add_row(*map(Text, (
            r["condition"], str(r["n"]), _fmt(r["success"], True), _fmt(r["broken"], True),
            _fmt_diff(r, "broken", True), _fmt(r["peak_force"]), _fmt(r["steps"]), _fmt_diff(r, "steps"),
            _fmt(r["p_fragile_mean"]), _fmt_diff(r, "p_fragile_mean"),
        )))  # fmt: skip
    return t


def markdown_table(results: list[dict], baseline: str) -> str:
    """The same comparison as a Markdown table."""
    head = "| condition | n | success | broken | Δ broken vs base | peak force (N) | steps | Δ steps | P(fragile) | Δ P(fragile) |"
    lines = [head, "|" + "---|" * 10]
    for r in results:
        lines.append(
            f"| {r['condition']} | {r['n']} | {_fmt(r['success'], True)} | {_fmt(r['broken'], True)} | "
            f"{_fmt_diff(r, 'broken', True)} | {_fmt(r['peak_force'])} | {_fmt(r['steps'])} | {_fmt_diff(r, 'steps')} | "
            f"{_fmt(r['p_fragile_mean'])} | {_fmt_diff(r, 'p_fragile_mean')} |"
        )
    return "\n".join(lines)


def errorbar_estimates(
    ax: Any, xs: Sequence[float], estimates: Sequence[dict], **kwargs: Any
) -> None:
    """Plot Estimate dicts (value, low, high) at `xs` with their 95% intervals as error bars."""
    v = np.array([e["value"] for e in estimates], dtype=float)
    low = v - np.array([e["low"] for e in estimates], dtype=float)
    high = np.array([e["high"] for e in estimates], dtype=float) - v
    ax.errorbar(xs, v, yerr=[low, high], **{"marker": "o", "capsize": 3, **kwargs})


def dose_response_plot(results: list[dict], path: Path) -> Path | None:
    """Magnitude vs P(fragile) and breakage per steering kind (points with 95% CIs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rollouts.conditions import parse_condition

    series: dict[str, list[tuple[float, dict]]] = {}
    for r in results:
        c = parse_condition(r["condition"])
        if c.kind == "unsteered":
            continue
        key = f"{c.kind}:{c.feature}" if c.feature else c.kind
        series.setdefault(key, []).append((c.magnitude, r))
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, pts in series.items():
        pts.sort(key=lambda x: x[0])
        xs = [m for m, _ in pts]
        for ax, metric in zip(axes, ("p_fragile_mean", "broken"), strict=True):
            errorbar_estimates(ax, xs, [r[metric] for _, r in pts], label=key)
    axes[0].set(xlabel="steering magnitude", ylabel="mean P(fragile)", title="P(fragile)")
    axes[1].set(xlabel="steering magnitude", ylabel="breakage rate", title="Breakage")
    axes[0].legend()
    fig.tight_layout()
    try:
        write_png(path, fig, dpi=100)
    finally:
        plt.close(fig)
    return path


# Each control kind and the steering kinds it controls for.
CONTROLS = {"random": ("sae", "dom"), "neuron-random": ("neuron",)}


def specificity(
    rows: list[dict], baseline: str, order: Sequence[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each steered condition against each control of its family (a random direction for SAE
    and difference-of-means steering, a random neuron cluster for neuron overrides), paired by
    seed: is the steered effect larger than what an unspecific push does? Controls and steered
    conditions are listed in `order` (the run's conditions as given).
    Returns {control: comparisons of the steered conditions with that control as baseline}."""
    from rollouts.conditions import parse_condition

    names = ordered_conditions(list(_by_condition(rows)), baseline, order)
    kinds = {n: parse_condition(n).kind for n in names}
    out = {}
    for control in (n for n in names if kinds[n] in CONTROLS):
        steered = [n for n in names if n != baseline and kinds[n] in CONTROLS[kinds[control]]]
        if not steered:
            continue
        keep = {control, *steered}
        out[control] = [r for r in compare_conditions([r for r in rows if r["condition"] in keep], control, names)
                        if r["condition"] != control]  # fmt: skip
    return out


def specificity_markdown(spec: dict[str, list[dict[str, Any]]]) -> str:
    """The steered-minus-control differences as Markdown (empty when the run has no control)."""
    if not spec or not any(spec.values()):
        return ""
    lines = [
        "| steered | control | n pairs | Δ broken | Δ steps | Δ P(fragile) |",
        "|---|---|---|---|---|---|",
    ]
    for control, results in spec.items():
        for r in results:
            lines.append(f"| {r['condition']} | {control} | {r['n_paired']} | {_fmt_diff(r, 'broken', True)} | "
                         f"{_fmt_diff(r, 'steps')} | {_fmt_diff(r, 'p_fragile_mean')} |")  # fmt: skip
    return "\n".join(lines)


def steering_report(
    run_dir: str | Path, console: Console | None = None, baseline: str | None = None
) -> dict[str, Any]:
    """Build the steering comparison for a run: terminal table, report.md, report.html,
    summary.json, PNG.

    Besides steered vs `baseline`, every steered condition is compared with every control
    condition in the run (`specificity`): a control that moves an outcome a little does not
    explain a steered effect unless the steered-minus-control difference is near zero. Tables
    list the baseline first, then the conditions in the run's order. The terminal tables fit
    `console.width` (key columns when it is narrow); the files hold the full tables.
    """
    from reports.html import write_run_html

    log = RunLog(run_dir)
    rows = log.read_episodes().to_pylist()
    if not rows:
        raise ValueError(f"{run_dir} has no finished episodes")
    config = log.read_config()
    baseline = baseline or config["conditions"][0]
    results = compare_conditions(rows, baseline, config.get("conditions"))
    spec = specificity(rows, baseline, config.get("conditions"))
    if console is not None:
        console.print(steering_table(results, baseline, console))
        for control, res in spec.items():
            if res:
                console.print(steering_table(res, control, console))
    plot = dose_response_plot(results, log.root / "dose_response.png")
    md = [f"# Steering report: {log.root.name}", "", markdown_table(results, baseline), ""]
    if plot:
        md += ["![dose response](dose_response.png)", ""]
    if spec_md := specificity_markdown(spec):
        md += ["## Specificity: steered minus control, paired by seed", "", spec_md, ""]
    write_text(log.root / "report.md", "\n".join(md))
    summary = {"baseline": baseline, "conditions": results, "specificity": spec}
    write_json(log.root / "summary.json", summary, sort_keys=True, default=str)
    write_run_html(log.root, summary, config)
    return summary
