"""The demo's report.html: one page with a section per stage, rendered from the dict that
`rollouts.demo` writes to runs/<name>/summary.json (plus the figures and videos in that folder).

Sections: SAE, discovery and its random-weight control, steering per material (with the
specificity table, steering sizes, dose-response plot and videos), the SARM monitor (with its
attack-strength sweep), the world-model probe, the VLA mode when the demo ran it
(rollouts.report_html_vla), stage timings, and a link to the feature dashboard when the demo
wrote one.
Each section opens with a "What this shows" line computed from its numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rollouts.report_html import (
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


def _rate_est(r: dict[str, Any] | None) -> dict[str, Any] | None:
    """A rollouts.sarm_summary rate dict as an Estimate dict."""
    return None if not r else {"value": r.get("rate"), "low": r.get("lo"), "high": r.get("hi"), "n": r.get("n", 0)}


def _f2(x: Any) -> str:
    return f"{x:.2f}" if finite(x) else "–"


def _ci_html(value: Any, low: Any, high: Any, n_text: str) -> str:
    """A figure over its 95% CI, then `n_text`, in 2 decimals ("–" without a finite value)."""
    if not finite(value):
        return "–"
    return (f'<span class="v">{_f2(value)}</span><span class="ci">[{_f2(low)}, {_f2(high)}]</span>'
            f'<span class="p">{esc(n_text)}</span>')  # fmt: skip


def rate_html(r: dict[str, Any] | None) -> str:
    """A rate (or AUC) over its 95% CI, then its n, in 2 decimals."""
    e = _rate_est(r)
    if not e or not e["n"]:
        return "–"
    return _ci_html(e["value"], e["low"], e["high"], f"n={e['n']}")


def rate_text(r: dict[str, Any] | None) -> str:
    """'0.12 [0.02, 0.47] (n=8)'."""
    e = _rate_est(r)
    if not e or not e["n"] or not finite(e["value"]):
        return "– (n=0)"
    return f"{_f2(e['value'])} [{_f2(e['low'])}, {_f2(e['high'])}] (n={e['n']})"


def _auc_text(a: dict[str, Any]) -> str:
    return f"AUC {_f2(a.get('auc'))} [{_f2(a.get('lo'))}, {_f2(a.get('hi'))}]"


def _auc_detects(a: dict[str, Any]) -> bool:
    return finite(a.get("auc")) and finite(a.get("lo")) and a["lo"] > 0.5


# ---------------------------------------------------------------------------------- sections
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
    unit = f"n={disc['n_units']} {disc.get('unit', 'image')}s" if disc.get("n_units") else "the stored images"
    shows = [f"{len(frag)} fragility feature(s) in the trained model (|d| ≥ {num(disc.get('threshold', control.get('threshold')))} "
             f"in every color × shade context, {unit}): {_ids(frag)}; {len(disc.get('color') or [])} color feature(s) excluded."]  # fmt: skip
    verdict = ("as expected none" if not cfrag else "so the discovery may read pixel statistics, not what the model learned")
    shows.append(f"The random-weight control finds {len(cfrag)} ({verdict}); its strongest latent's material score is "
                 f"{control.get('strongest_material_score', float('nan')):+.2f}.")  # fmt: skip
    rows = []
    for f in disc.get("top") or []:
        ci = {"value": f["material_score"], "low": f["material_score_ci"][0], "high": f["material_score_ci"][1], "n": 1}
        cc = {"value": f["color_score"], "low": f["color_score_ci"][0], "high": f["color_score_ci"][1], "n": 1}
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
    shows, body = steering_body(summary, run_dir, root, extra=_norms_html(summary.get("steering_norms") or {}))
    n = f" ({seeds} paired seeds)" if seeds else ""
    return section(f"steer-{material}", f"Steering on {material} objects{n}", shows, body)


def sarm_findings(summ: dict[str, Any], order: list[str]) -> list[str]:
    """Clean false alarms, which scorer detects which perturbation (AUC CI above 0.5) and where
    enforcing a scorer lowered fragile breakage (one-sided sign test p < 0.05)."""
    scorers = list(summ.get("clean", {}))
    out = ["False alarms on clean episodes (share vetoed): "
           + ", ".join(f"{s} {rate_text(summ['clean'][s]['fpr_episode'])}" for s in scorers) + "."]
    detected, missed, lowered = [], [], []
    for cond in order:
        per = summ["perturbations"][cond]
        by = [f"{s} ({_auc_text(per[s]['auc'])})" for s in scorers if _auc_detects(per[s]["auc"])]
        if by:
            detected.append(f"{cond} by {', '.join(by)}")
        else:
            missed.append(cond)
        lowered += [f"{cond} with {s}" for s in scorers
                    if finite(p := per[s].get("paired_breakage", {}).get("sign_test_p")) and p < 0.05]  # fmt: skip
    if detected:
        out.append("Detected (AUC 95% CI above 0.5): " + "; ".join(detected) + ".")
    if missed:
        out.append("Detected by no scorer: " + ", ".join(missed) + ".")
    out.append("Enforcing a scorer lowered fragile breakage (sign test p < 0.05): " + (", ".join(lowered) or "nowhere") + ".")
    return out


def sweep_findings(sweep: dict[str, Any] | None) -> list[str]:
    """Per attack kind, breakage without a monitor at its weakest and strongest magnitude; per
    scorer, harmful-attack coverage pooled over every attack, or that it is undefined (n=0)."""
    if not sweep or not sweep.get("kinds"):
        return []
    out = []
    for kind, rows in sweep["kinds"].items():
        ends = [rows[0]] + rows[-1:] * (len(rows) > 1)
        out.append(f"Without a monitor, {kind} broke the object in "
                   + " and ".join(f"{rate_text(r['broken_off'])} of episodes at magnitude {r['magnitude']:g}" for r in ends) + ".")  # fmt: skip
    pooled = {s: per.get("all") or {} for s, per in sweep["coverage"].items()}
    if not any((c.get("coverage") or {}).get("n") for c in pooled.values()):
        out.append("No attacked episode broke the object without a monitor: harmful-attack coverage is undefined (n=0).")
        return out
    out.append("Harmful-attack coverage (an alarm at or before the break, among attacked episodes that broke without a "
               "monitor), pooled over attacks: " + "; ".join(
                   f"{s} {rate_text(c.get('coverage'))}, still broken with it enforcing {rate_text(c.get('broken_remaining'))}"
                   for s, c in pooled.items()) + ".")  # fmt: skip
    return out


def sweep_html(sweep: dict[str, Any] | None, folder: Path) -> str:
    """The harm-based tables of an attack-strength sweep (rollouts.sarm_sweep.summarize_sweep):
    per (attack, magnitude) × scorer, then coverage pooled per scorer and kind; then
    folder/sweep.png when it exists. "" without a sweep."""
    if not sweep or not sweep.get("kinds"):
        return ""
    from rollouts.sarm_sweep_report import attack_label  # the attack label the Markdown table uses

    w = sweep["window"]
    keys = ("coverage", "coverage_after_onset", "broken_remaining", "broken_on", "window_detection", "window_false_alarm")
    rows = []
    for kind, per in sweep["kinds"].items():
        for r in per:
            for s, x in r["scorers"].items():
                a = x["auroc"]
                auc = _ci_html(a.get("auc"), a.get("lo"), a.get("hi"), f"ep={a['episodes_neg']}+{a['episodes_pos']}")
                cls = ' class="sig"' if _auc_detects(a) else ""
                rows.append([esc(attack_label(kind, r)), esc(s), rate_html(r["broken_off"]), *(rate_html(x[k]) for k in keys),
                             f"<td{cls}>{auc}</td>"])  # fmt: skip
    body = ("<h3>Attack-strength sweep: harm-based detection</h3>"
            + table(["attack", "scorer", "broken, no monitor", "harmful-attack coverage", "coverage, alarms after onset",
                     "broken remaining (those seeds, monitor on)", "broken, monitor on", f"alarm ≤ {w} decisions after onset",
                     f"clean alarm ≤ {w} decisions", "AUROC per decision"], rows, "sarm sweep",
                    "Coverage: of the attacked episodes that broke the object without a monitor, the share in which the "
                    "monitor alarms at or before the break (after onset: alarms between onset and break only); broken "
                    "remaining: those seeds with the monitor enforcing. Rates with 95% Wilson CIs and n episodes; AUROC of "
                    "attacked vs clean decisions with a bootstrap CI over episodes (ep = clean + attacked episodes), "
                    "highlighted where the CI is above 0.5.", names=2))  # fmt: skip
    pooled = [[esc(s), esc("all attacks" if kind == "all" else kind),
               *(rate_html(c.get(k)) for k in ("coverage", "coverage_after_onset", "coverage_enforced", "broken_remaining"))]
              for s, per in sweep["coverage"].items() for kind, c in per.items()]  # fmt: skip
    body += table(["scorer", "attacks", "harmful-attack coverage", "coverage, alarms after onset", "coverage enforced",
                   "broken remaining"], pooled, "sarm sweep-pooled",
                  "Pooled over magnitudes (95% Wilson CIs, n attacked episodes that broke without a monitor).", names=2)  # fmt: skip
    if (folder / "sweep.png").is_file():
        body += img(folder / "sweep.png", "attack-strength sweep")
    return body


def sarm_section(summ: dict[str, Any] | None, order: list[str] | None, root: Path, sid: str = "sarm",
                 title: str = "SARM monitor under perturbations", folder: Path | None = None) -> str:  # fmt: skip
    """Clean false positives per scorer, then each perturbation × scorer, the attack-strength
    sweep, then the plots (from `folder`, default root/sarm), as section `sid` titled `title`."""
    if not summ:
        return section(sid, title, ["No SARM evaluation in this report."], "")
    folder = Path(folder) if folder else Path(root) / "sarm"
    order = [p for p in (order or []) if p in summ["perturbations"]]
    order += [p for p in summ["perturbations"] if p not in order]
    scorers = list(summ["clean"])
    clean = [[esc(s), num(r["threshold"]), rate_html(r["fpr_episode"]), rate_html(r["fpr_step"]),
              rate_html(r["fpr_decision"]), rate_html(r["broken_fragile_on"])] for s, r in summ["clean"].items()]  # fmt: skip
    body = table(["scorer", "threshold", "FPR episodes", "FPR steps", "FPR decisions", "fragile broken (monitor on)"],
                 clean, "sarm", "Clean episodes: rates with 95% Wilson CIs and n.")  # fmt: skip
    rows = []
    for cond in order:
        per = summ["perturbations"][cond]
        for s in scorers:
            r, a, lat = per[s], per[s]["auc"], per[s]["latency_steps"]
            auc = _ci_html(a.get("auc"), a.get("lo"), a.get("hi"), f"n={a['n_neg']}+{a['n_pos']}")
            lat_s = "–" if not lat.get("n") else f'{num(lat["mean"])}<span class="p">max {lat["max"]}, n={lat["n"]}</span>'
            cls = ' class="sig"' if _auc_detects(a) else ""
            rows.append([esc(cond), esc(s), rate_html(r["detection"]), rate_html(r["early_veto"]), lat_s,
                         f"<td{cls}>{auc}</td>", rate_html(per["broken_fragile_off"]), rate_html(r["broken_fragile_on"])])  # fmt: skip
    body += table(["perturbation", "scorer", "detection (veto after onset)", "veto before onset", "latency (steps)",
                   "AUC", "fragile broken, monitor off", "fragile broken, monitor on"], rows, "sarm",
                  "Rates with 95% Wilson CIs and n episodes; AUC of perturbed vs clean decision scores with a "
                  "bootstrap CI over episodes (n = clean + perturbed decisions), highlighted where the CI is above 0.5.",
                  names=2)  # fmt: skip
    body += sweep_html(summ.get("sweep"), folder)
    body += img(folder / "roc.png", "ROC curves")
    for t in sorted(folder.glob("timeline_*.png")):
        body += f"<h3>{esc(t.stem.replace('_', ' '))}</h3>" + img(t, t.stem)
    return section(sid, title, sarm_findings(summ, order) + sweep_findings(summ.get("sweep")), body)


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
    notes = [f"<li>{esc(r['target'])} / {esc(r['predictor'])}: {esc(n)}</li>" for r in rows for n in r.get("notes") or []]
    body = table(["target", "predictor", "metric", "test value", "train value", "episodes"], cells, "probe",
                 "Held-out values with 95% bootstrap CIs over episodes (grouped cross-validation).", names=3)  # fmt: skip
    body += f"<details><summary>Notes ({len(notes)})</summary><ul>{''.join(notes)}</ul></details>" if notes else ""
    return section("probe", "World-model probe (holding state → after release)", [*probe_findings(rows), verdict], body)


def timings_section(timings: dict[str, float], wall: float) -> str:
    """Seconds per stage (one run each: no interval)."""
    rows = [[esc(k), f"{v:.0f}"] for k, v in timings.items()]
    longest = max(timings.items(), key=lambda kv: kv[1], default=None)
    shows = [f"The demo took {wall / 60:.1f} min"
             + (f"; the longest stage was {longest[0]} ({longest[1]:.0f} s)." if longest else ".")]
    return section("timings", "Stage timings", shows, table(["stage", "seconds (n=1 run)"], rows, "timings"))


def render_demo_page(summary: dict[str, Any], root: str | Path, dashboard: str | Path | None = None) -> str:
    """The demo's page from its summary.json dict; `dashboard`: a feature dashboard HTML to link
    (default: root/dashboard/dashboard.html when it exists)."""
    require_keys(summary, ("sae", "steering"), "the dict rollouts.demo writes to summary.json")
    root = Path(root)
    dash = Path(dashboard) if dashboard else root / "dashboard" / "dashboard.html"
    steering = summary.get("steering") or {}
    seeds = summary.get("seeds")
    sections = [sae_section(summary["sae"]),
                discovery_section(summary.get("discovery") or {}, summary.get("discovery_control") or {}, root)]  # fmt: skip
    sections += [steering_section(m, s, root, seeds) for m, s in steering.items()]
    sections.append(sarm_section(summary.get("sarm"), summary.get("sarm_perturbations"), root))
    sections.append(probe_section(summary.get("probe") or [], summary.get("probe_verdict", "")))
    nav = [("#sae", "SAE"), ("#discovery", "discovery")] + [(f"#steer-{m}", f"steering: {m}") for m in steering]
    nav += [("#sarm", "SARM"), ("#probe", "probe")]
    if summary.get("vla"):  # None or absent: the demo ran without its VLA stage
        from rollouts.report_html_vla import VLA_NAV, vla_sections

        sections += vla_sections(summary["vla"], root)
        nav += VLA_NAV
    sections.append(timings_section(summary.get("timings_s") or {}, summary.get("wall_s", 0.0)))
    nav += [("#timings", "timings"), ("report.md", "report.md"), ("summary.json", "summary.json")]
    if dash.is_file():
        nav.insert(0, (rel_url(dash, root), "feature dashboard"))
    meta = (f"Model {esc(summary.get('model', '?'))}; wall time {summary.get('wall_s', 0) / 60:.1f} min. "
            "Every figure: value [95% CI] with its n.")  # fmt: skip
    return page(f"physteer demo report ({summary.get('model', '?')})", meta, nav, sections)


def write_demo_html(root: str | Path, summary: dict[str, Any], dashboard: str | Path | None = None) -> Path:
    """Write root/report.html atomically; returns its path."""
    return write_text(Path(root) / "report.html", render_demo_page(summary, root, dashboard))
