"""One self-contained HTML page for a `reports.dashboard.Dashboard` (no network, no CDN).

Figures are inline: frames as base64 PNG, distributions as inline SVG. A few lines of inline
JavaScript sort the feature index by any column (click a header).
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

import numpy as np

from reports.dashboard import ON_OBJECT, OVERLAP_MIN, SPREAD, Dashboard, FeatureCard

MATERIAL_COLORS = {"fragile": "#d95f02", "rigid": "#1b9e77"}
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;padding:16px 20px;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}th:first-child,td:first-child,td.l,th.l{text-align:left}
.kind{border-radius:3px;padding:0 5px;font-size:12px;color:#fff}.fragility{background:#2e7d32}.color{background:#c62828}
.shade{background:#f9a825}.none{background:#9e9e9e}.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}
.frames{display:flex;flex-wrap:wrap;gap:8px}.frames figure{margin:0;width:176px;font-size:11px;color:#444}
.frames img{width:176px;height:176px;display:block}.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.verdict{font-weight:600}.on{color:#2e7d32}.partly{color:#ef6c00}.off{color:#c62828}.muted{color:#777}
.shows{background:#f3f8f3;border-left:4px solid #2e7d32;padding:6px 10px}.note{background:#fff6e5;border-left:4px solid #ef6c00;padding:6px 10px}
"""
SORT_JS = """
document.querySelectorAll('table.sortable th[data-key]').forEach(function (th) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], i = th.cellIndex;
    var dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
    th.dataset.dir = dir;
    var val = function (r) { var v = r.cells[i].dataset.v, n = parseFloat(v); return isNaN(n) ? (v || '') : n; };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { var x = val(a), y = val(b), c = x < y ? -1 : (x > y ? 1 : 0); return dir === 'desc' ? -c : c; });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, fmt: str = "+.2f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ci(ci: Any, fmt: str = "+.2f") -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return ""
    return f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _verdict_class(card: FeatureCard) -> str:
    return {"on the object": "on", "partly on the object": "partly"}.get(
        card.verdict, "off" if card.object_share is not None else "muted"
    )


def _estimate(e: dict | None, pct: bool = False) -> str:
    """'+0.42 [+0.30, +0.55]' from a stats dict {value, low, high}."""
    if not e or e.get("value") is None:
        return "–"
    f = (lambda v: f"{100 * v:+.0f}%") if pct else (lambda v: f"{v:+.3g}")
    return f"{f(e['value'])} [{f(e['low'])}, {f(e['high'])}]"


def _steering_lines(card: FeatureCard) -> str:
    if not card.steering:
        return ""
    items = []
    for s in card.steering:
        who = (
            "alone"
            if s["n_features"] == 1
            else f"with {s['n_features'] - 1} other fragility features"
        )
        p = s.get("p_fragile_mean_p")
        items.append(
            f"<li><code>{_e(s['condition'])}</code> (set {who}) vs <code>{_e(s['baseline'])}</code>, "
            f"n = {_e(s.get('n_paired'))} paired seeds: ΔP(fragile) {_estimate(s.get('p_fragile_mean_diff'))}"
            f"{'' if p is None else f' (p = {p:.3g})'}, Δbroken {_estimate(s.get('broken_diff'), pct=True)}, "
            f"Δsuccess {_estimate(s.get('success_diff'), pct=True)}</li>"
        )
    return (
        "<p><b>Steering effect</b> (paired differences, 95% CIs, from the run's summary.json):</p><ul>"
        + "".join(items)
        + "</ul>"
    )


def distribution_svg(cells: dict[str, np.ndarray], width: int = 560, height: int = 180) -> str:
    """Inline SVG: per cell, the per-image mean activations as dots with a median bar and IQR box."""
    names = list(cells)
    top = max([float(v.max()) for v in cells.values() if len(v)] + [1e-9])
    left, bottom, plot_h = 34, 40, height - 52
    step = (width - left - 6) / max(len(names), 1)
    y = lambda v: 8 + plot_h * (1 - v / top)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="activation per cell">']  # fmt: skip
    for t in (0, top / 2, top):
        out.append(f'<line x1="{left}" x2="{width - 4}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 3}" y="{y(t) + 3:.1f}" font-size="9" text-anchor="end">{t:.2g}</text>')  # fmt: skip
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        v, cx = cells[name], left + step * (i + 0.5)
        color = MATERIAL_COLORS.get(name.rsplit("/", 1)[-1], "#555")
        if len(v):
            q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
            out.append(f'<rect x="{cx - step * 0.3:.1f}" y="{y(q3):.1f}" width="{step * 0.6:.1f}" height="{max(y(q1) - y(q3), 1):.1f}" '
                       f'fill="{color}" fill-opacity="0.15" stroke="{color}"/>'
                       f'<line x1="{cx - step * 0.3:.1f}" x2="{cx + step * 0.3:.1f}" y1="{y(med):.1f}" y2="{y(med):.1f}" stroke="{color}" stroke-width="2"/>')  # fmt: skip
            for val, jit in zip(v, rng.uniform(-0.22, 0.22, len(v)), strict=True):
                out.append(
                    f'<circle cx="{cx + jit * step:.1f}" cy="{y(val):.1f}" r="1.8" fill="{color}" fill-opacity="0.7"/>'
                )
        context, _, material = name.rpartition("/")
        out.append(f'<text x="{cx:.1f}" y="{height - bottom + 12}" font-size="10" text-anchor="middle">{_e(context.replace("/", " "))}</text>'
                   f'<text x="{cx:.1f}" y="{height - bottom + 23}" font-size="10" text-anchor="middle" fill="{color}">{_e(material)}</text>'
                   f'<text x="{cx:.1f}" y="{height - bottom + 34}" font-size="9" text-anchor="middle" fill="#777">n={len(v)}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _index(d: Dashboard, cards: dict[int, FeatureCard]) -> str:
    heads = [("feature", "l"), ("kind", "l"), ("prefix", ""), ("material d [95% CI]", ""), ("|d|", ""),
             ("raw Δ fragile − rigid", ""), ("color d", ""), ("fires on", ""), ("on object", ""), ("steered in", "l")]  # fmt: skip
    th = "".join(f'<th data-key="{i}" class="{c}">{_e(h)}</th>' for i, (h, c) in enumerate(heads))
    rows = []
    for e in d.discovery["features"]:
        f = int(e["feature"])
        card = cards.get(f)
        ms = e.get("material_score")
        link = f'<a href="#f{f}">{f}</a>' if card else str(f)
        share = card.object_share if card else None
        steered = ", ".join(sorted({s["condition"] for s in card.steering})) if card else ""
        cells = [(link, f), (f'<span class="kind {_e(e["kind"])}">{_e(e["kind"])}</span>', e["kind"]),
                 (e.get("prefix") or "", e.get("prefix") or 0), (_num(ms) + _ci(e.get("material_score_ci")), ms),
                 (_num(abs(ms) if ms is not None else None, ".2f"), abs(ms or 0)),
                 (_num(e.get("delta"), "+.3f") + _ci(e.get("delta_ci"), "+.3f"), e.get("delta")),
                 (_num(e.get("color_score")), e.get("color_score")), (_pct(float(d.fire_rate[f])), float(d.fire_rate[f])),
                 (_pct(share), -1 if share is None else share), (_e(steered), steered)]  # fmt: skip
        rows.append(f'<tr id="row{f}">' + "".join(
            f'<td data-v="{_e(v if v is not None else "")}" class="{"l" if i in (0, 1, 9) else ""}">{c}</td>'
            for i, (c, v) in enumerate(cells)) + "</tr>")  # fmt: skip
    return f'<table class="sortable" id="index"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _card(d: Dashboard, card: FeatureCard) -> str:
    e = card.effect
    ctx = ", ".join(f"{_e(k)} {_num(v)}" for k, v in (e.get("material_d") or {}).items())
    if card.object_share is None:
        obj = '<p class="verdict muted">Object overlap: not checked (no re-rendered frame).</p>'
    else:
        obj = (f'<p class="verdict {_verdict_class(card)}">{_e(card.verdict.capitalize())}: '
               f'<span class="share">{_pct(card.object_share)}</span> of its activation mass in the top {len(card.frames)} '
               f'frames lies on tokens that overlap the object (object tokens are {_pct(card.object_area)} of the grid, the '
               f'share a feature blind to the object would get); it fires on {_pct(card.coverage)} of those frames\' tokens.</p>')  # fmt: skip
    figs = []
    for fr in card.frames:
        lab = fr.labels
        cap = (f"image {fr.image_id} · {_e(lab.get('color'))} {_e(lab.get('shade') or '')} {_e(lab.get('material'))} "
               f"{_e(lab.get('shape'))}<br>seed {_e(lab.get('seed'))} step {_e(lab.get('step'))} · max {fr.max_act:.3g}"
               + (f" · on object {_pct(fr.object_share)}" if fr.object_share is not None else ""))  # fmt: skip
        if fr.png is not None:
            src = "data:image/png;base64," + base64.b64encode(fr.png).decode()
            figs.append(f'<figure><img src="{src}" alt="feature {card.feature}, image {fr.image_id}">'
                        f'<figcaption>{cap}{"<br>" + _e(fr.note) if fr.note else ""}</figcaption></figure>')  # fmt: skip
        else:
            figs.append(
                f"<figure><figcaption>{cap}<br>{_e(fr.note or 'no frame')}</figcaption></figure>"
            )
    frames = "".join(figs) or '<p class="muted">No image activates this feature.</p>'
    return f"""<div class="card" id="f{card.feature}">
<h3>Feature {card.feature} <span class="kind {_e(e["kind"])}">{_e(e["kind"])}</span>
<span class="muted">prefix {_e(e.get("prefix") or "–")} · fires on {_pct(card.fire_rate)} of tokens</span></h3>
<p>Material effect (weakest context's Cohen's d, fragile − rigid): <b class="d">{_num(e.get("material_score"))}</b>{_ci(e.get("material_score_ci"))};
per context: {ctx}. Raw Δ {_num(e.get("delta"), "+.3f")}{_ci(e.get("delta_ci"), "+.3f")}; color d {_num(e.get("color_score"))}{_ci(e.get("color_score_ci"))}.</p>
{obj}{_steering_lines(card)}
<p><b>Top-activating frames</b> (activation over the {d.grid}×{d.grid} image tokens, dark = 0, bright = the feature's
highest value in these frames; cyan: the object's outline)</p><div class="frames">{frames}</div>
<p><b>Per-image mean activation per color · shade · material cell</b> (dots: images; box: quartiles)</p>
{distribution_svg(card.cells)}</div>"""


def _what_it_shows(d: Dashboard) -> str:
    frag = [c for c in d.cards if c.effect["kind"] == "fragility"]
    n_frag = len(d.discovery.get("fragility", []))
    lines = [
        f"Discovery lists {n_frag} fragility, {len(d.discovery.get('color', []))} color and "
        f"{len(d.discovery.get('shade', []))} shade features (|d| ≥ {d.discovery.get('threshold')} in every context)."
    ]
    checked = [c for c in frag if c.object_share is not None]
    if checked:
        n = {
            v: sum(c.verdict == v for c in checked)
            for v in (
                "on the object",
                "partly on the object",
                "spread over the frame",
                "off the object",
            )
        }
        area = np.mean([c.object_area for c in checked])
        lines.append(
            f"Do the fragility features look at the object's pattern? Of the {len(checked)} shown, <b>{n['on the object']}</b> "
            f"put ≥ {ON_OBJECT:.0%} of their top-frame activation mass on tokens overlapping the object (where its stripes are), "
            f"<b>{n['partly on the object']}</b> at least twice the object's share of tokens ({_pct(float(area))}), "
            f"<b>{n['spread over the frame']}</b> are spread over the frame (firing on ≥ {SPREAD:.0%} of the tokens: they read "
            f"fragility from the whole image, not from the object's patches) and <b>{n['off the object']}</b> sit elsewhere."
        )
        strongest = sorted(checked, key=lambda c: -abs(c.effect.get("material_score") or 0))[:5]
        lines.append("The strongest ones: " + ", ".join(
            f'<a href="#f{c.feature}">{c.feature}</a> (d {_num(c.effect.get("material_score"))}: {c.verdict}, '
            f'{_pct(c.object_share)} on the object)' for c in strongest) + ".")  # fmt: skip
        if n["on the object"] + n["partly on the object"] == 0:
            lines.append(
                "<b>So these fragility features are not visibly about the object's pattern.</b>"
            )
        elif sum(c.verdict in ("on the object", "partly on the object") for c in strongest) == 0:
            lines.append(
                "<b>The strongest fragility features are not about the object's pattern</b>; only weaker ones are."
            )
    elif frag:
        lines.append(
            "Whether the fragility features look at the object is <b>not checked</b>: no frame could be re-rendered."
        )
    return "".join(f"<p>{ln}</p>" for ln in lines)


def render_html(d: Dashboard, title: str = "physteer · SAE feature dashboard") -> str:
    """The whole page as one string."""
    cards = {c.feature: c for c in d.cards}
    cfg = d.sae_config
    counts = ", ".join(
        f"{_e(k)} {v['units']}" for k, v in d.discovery.get("cell_counts", {}).items()
    )
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in d.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="muted">Store <code>{_e(d.store)}</code>: {d.n_rows} token rows of {d.n_images} images ({d.grid}×{d.grid} tokens each).
SAE <code>{_e(d.sae)}</code>: {cfg.get("d_in")} → {cfg.get("n_latents")} latents, k {cfg.get("k")}.
Discovery: {_e(d.discovery_source)}; {d.discovery.get("n_boot")} bootstrap resamples of {_e(d.discovery.get("unit"))}s; images per cell: {counts}.
{f"Steering run: <code>{_e(d.run)}</code>." if d.run else "No steering run given (--run)."}</p>
<h2>What this shows</h2><div class="shows">{_what_it_shows(d)}</div>{notes}
<p class="muted">A token overlaps the object when ≥ {OVERLAP_MIN:.0%} of its pixels show the object (segmentation render of the
re-simulated frame). Effect sizes: Cohen's d of fragile − rigid within each color (and shade); the score is the weakest context's
d, its CI a stratified bootstrap over images.</p>
<h2>Feature index</h2><p class="muted">Click a column header to sort. Features with a card below link to it.</p>
{_index(d, cards)}
<h2>Features</h2>{"".join(_card(d, c) for c in d.cards)}
<script>{SORT_JS}</script></body></html>
"""


def write_dashboard(d: Dashboard, out_dir: Any) -> Any:
    """Write OUT/dashboard.html atomically; returns its path."""
    from pathlib import Path

    from storage import write_text

    return write_text(Path(out_dir) / "dashboard.html", render_html(d))
