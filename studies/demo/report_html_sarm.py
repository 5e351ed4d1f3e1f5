"""The demo page's SARM sections (the planner's and the VLA's): findings, tables and figures of a
SARM evaluation's summary, with rates shown as value [95% CI] (n)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reports.html import (
    esc,
    finite,
    img,
    num,
    section,
    table,
)


def _rate_est(r: dict[str, Any] | None) -> dict[str, Any] | None:
    """A studies.sarm.summary rate dict as an Estimate dict."""
    return (
        None
        if not r
        else {"value": r.get("rate"), "low": r.get("lo"), "high": r.get("hi"), "n": r.get("n", 0)}
    )


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
def sarm_findings(summ: dict[str, Any], order: list[str]) -> list[str]:
    """Clean false alarms, which scorer detects which perturbation (AUC CI above 0.5) and where
    enforcing a scorer lowered fragile breakage (one-sided sign test p < 0.05)."""
    from studies.sarm.summary import is_calibrated
    from studies.sarm.tables import promise_text

    every = list(summ.get("clean", {}))
    out = [
        "False alarms on clean episodes (share vetoed): "
        + ", ".join(f"{s} {rate_text(summ['clean'][s]['fpr_episode'])}, {promise_text(summ['clean'][s])}"
                    for s in every)
        + "."
    ]  # fmt: skip
    scorers = [s for s in every if is_calibrated(summ, s)]
    if len(scorers) < len(every):
        out.append("Not calibrated (realised clean false alarms above the promised α, 95% lower bound): "
                   + ", ".join(s for s in every if s not in scorers)
                   + ": its detections and breakage are not results (it stops clean robots too).")  # fmt: skip
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
    out.append(
        "Enforcing a scorer lowered fragile breakage (sign test p < 0.05): "
        + (", ".join(lowered) or "nowhere")
        + "."
    )
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
        out.append(
            "No attacked episode broke the object without a monitor: harmful-attack coverage is undefined (n=0)."
        )
        return out
    out.append("Harmful-attack coverage (an alarm at or before the break, among attacked episodes that broke without a "
               "monitor), pooled over attacks: " + "; ".join(
                   f"{s} {rate_text(c.get('coverage'))}, still broken with it enforcing {rate_text(c.get('broken_remaining'))}"
                   for s, c in pooled.items()) + ".")  # fmt: skip
    return out


def sweep_html(sweep: dict[str, Any] | None, folder: Path) -> str:
    """The harm-based tables of an attack-strength sweep (studies.sarm.sweep.summarize_sweep):
    per (attack, magnitude) × scorer, then coverage pooled per scorer and kind; then
    folder/sweep.png when it exists. "" without a sweep."""
    if not sweep or not sweep.get("kinds"):
        return ""
    from studies.sarm.sweep_report import attack_label  # the attack label the Markdown table uses

    w = sweep["window"]
    keys = (
        "coverage",
        "coverage_after_onset",
        "broken_remaining",
        "broken_on",
        "window_detection",
        "window_false_alarm",
    )
    rows = []
    for kind, per in sweep["kinds"].items():
        for r in per:
            for s, x in r["scorers"].items():
                a = x["auroc"]
                auc = _ci_html(
                    a.get("auc"),
                    a.get("lo"),
                    a.get("hi"),
                    f"ep={a['episodes_neg']}+{a['episodes_pos']}",
                )
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
    from studies.sarm.summary import is_calibrated
    from studies.sarm.tables import promise_text

    scorers = list(summ["clean"])

    def result(r: dict[str, Any], s: str) -> str:  # a scorer that breaks its promise has no results
        return rate_html(r) if is_calibrated(summ, s) else "not calibrated"

    clean = [[esc(s), num(r["threshold"]), rate_html(r["fpr_episode"]), rate_html(r["fpr_step"]),
              rate_html(r["fpr_decision"]), esc(promise_text(r)), result(r["broken_fragile_on"], s)]
             for s, r in summ["clean"].items()]  # fmt: skip
    body = table(["scorer", "threshold", "FPR episodes", "FPR steps", "FPR decisions", "promise",
                  "fragile broken (monitor on)"], clean, "sarm",
                 "Clean episodes: rates with 95% Wilson CIs and n. Promise: the realised clean false-alarm rate against "
                 "the promised α (per episode unless the calibration promises per decision); \"NOT calibrated\" where "
                 "its 95% lower bound is above α.")  # fmt: skip
    rows = []
    for cond in order:
        per = summ["perturbations"][cond]
        for s in scorers:
            r, a, lat = per[s], per[s]["auc"], per[s]["latency_steps"]
            auc = _ci_html(a.get("auc"), a.get("lo"), a.get("hi"), f"n={a['n_neg']}+{a['n_pos']}")
            lat_s = (
                "–"
                if not lat.get("n")
                else f'{num(lat["mean"])}<span class="p">max {lat["max"]}, n={lat["n"]}</span>'
            )
            cls = ' class="sig"' if _auc_detects(a) else ""
            rows.append([esc(cond), esc(s), result(r["detection"], s), rate_html(r["early_veto"]), lat_s,
                         f"<td{cls}>{auc}</td>", rate_html(per["broken_fragile_off"]), result(r["broken_fragile_on"], s)])  # fmt: skip
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
