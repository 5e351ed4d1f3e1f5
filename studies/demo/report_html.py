"""The demo's report.html: one page with a section per stage, rendered from the dict that
`studies.demo.run` writes to runs/<name>/summary.json (plus the figures and videos in that folder).

Sections: SAE, discovery and its random-weight control, steering per material (with the
specificity table, steering sizes, dose-response plot and videos), the SARM monitor (with its
attack-strength sweep), the world-model probe, the VLA mode when the demo ran it
(studies.demo.report_html_vla), stage timings, and a link to the feature dashboard when the demo
wrote one.
Each section opens with a "What this shows" line computed from its numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reports.html import (
    esc,
    est_html,
    finite,
    img,
    num,
    page,
    rel_url,
    require_keys,
    section,
    steering_body,
    table,
)
from storage import write_text
from studies.demo.report_html_sarm import sarm_section


def sae_section(sae: dict[str, Any]) -> str:
    """FVE, L0 and dead latents of the demo's SAE."""
    n = sae.get("n")
    n_text = f"n={n} activation rows" if n else "all stored rows"
    shows = [f"The SAE reconstructs {100 * sae['fve']:.1f}% of the activations' variance (FVE) with {num(sae['l0'])} "
             f"active latents per row on average; {num(sae['dead_fraction'], pct=True)} of its latents never fire "
             f"(whole-set figures on {n_text}, so no interval)."]  # fmt: skip
    rows = [["FVE (fraction of variance explained)", num(sae["fve"]), str(n or "–")],
            ["L0 (mean active latents per row)", num(sae["l0"]), str(n or "–")],
            ["dead latents (never fire)", f"{num(sae['dead_fraction'], pct=True)}"
             + (f' <span class="p">{sae["n_dead"]} latents</span>' if "n_dead" in sae else ""), str(n or "–")]]  # fmt: skip
    return section("sae", "SAE", shows, table(["metric", "value", "n rows"], rows, "sae"))


def discovery_section(disc: dict[str, Any], control: dict[str, Any], root: Path) -> str:
    """Fragility features found in the trained model and in its random-weight control."""
    frag, cfrag = disc.get("fragility") or [], control.get("fragility") or []
    unit = (
        f"n={disc['n_units']} {disc.get('unit', 'image')}s"
        if disc.get("n_units")
        else "the stored images"
    )
    shows = [f"{len(frag)} fragility feature(s) in the trained model (|d| ≥ {num(disc.get('threshold', control.get('threshold')))} "
             f"in every color × shade context, {unit}): {_ids(frag)}; {len(disc.get('color') or [])} color feature(s) excluded."]  # fmt: skip
    verdict = (
        "as expected none"
        if not cfrag
        else "so the discovery may read pixel statistics, not what the model learned"
    )
    shows.append(f"The random-weight control finds {len(cfrag)} ({verdict}); its strongest latent's material score is "
                 f"{control.get('strongest_material_score', float('nan')):+.2f}.")  # fmt: skip
    rows = []
    for f in disc.get("top") or []:
        ci = {
            "value": f["material_score"],
            "low": f["material_score_ci"][0],
            "high": f["material_score_ci"][1],
            "n": 1,
        }
        cc = {
            "value": f["color_score"],
            "low": f["color_score_ci"][0],
            "high": f["color_score_ci"][1],
            "n": 1,
        }
        rows.append([f"f{f['feature']}", esc(f["kind"]), est_html(ci, signed=True), est_html(cc, signed=True),
                     str(disc.get("n_units", "–"))])  # fmt: skip
    body = ""
    if rows:
        body += table(["feature", "kind", "material d (weakest context)", "color d", "n images"], rows, "discovery",
                      "Signed Cohen's d of fragile vs rigid (and red vs blue) in the weakest context, with its "
                      "cluster-bootstrap 95% CI over images.", names=2)  # fmt: skip
    body += img(root / "discovery" / "discovery.png", "discovery: group means")
    body += (f"<p>Control: the same collection, SAE and discovery on {esc(control.get('model', '?'))} "
             f"(SAE FVE {num(control.get('fve'))}): fragility features {esc(cfrag or 'none')}.</p>")  # fmt: skip
    return section("discovery", "Discovery and its random-weight control", shows, body)


def _ids(features: list[int], most: int = 10) -> str:
    if not features:
        return "none"
    more = f" and {len(features) - most} more" if len(features) > most else ""
    return ", ".join(f"f{i}" for i in features[:most]) + more


def _norms_html(norms: dict[str, float]) -> str:
    if not norms:
        return ""
    rows = [[esc(k), num(v)] for k, v in norms.items()]
    return ("<h3>Steering size</h3>" + table(["condition", "mean per-token ||Δh|| / ||dom||"], rows, "norms",
            "On the stored image tokens of this material (a deterministic measurement, no interval)."))  # fmt: skip


def steering_section(material: str, summary: dict[str, Any], root: Path, seeds: int | None) -> str:
    """One material's steering experiment (its run folder is root/steer_<material>)."""
    run_dir = root / f"steer_{material}"
    shows, body = steering_body(
        summary, run_dir, root, extra=_norms_html(summary.get("steering_norms") or {})
    )
    n = f" ({seeds} paired seeds)" if seeds else ""
    return section(f"steer-{material}", f"Steering on {material} objects{n}", shows, body)


def probe_findings(rows: list[dict[str, Any]]) -> list[str]:
    """Per target: does h_t beat the labels-only baseline (its CI above the baseline's)?"""
    by = {(r["target"], r["predictor"]): r for r in rows}
    above, not_above = [], []
    for t in dict.fromkeys(r["target"] for r in rows):
        h, lab = by.get((t, "h_t (activations)")), by.get((t, "labels only"))
        if not h or not lab or not finite(h["value"]) or not finite(lab["value"]):
            continue
        text = (f"{t} ({h['metric']} {num(h['value'])} [{num(h['low'])}, {num(h['high'])}] vs "
                f"{num(lab['value'])} [{num(lab['low'])}, {num(lab['high'])}], n={h['n_episodes']} episodes)")  # fmt: skip
        if finite(lab["high"]) and finite(h["low"]) and h["low"] > lab["high"]:
            above.append(text)
        else:
            not_above.append(text)
    out = []
    if above:
        out.append("h_t beats labels only (CIs apart) for " + "; ".join(above) + ".")
    if not_above:
        out.append("h_t does not clearly beat labels only for " + "; ".join(not_above) + ".")
    return out or ["No target could be evaluated (no variation in the outcomes)."]


def probe_section(rows: list[dict[str, Any]], verdict: str) -> str:
    """The world-model probe table (test values with CIs, train values, episodes)."""
    cells = [[esc(r["target"]), esc(r["predictor"]), esc(r["metric"]),
              est_html({"value": r["value"], "low": r["low"], "high": r["high"], "n": r["n_episodes"]}),
              num(r.get("train_value")), str(r["n_episodes"])] for r in rows]  # fmt: skip
    notes = [
        f"<li>{esc(r['target'])} / {esc(r['predictor'])}: {esc(n)}</li>"
        for r in rows
        for n in r.get("notes") or []
    ]
    body = table(["target", "predictor", "metric", "test value", "train value", "episodes"], cells, "probe",
                 "Held-out values with 95% bootstrap CIs over episodes (grouped cross-validation).", names=3)  # fmt: skip
    body += (
        f"<details><summary>Notes ({len(notes)})</summary><ul>{''.join(notes)}</ul></details>"
        if notes
        else ""
    )
    return section(
        "probe",
        "World-model probe (holding state → after release)",
        [*probe_findings(rows), verdict],
        body,
    )


def timings_section(timings: dict[str, float], wall: float) -> str:
    """Seconds per stage (one run each: no interval)."""
    rows = [[esc(k), f"{v:.0f}"] for k, v in timings.items()]
    longest = max(timings.items(), key=lambda kv: kv[1], default=None)
    shows = [
        f"The demo took {wall / 60:.1f} min"
        + (f"; the longest stage was {longest[0]} ({longest[1]:.0f} s)." if longest else ".")
    ]
    return section(
        "timings", "Stage timings", shows, table(["stage", "seconds (n=1 run)"], rows, "timings")
    )


def render_demo_page(
    summary: dict[str, Any], root: str | Path, dashboard: str | Path | None = None
) -> str:
    """The demo's page from its summary.json dict; `dashboard`: a feature dashboard HTML to link
    (default: root/dashboard/dashboard.html when it exists)."""
    require_keys(summary, ("sae", "steering"), "the dict studies.demo.run writes to summary.json")
    root = Path(root)
    dash = Path(dashboard) if dashboard else root / "dashboard" / "dashboard.html"
    steering = summary.get("steering") or {}
    seeds = summary.get("seeds")
    sections = [sae_section(summary["sae"]),
                discovery_section(summary.get("discovery") or {}, summary.get("discovery_control") or {}, root)]  # fmt: skip
    sections += [steering_section(m, s, root, seeds) for m, s in steering.items()]
    sections.append(sarm_section(summary.get("sarm"), summary.get("sarm_perturbations"), root))
    sections.append(probe_section(summary.get("probe") or [], summary.get("probe_verdict", "")))
    nav = [("#sae", "SAE"), ("#discovery", "discovery")] + [
        (f"#steer-{m}", f"steering: {m}") for m in steering
    ]
    nav += [("#sarm", "SARM"), ("#probe", "probe")]
    if summary.get("vla"):  # None or absent: the demo ran without its VLA stage
        from studies.demo.report_html_vla import VLA_NAV, vla_sections

        sections += vla_sections(summary["vla"], root)
        nav += VLA_NAV
    sections.append(timings_section(summary.get("timings_s") or {}, summary.get("wall_s", 0.0)))
    nav += [("#timings", "timings"), ("report.md", "report.md"), ("summary.json", "summary.json")]
    if dash.is_file():
        nav.insert(0, (rel_url(dash, root), "feature dashboard"))
    meta = (f"Model {esc(summary.get('model', '?'))}; wall time {summary.get('wall_s', 0) / 60:.1f} min. "
            "Every figure: value [95% CI] with its n.")  # fmt: skip
    return page(f"physteer demo report ({summary.get('model', '?')})", meta, nav, sections)


def write_demo_html(
    root: str | Path, summary: dict[str, Any], dashboard: str | Path | None = None
) -> Path:
    """Write root/report.html atomically; returns its path."""
    return write_text(Path(root) / "report.html", render_demo_page(summary, root, dashboard))
