"""The demo's report (`physteer demo`, studies.demo.run): report.md, summary.json and report.html
from the stages' results; nothing is computed here but the layout."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from storage import write_json, write_text


def write_report(
    cfg,
    root,
    metrics,
    discovery,
    control,
    steering,
    sarm,
    probe_rows,
    verdict,
    timings,
    wall,
    vla=None,
) -> Path:
    """report.md, summary.json and report.html of a finished demo in `root`; returns report.md's path."""
    from reports.steering import markdown_table, specificity_markdown
    from studies.demo.report_html import write_demo_html
    from studies.world_model_report import probe_table_markdown

    md = [
        f"# physteer demo report ({cfg.model})",
        "",
        f"Wall time {wall / 60:.1f} min. Every figure: value [95% CI] (n). The same with figures, videos "
        "and what each section shows: [report.html](report.html).",
        "",
    ]
    md += [
        "## SAE",
        "",
        f"FVE {metrics.fve:.3f}, L0 {metrics.l0:.1f}, dead latents {metrics.dead_fraction:.1%} "
        f"(n={metrics.n} rows).",
        "",
    ]
    md += [
        "## Decorrelated discovery",
        "",
        f"Fragility features: {discovery.get('fragility')}; color features (excluded): {discovery.get('color')}.",
        "",
        "![discovery](discovery/discovery.png)",
        "",
        "Control: the same collection, SAE and discovery (threshold |d| ≥ "
        f"{control['threshold']:g} in every context) on {control['model']}: fragility features "
        f"{control['fragility'] or 'none'} (expected none); its strongest latent's material score is "
        f"{control['strongest_material_score']:+.2f} (SAE FVE {control['fve']:.3f}).",
        "",
    ]
    for material, summary in steering.items():
        md += [
            f"## Steering on {material} objects ({cfg.seeds} paired seeds)",
            "",
            markdown_table(summary["conditions"], summary["baseline"]),
            "",
            _norms_markdown(summary.get("steering_norms", {})),
            "",
            f"![dose response](steer_{material}/dose_response.png)",
            "",
        ]
        if spec := specificity_markdown(summary.get("specificity", {})):
            md += [
                "Specificity: each steered condition minus each random-direction control, paired "
                "by seed (a control's own small effect explains a steered effect only if this is ~0).",
                "",
                spec,
                "",
            ]
    md += [
        "## SARM monitor",
        "",
        sarm_markdown(sarm),
        "",
        "![roc](sarm/roc.png) ![sweep](sarm/sweep.png)",
        "",
    ]
    md += [
        "## World-model probe (holding state → after release)",
        "",
        probe_table_markdown(probe_rows),
        "",
        verdict,
        "",
    ]
    if vla is not None:
        md += vla_markdown(vla)
    md += ["## Stage timings", ""] + [f"- {k}: {v:.0f} s" for k, v in timings.items()]
    path = write_text(root / "report.md", "\n".join(md))
    summary = {
        "model": cfg.model, "seeds": cfg.seeds,
        "sae": {"fve": metrics.fve, "l0": metrics.l0, "dead_fraction": metrics.dead_fraction, "n": metrics.n,
                "n_dead": metrics.n_dead},
        "discovery": _discovery_summary(discovery),
        "discovery_control": control,
        "steering": steering, "sarm": sarm.get("summary"), "sarm_perturbations": _sarm_order(sarm),
        "probe": [asdict(r) for r in probe_rows], "probe_verdict": verdict, "timings_s": timings, "wall_s": wall,
        "vla": None if vla is None else {"closed_loop": vla["closed_loop"], "steering": vla["steering"].get("dose_response"),
                                         "neurons": vla["steering"].get("neurons"), "sarm": vla["sarm"].get("summary")},
    }  # fmt: skip
    write_json(root / "summary.json", summary)
    # The feature dashboard, when the demo writes one to root/dashboard/dashboard.html, is linked.
    write_demo_html(root, json.loads(json.dumps(summary, default=str)))
    return path


def _discovery_summary(discovery: dict[str, Any], top: int = 8) -> dict[str, Any]:
    """The discovery figures the reports show: feature lists, threshold, n, and the top
    features (fragility first) with their effect sizes and CIs."""
    features = {f["feature"]: f for f in discovery.get("features", [])}
    ids = list(dict.fromkeys([*discovery.get("fragility", []), *features]))[:top]
    keys = (
        "feature",
        "kind",
        "material_score",
        "material_score_ci",
        "color_score",
        "color_score_ci",
    )
    return {"fragility": discovery.get("fragility"), "color": discovery.get("color"),
            "threshold": discovery.get("threshold"), "unit": discovery.get("unit"), "n_units": discovery.get("n_units"),
            "top": [{k: features[i].get(k) for k in keys} for i in ids if i in features]}  # fmt: skip


def _sarm_order(doc: dict[str, Any]) -> list[str]:
    """The SARM perturbations (resolved names, e.g. sae:17:50@10) in the order given."""
    done = list((doc.get("summary") or {}).get("perturbations", {}))
    given = [p for p in (doc.get("perturbations") or {}).values() if p in done]
    return given + [p for p in done if p not in given]


def _rate(r: dict[str, Any]) -> str:
    if not r or r.get("n", 0) == 0:
        return "–"
    return f"{r['rate']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] (n={r['n']})"


def sarm_markdown(doc: dict[str, Any]) -> str:
    """SARM figures as Markdown: clean false positives per scorer, then each perturbation × scorer."""
    summary = doc.get("summary", {})
    from studies.sarm.tables import promise_text

    lines = [
        "| scorer | threshold | FPR (episodes) | FPR (steps) | promise |",
        "|---|---|---|---|---|",
    ]
    for s, r in summary.get("clean", {}).items():
        lines.append(f"| {s} | {r['threshold']:.4g} | {_rate(r['fpr_episode'])} | {_rate(r['fpr_step'])} | "
                     f"{promise_text(r)} |")  # fmt: skip
    lines += [
        "",
        "| perturbation | scorer | detection | veto before onset | AUC [95% CI] | fragile broken off | fragile broken on |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond in _sarm_order(doc):
        per = summary["perturbations"][cond]
        for s in summary.get("clean", {}):
            r, a = per[s], per[s]["auc"]
            auc = (
                "–"
                if a.get("auc") is None or a["auc"] != a["auc"]
                else f"{a['auc']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}]"
            )
            ok = (summary["clean"][s].get("promise") or {}).get("calibrated") is not False
            detection, broken_on = (
                _rate(r[k]) if ok else "not calibrated" for k in ("detection", "broken_fragile_on")
            )
            lines.append(f"| {cond} | {s} | {detection} | {_rate(r['early_veto'])} | {auc} | "
                         f"{_rate(per['broken_fragile_off'])} | {broken_on} |")  # fmt: skip
    from studies.sarm.sweep_report import sweep_markdown  # the harm-based table (coverage)

    return "\n".join([*lines, "", sweep_markdown(summary)])


def _norms_markdown(norms: dict[str, float]) -> str:
    if not norms:
        return ""
    sizes = ", ".join(f"{k} {v:.2f}" for k, v in norms.items())
    return (
        f"Steering size, mean per-token ||Δh|| on stored image tokens in units of ||dom||: {sizes}."
    )


def vla_markdown(vla: dict[str, Any]) -> list[str]:
    """The report's VLA section (markdown lines)."""
    md = ["## VLA mode: the tiny VLA's own action tokens move the arm", ""]
    s = vla["closed_loop"]
    md += ["| objects | n | success | intact | peak grip force (N) |", "|---|---|---|---|---|"]
    for material, c in s["materials"].items():
        md.append(f"| {material} | {c['n']} | {_est(c['success'], pct=True)} | {_est(c['intact'], pct=True)} | "
                  f"{_est(c['peak_grip_force'])} |")  # fmt: skip
    for material, c in s.get("control", {}).get("materials", {}).items():
        md.append(f"| {material}, pattern removed, unbreakable | {c['n']} | {_est(c['success'], pct=True)} | "
                  f"{_est(c['intact'], pct=True)} | {_est(c['peak_grip_force'])} |")  # fmt: skip
    if s.get("control"):
        md += ["", f"Rigid − fragile peak grip force: {_est(s['grip_gap'])} N trained, "
                   f"{_est(s['control']['grip_gap'])} N with the pattern removed "
                   f"(ratio {_est(s['control']['gap_ratio'])}; plain objects unbreakable, so no break cuts their "
                   f"grip short); the VLA's mean closing command: gap {_est(s['command_gap'])} trained, ratio {_est(s['control']['command_gap_ratio'])} "
                   "with the pattern removed.", ""]  # fmt: skip
    st = vla["steering"]
    md += ["### Graded steering (fragile objects, paired seeds)", "",
           "| condition | n | peak grip (N) | carry speed (m/s) | broken |", "|---|---|---|---|---|"]  # fmt: skip
    for r in st.get("conditions", []):
        md.append(f"| {r['condition']} | {r['n']} | {_est(r.get('peak_grip_force'))} | "
                  f"{_est(r.get('carry_speed'))} | {_est(r.get('broken'), pct=True)} |")  # fmt: skip
    dose = st.get("dose_response", {})
    if dose:
        md += [
            "",
            f"SAE dose response: Spearman ρ {dose.get('spearman_rho')} over strengths {dose.get('strengths')}.",
            "",
        ]
    md += ["![VLA dose response](vla/study/dose_response.png)", ""]
    md += [
        "### SARM on the VLA (TA2 at step 10)",
        "",
        sarm_markdown(vla["sarm"]),
        "",
        "![roc](vla/sarm/roc.png)",
        "",
    ]
    return md


def _est(e: dict[str, Any] | None, pct: bool = False) -> str:
    if not e or e.get("value") is None:
        return "–"
    f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:.3g}")
    return f"{f(e['value'])} [{f(e['low'])}, {f(e['high'])}]"
