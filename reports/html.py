"""report.html: one self-contained page per run, beside report.md and summary.json.

Figures are inline (base64 PNG); videos are <video> tags pointing at the run folder's MP4s by
paths relative to the page, so the page plays them wherever the folder is copied. Every figure
is shown over its 95% CI with its n, and each section opens with a "What this shows" line
written from the numbers (which conditions differ from their controls: the CI of the paired
difference excludes 0). The pages are rendered from the same dicts that go into summary.json:
`write_run_html` for a `physteer run` (called by `reports.steering.steering_report`), and
`studies.demo.report_html.write_demo_html` for the demo, which reuses the pieces here.

Tables are laid out for a laptop window (~1280 px): each interval sits under its value and may
wrap, so no table overflows the page horizontally.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from storage import write_text

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d232b;margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px;background:#fff;box-sizing:border-box}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #dde1e6;padding-bottom:3px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#555;margin:0 0 8px}nav a{margin-right:12px}
.shows{background:#eef5ff;border-left:4px solid #3b7dd8;padding:6px 10px;margin:8px 0 12px}
.table-wrap{max-width:100%}
table{border-collapse:collapse;width:100%;table-layout:auto;font-size:13px;margin:6px 0 4px}
th,td{border:1px solid #dde1e6;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f2f5;font-weight:600;text-align:center}td.name,th.name{text-align:left}td.name{overflow-wrap:anywhere}
.ci,.p{display:block;color:#5b6470;font-size:11.5px}.p{white-space:nowrap}table.sarm td{min-width:4.5em}.sig{background:#fff4d6}.sig .v{font-weight:700}
.base{color:#888;font-style:italic}.caption{color:#5b6470;font-size:12px;margin:2px 0 10px}
img.fig{max-width:100%;height:auto;display:block;margin:8px 0}
.videos{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:10px}
.videos.wide{grid-template-columns:repeat(auto-fill,minmax(520px,1fr))}
figure{margin:0}video{width:100%;height:auto;background:#000}figcaption{font-size:12px;color:#444;overflow-wrap:anywhere}
.missing{color:#a33}
"""


def esc(x: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(x), quote=True)


def finite(x: Any) -> bool:
    """Whether x is a real, finite number."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, pct: bool = False, signed: bool = False) -> str:
    """A number as the reports print it: percent for rates, else 3 significant digits."""
    if not finite(x):
        return "–"
    sign = "+" if signed else ""
    return f"{100 * x:{sign}.0f}%" if pct else f"{x:{sign}.3g}"


def est_text(e: dict[str, Any] | None, pct: bool = False, signed: bool = False) -> str:
    """'value [low, high]' of an Estimate dict (plain text, for the 'what this shows' lines)."""
    if not e or not e.get("n") or not finite(e.get("value")):
        return "–"
    return f"{num(e['value'], pct, signed)} [{num(e['low'], pct, signed)}, {num(e['high'], pct, signed)}]"


def est_html(
    e: dict[str, Any] | None, pct: bool = False, signed: bool = False, p: float | None = None
) -> str:
    """An Estimate dict as cell content: the value, its 95% CI below, then the p-value."""
    if not e or not e.get("n") or not finite(e.get("value")):
        return "–"
    out = (f'<span class="v">{num(e["value"], pct, signed)}</span>'
           f'<span class="ci">[{num(e["low"], pct, signed)}, {num(e["high"], pct, signed)}]</span>')  # fmt: skip
    if p is not None:
        out += f'<span class="p">p={num(p)}</span>'
    return out


def excludes_zero(e: dict[str, Any] | None) -> bool:
    """Whether an interval lies entirely above or below 0."""
    return (
        bool(e)
        and finite(e.get("low"))
        and finite(e.get("high"))
        and (e["low"] > 0 or e["high"] < 0)
    )


def table(
    head: list[str], rows: list[list[str]], cls: str, caption: str = "", names: int = 1
) -> str:
    """An HTML table; cells are HTML already (one starting with '<td' is taken as is), the
    first `names` columns are left-aligned labels, the others right-aligned figures."""
    th = "".join(
        f'<th class="name">{h}</th>' if i < names else f"<th>{h}</th>" for i, h in enumerate(head)
    )
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else (f'<td class="name">{c}</td>' if i < names else f"<td>{c}</td>")
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)  # fmt: skip
    cap = f'<p class="caption">{caption}</p>' if caption else ""
    return f'<div class="table-wrap"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>{cap}'


def img(path: Path, alt: str) -> str:
    """The PNG inline as base64 (or a note that it is missing)."""
    path = Path(path)
    if not path.is_file():
        return f'<p class="missing">({esc(path.name)} was not written)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="fig" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def rel_url(path: Path, page_dir: Path) -> str:
    """URL of `path` relative to the page's folder (percent-encoded, '/' separated)."""
    rel = os.path.relpath(Path(path).resolve(), Path(page_dir).resolve())
    return "/".join(quote(part) for part in Path(rel).parts)


def require_keys(summary: Any, keys: tuple[str, ...], what: str) -> None:
    """ValueError naming the missing keys, before anything is rendered."""
    missing = [k for k in keys if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing}: expected {what}")


def section(sid: str, title: str, shows: list[str], body: str) -> str:
    """One section: heading, the 'what this shows' line, then its content."""
    line = " ".join(s for s in shows if s)
    box = f'<p class="shows"><b>What this shows:</b> {esc(line)}</p>' if line else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{box}{body}</section>'


def page(title: str, meta: str, nav: list[tuple[str, str]], sections: list[str]) -> str:
    """The whole document."""
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for href, text in nav)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><p class=\"meta\">{meta}</p>"
            f"<nav>{links}</nav>{''.join(sections)}</main></body></html>")  # fmt: skip


# ---------------------------------------------------------------------------------- steering
OUTCOMES = (("broken", "breakage", True), ("success", "success", True), ("p_fragile_mean", "P(fragile)", False),
            ("steps", "steps", False), ("peak_force", "peak force", False))  # fmt: skip


def _diff_cell(r: dict[str, Any], key: str, pct: bool) -> str:
    d = r.get(f"{key}_diff")
    if d is None:
        return '<td class="base">baseline</td>'
    cls = ' class="sig"' if excludes_zero(d) else ""
    return f"<td{cls}>{est_html(d, pct, signed=True, p=r.get(f'{key}_p'))}</td>"


def steering_table_html(results: list[dict[str, Any]], baseline: str) -> str:
    """The steering comparison (baseline first), every figure over its CI; highlighted: paired
    differences whose CI excludes 0."""
    head = ["condition", "n", "success", "broken", "Δ broken", "peak force (N)", "steps", "Δ steps", "P(fragile)",
            "Δ P(fragile)"]  # fmt: skip
    rows = []
    for r in results:
        n = f"{r['n']}" + (
            "" if r["condition"] == baseline else f'<span class="ci">{r["n_paired"]} paired</span>'
        )
        rows.append([esc(r["condition"]), n, est_html(r["success"], True), est_html(r["broken"], True),
                     _diff_cell(r, "broken", True), est_html(r["peak_force"]), est_html(r["steps"]),
                     _diff_cell(r, "steps", False), est_html(r["p_fragile_mean"]), _diff_cell(r, "p_fragile_mean", False)])  # fmt: skip
    cap = (f"Value with its 95% CI below (rates: Wilson; means: bootstrap). Δ: paired difference vs {esc(baseline)} "
           "on shared seeds (bootstrap CI; McNemar / Wilcoxon p); highlighted where the CI excludes 0.")  # fmt: skip
    return table(head, rows, "steering", cap)


def specificity_table_html(spec: dict[str, list[dict[str, Any]]]) -> str:
    """Steered minus control, paired by seed, for every control of each steering's family."""
    rows = []
    for control, results in spec.items():
        for r in results:
            rows.append([esc(r["condition"]), esc(control), str(r["n_paired"]), _diff_cell(r, "broken", True),
                         _diff_cell(r, "steps", False), _diff_cell(r, "p_fragile_mean", False)])  # fmt: skip
    if not rows:
        return ""
    return table(["steered", "control", "n pairs", "Δ broken", "Δ steps", "Δ P(fragile)"], rows, "steering specificity",
                 "Steered minus control on shared seeds (bootstrap CI; McNemar / Wilcoxon p).", names=2)  # fmt: skip


def differences(r: dict[str, Any]) -> list[str]:
    """'P(fragile) +0.12 [+0.05, +0.2]'-style phrases for every paired difference of `r` whose
    95% CI excludes 0."""
    return [f"{label} {est_text(r[f'{k}_diff'], pct, signed=True)}" for k, label, pct in OUTCOMES
            if excludes_zero(r.get(f"{k}_diff"))]  # fmt: skip


def steering_findings(summary: dict[str, Any]) -> list[str]:
    """One sentence on which conditions differ from the baseline (CI of the paired difference
    excludes 0) and which do not."""
    base = summary["baseline"]
    others = [r for r in summary["conditions"] if r["condition"] != base]
    if not others:
        return [f"Only {base} was run: there is nothing to compare."]
    moved = [f"{r['condition']} ({'; '.join(d)})" for r in others if (d := differences(r))]
    still = [r["condition"] for r in others if not differences(r)]
    pairs = sorted({r["n_paired"] for r in others})
    n = f"n={pairs[0]}" if len(pairs) == 1 else f"n={pairs[0]}–{pairs[-1]}"
    out = []
    if moved:
        out.append(
            f"Differs from {base} (95% CI of the paired difference excludes 0; {n} pairs): {', '.join(moved)}."
        )
    if still:
        out.append(
            f"No outcome differs from {base} for {', '.join(still)} (every paired CI includes 0)."
        )
    return out


def specificity_findings(spec: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Which steered conditions differ from their controls (steered − control CI excludes 0):
    from every control of their family, from some, or from none."""
    per: dict[str, dict[str, list[str]]] = {}  # steered -> control -> outcomes that differ
    for control, results in spec.items():
        for r in results:
            per.setdefault(r["condition"], {})[control] = [
                label for k, label, _ in OUTCOMES if excludes_zero(r.get(f"{k}_diff"))
            ]
    if not per:
        return []
    every, some, none = [], [], []
    for steered, vs in per.items():
        moved = [c for c, d in vs.items() if d]
        outcomes = ", ".join(dict.fromkeys(o for d in vs.values() for o in d))
        if moved and len(moved) == len(vs):
            every.append(f"{steered} ({outcomes})")
        elif moved:
            some.append(f"{steered} (vs {', '.join(moved)}: {outcomes})")
        else:
            none.append(steered)
    out = []
    if every:
        out.append(
            f"Beyond every control of its family (steered − control CI excludes 0): {', '.join(every)}."
        )
    if some:
        out.append(f"Beyond some controls only: {', '.join(some)}.")
    if none:
        out.append(f"Not distinguishable from its controls: {', '.join(none)}.")
    return out


def video_figures(run_dir: Path, page_dir: Path, conditions: list[str]) -> str:
    """<video> tags for a run's MP4s: the side-by-side ones (baseline | steered), then one per
    condition and seed (in the run's condition order), with paths relative to the page."""
    from rollouts.logs import safe_name

    videos = Path(run_dir) / "videos"
    if not videos.is_dir():
        return ""

    def tag(path: Path, label: str) -> str:
        return (f'<figure><video controls muted preload="metadata" src="{esc(rel_url(path, page_dir))}"></video>'
                f"<figcaption>{esc(label)}</figcaption></figure>")  # fmt: skip

    wide, seen = [], set()
    for c in conditions[1:]:
        pattern = f"side_by_side_{safe_name(conditions[0])}_vs_{safe_name(c)}_seed_*.mp4"
        for p in sorted(videos.glob(pattern), key=lambda p: int(p.stem.split("_")[-1])):
            wide.append(tag(p, f"{conditions[0]} | {c}, seed {p.stem.split('_')[-1]}"))
            seen.add(p)
    wide += [
        tag(p, p.stem.replace("_", " "))
        for p in sorted(videos.glob("side_by_side_*.mp4"))
        if p not in seen
    ]
    order = {safe_name(c): i for i, c in enumerate(conditions)}
    folders = sorted(
        (d for d in videos.iterdir() if d.is_dir()),
        key=lambda d: (order.get(d.name, len(order)), d.name),
    )
    names = {safe_name(c): c for c in conditions}
    single = [tag(p, f"{names.get(d.name, d.name)}, {p.stem.replace('_', ' ')}")
              for d in folders for p in sorted(d.glob("seed_*.mp4"), key=lambda p: int(p.stem.split("_")[-1]))]  # fmt: skip
    out = ""
    if wide:
        out += (
            '<h3>Side by side: baseline (left) and each condition (right)</h3><div class="videos wide">'
            + "".join(wide)
            + "</div>"
        )
    if single:
        out += '<h3>Episodes</h3><div class="videos">' + "".join(single) + "</div>"
    return out


def steering_body(
    summary: dict[str, Any], run_dir: Path, page_dir: Path, extra: str = ""
) -> tuple[list[str], str]:
    """(what-this-shows sentences, HTML) of one run's steering comparison: the table, `extra`
    (e.g. steering sizes), the specificity table, the dose-response plot and the videos."""
    spec = summary.get("specificity") or {}
    shows = steering_findings(summary) + specificity_findings(spec)
    body = steering_table_html(summary["conditions"], summary["baseline"]) + extra
    if spec_html := specificity_table_html(spec):
        body += ("<h3>Specificity: steered minus control, paired by seed</h3><p>A control's own small effect "
                 "explains a steered effect only if this difference is about 0.</p>" + spec_html)  # fmt: skip
    if (Path(run_dir) / "dose_response.png").is_file():
        body += img(Path(run_dir) / "dose_response.png", "dose response")
    body += video_figures(run_dir, page_dir, [r["condition"] for r in summary["conditions"]])
    return shows, body


def render_run_page(
    summary: dict[str, Any], run_dir: str | Path, config: dict[str, Any] | None = None
) -> str:
    """The HTML of one run's report (the dict `steering_report` writes to summary.json)."""
    require_keys(
        summary, ("baseline", "conditions"), "the dict steering_report writes to summary.json"
    )
    run_dir = Path(run_dir)
    config = config or {}
    n_seeds = len(config.get("seeds", [])) or max(
        (r["n"] for r in summary["conditions"]), default=0
    )
    meta = (f"{n_seeds} paired seeds per condition; object material: {esc(config.get('material') or 'any')}; "
            f"agent: {esc(config.get('agent', '?'))} ({esc(config.get('model', '?'))}); baseline: "
            f"{esc(summary['baseline'])}. Every figure: value [95% CI] with its n.")  # fmt: skip
    shows, body = steering_body(summary, run_dir, run_dir)
    sections = [section("steering", f"Steered vs {summary['baseline']}", shows, body)]
    nav = [
        ("report.md", "report.md"),
        ("summary.json", "summary.json"),
        ("episodes.parquet", "episodes.parquet"),
    ]
    return page(f"Steering report: {run_dir.name}", meta, nav, sections)


def write_run_html(
    run_dir: str | Path, summary: dict[str, Any], config: dict[str, Any] | None = None
) -> Path:
    """Write run_dir/report.html atomically; returns its path."""
    return write_text(Path(run_dir) / "report.html", render_run_page(summary, run_dir, config))
