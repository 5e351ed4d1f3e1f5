"""The VLA part of the demo's report.html, from summary.json's "vla" dict (studies.demo.run stage 7,
studies.demo.vla_stage): the closed loop per material with the pattern control, the graded steering
(studies.vla.study's dose response and acceptance flags) and the SARM monitor on the VLA (the
demo's SARM section, rendered for the VLA's summary). Each section opens with a "What this
shows" line computed from its numbers.

The per-condition steering table reads the study's own summary (demo folder
vla/study/summary.json) unless the "vla" dict carries it as "study"; without either it shows
the SAE dose response only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reports.html import esc, est_html, est_text, excludes_zero, finite, img, section, table
from studies.demo.layout import VLA_MARKERS

#: The page's links to the VLA sections.
VLA_NAV = [("#vla", "VLA"), ("#vla-steering", "VLA steering"), ("#vla-sarm", "VLA SARM")]
#: Per-condition outcomes of the steering table: (key, header, percent).
STEERING_COLUMNS = (("peak_grip_force", "peak grip force (N)", False), ("grip_command", "commanded grip (of full)", False),
                    ("carry_speed", "carry speed (m/s)", False),
                    ("release_height", "release height (m)", False), ("broken", "broken", True),
                    ("success", "success", True))  # fmt: skip


def est_n_html(e: dict[str, Any] | None, pct: bool = False, signed: bool = False) -> str:
    """An Estimate dict as cell content: value, its 95% CI below, then its n ("–" without one)."""
    cell = est_html(e, pct, signed)
    return cell if cell == "–" else cell + f'<span class="p">n={e["n"]}</span>'


def est_n_text(
    e: dict[str, Any] | None, pct: bool = False, signed: bool = False, unit: str = ""
) -> str:
    """'value [low, high] unit (n=…)' of an Estimate dict, or '– (n=0)'."""
    text = est_text(e, pct, signed)
    return "– (n=0)" if text == "–" else f"{text}{' ' + unit if unit else ''} (n={e['n']})"


def _p(p: Any) -> str:
    return f"{p:.2g}" if finite(p) else "n/a"


def _pct(x: Any) -> str:
    return f"{100 * x:.0f}%" if finite(x) else "?"


# ------------------------------------------------------------------------------ closed loop
def closed_loop_findings(s: dict[str, Any]) -> list[str]:
    """Success and intact per material, the rigid − fragile grip gap (and whether its CI excludes
    0), and the same gap with the material pattern removed (its ratio to the trained gap)."""
    mats = s.get("materials") or {}
    if not mats:
        return ["No VLA closed-loop episodes in this report."]
    out = ["In closed loop, success " + ", ".join(f"{m} {est_n_text(c.get('success'), pct=True)}" for m, c in mats.items())
           + "; intact " + ", ".join(f"{m} {est_n_text(c.get('intact'), pct=True)}" for m, c in mats.items()) + "."]  # fmt: skip
    gap = s.get("grip_gap")
    if gap:
        where = "its CI excludes 0" if excludes_zero(gap) else "its CI includes 0"
        out.append(
            f"Peak grip force on rigid minus fragile objects: {est_n_text(gap, signed=True, unit='N')} ({where})."
        )
    control = s.get("control") or {}
    if control:
        out.append("With the material pattern removed (and the objects unbreakable, so that no break cuts a grip short) "
                   f"the gap is {est_n_text(control.get('grip_gap'), signed=True, unit='N')}, "
                   f"{est_n_text(control.get('gap_ratio'))} × the trained gap; the commanded grip's gap "
                   f"{est_n_text(s.get('command_gap'), signed=True)} trained, ratio "
                   f"{est_n_text(control.get('command_gap_ratio'))} with the pattern removed.")  # fmt: skip
    return out


def closed_loop_section(s: dict[str, Any], root: Path) -> str:
    """Per material (and per material with the pattern removed): success, intact, peak grip
    force and commanded grip, each over its 95% CI with its n."""
    rows = []
    groups = [
        ("", s.get("materials") or {}),
        (", pattern removed", (s.get("control") or {}).get("materials") or {}),
    ]
    for suffix, mats in groups:
        for m, c in mats.items():
            rows.append([esc(m + suffix), str(c.get("n", "–")), est_n_html(c.get("success"), pct=True),
                         est_n_html(c.get("intact"), pct=True), est_n_html(c.get("peak_grip_force")),
                         est_n_html(c.get("grip_command"))])  # fmt: skip
    body = table(["objects", "episodes", "success", "intact", "peak grip force (N)", "commanded grip"], rows, "vla",
                 "The tiny VLA's own action tokens move the arm; every color × material cell, seeds paired across "
                 "cells. Rates: Wilson 95% CIs; means: bootstrap 95% CIs. Pattern removed: the same seeds on plain "
                 "objects (the control for reading the material from its pattern).")  # fmt: skip
    figure = root / Path(VLA_MARKERS["closed loop"]).with_suffix(".png")
    if figure.is_file():
        body += img(figure, "closed loop: pattern control")
    return section("vla", "VLA mode: closed loop per material", closed_loop_findings(s), body)


# --------------------------------------------------------------------------------- steering
def _study(vla: dict[str, Any], root: Path) -> dict[str, Any]:
    """The VLA study's summary (vla["study"], else the demo folder's vla/study/summary.json;
    {} when neither is there or the file does not parse)."""
    if vla.get("study"):
        return vla["study"]
    path = root / VLA_MARKERS["steering"]
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def steering_findings(dose: dict[str, Any], neurons: dict[str, Any]) -> list[str]:
    """Spearman rho of mean peak grip force vs SAE strength, the strongest edit's grip change
    beside the norm-matched random direction's, breakage at both ends, each acceptance flag
    and the neuron clusters' carry-speed changes."""
    if not dose:
        return ["No VLA steering in this report."]
    strengths = ", ".join(f"{x:g}" for x in dose.get("strengths") or [])
    rho = (
        f"{dose['spearman_rho']:+.2f}"
        if finite(dose.get("spearman_rho"))
        else "undefined (the means do not vary)"
    )
    out = [f"SAE steering toward rigid on fragile objects (strengths {strengths}): Spearman ρ of mean peak grip force "
           f"vs strength {rho} (p {_p(dose.get('spearman_p'))}); grip change at the strongest "
           f"{est_n_text(dose.get('sae_grip_change'), signed=True, unit='N')} vs {est_n_text(dose.get('random_grip_change'), signed=True, unit='N')} "
           f"for the norm-matched random direction; broken {est_n_text(dose.get('broken_unsteered'), pct=True)} unsteered, "
           f"{est_n_text(dose.get('broken_strongest'), pct=True)} at the strongest."]  # fmt: skip
    if flags := dose.get("flags"):
        out.append(
            "Acceptance: "
            + ", ".join(f"{k.replace('_', ' ')} {'yes' if v else 'no'}" for k, v in flags.items())
            + "."
        )
    for word, n in (neurons or {}).items():
        name = (f"a random neuron cluster of the {word.removeprefix('random ')!r} cluster's layer and size" if word.startswith("random ")
                else "the random neuron cluster" if word == "random" else f"the {word!r} neuron cluster")  # fmt: skip
        out.append(f"Clamping {name} changes carry speed by {est_n_text(n.get('carry_speed_change'), signed=True, unit='m/s')} "
                   f"(p {_p(n.get('carry_speed_p'))}).")  # fmt: skip
    return out


def _acceptance_rows(
    dose: dict[str, Any], neurons: dict[str, Any], acc: dict[str, Any]
) -> list[list[str]]:
    """(check, figures, pass) per acceptance flag, from the dose response and neuron clusters."""
    flags = dose.get("flags") or {}
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    sep = ", ".join(f"{x:g}" for x in dose.get("separated_intermediates") or []) or "none"
    rho = f"{dose['spearman_rho']:+.2f}" if finite(dose.get("spearman_rho")) else "undefined"
    frac = f"{dose['random_fraction']:.2f}" if finite(dose.get("random_fraction")) else "undefined"
    rows = [
        ["SAE monotone", f"ρ {rho} (p {_p(dose.get('spearman_p'))}); need ≥ {acc.get('spearman_rho_min', '?')} over ≥ "
                         f"{acc.get('min_magnitudes', '?')} strengths", yes(flags.get("monotone"))],
        ["SAE graded", f"intermediate strengths separated from both ends: {sep}; need ≥ "
                       f"{acc.get('min_separated_intermediates', '?')}", yes(flags.get("graded"))],
        ["breakage rises", f"{est_n_text(dose.get('broken_unsteered'), pct=True)} → "
                           f"{est_n_text(dose.get('broken_strongest'), pct=True)} (paired p {_p(dose.get('broken_change_p'))}); "
                           f"need ≤ {_pct(acc.get('broken_unsteered_max'))} → ≥ {_pct(acc.get('broken_strongest_min'))}",
         yes(flags.get("breakage_rises"))],
        ["random small", f"Δ grip random {est_n_text(dose.get('random_grip_change'), signed=True, unit='N')} vs SAE "
                         f"{est_n_text(dose.get('sae_grip_change'), signed=True, unit='N')}; fraction {frac}, need |.| < "
                         f"{acc.get('random_fraction_max', '?')}", yes(flags.get("random_small"))],
    ]  # fmt: skip
    for word, n in (neurons or {}).items():
        f = n.get("flags") or {}
        ok = (
            not f.get("significant")
            if word.startswith("random")
            else f.get("expected_direction", f.get("significant"))
        )
        rows.append([f"neuron cluster {word}", f"Δ carry speed {est_n_text(n.get('carry_speed_change'), signed=True, unit='m/s')}, "
                                               f"p {_p(n.get('carry_speed_p'))}", yes(ok)])  # fmt: skip
    return [[esc(c) for c in r] for r in rows]


def steering_section(vla: dict[str, Any], root: Path) -> str:
    """Per condition outcomes (or the SAE dose response alone), the acceptance flags beside
    their figures, and the study's dose_response.png when it exists."""
    study = _study(vla, root)
    dose = vla.get("steering") or study.get("dose_response") or {}
    neurons = vla.get("neurons") or study.get("neurons") or {}
    strength = dict(zip(dose.get("conditions") or [], dose.get("strengths") or [], strict=False))
    if study.get("conditions"):
        rows = [[esc(r["condition"]), f"{strength[r['condition']]:g}" if r["condition"] in strength else "–",
                 *(est_n_html(r.get(k), pct) for k, _, pct in STEERING_COLUMNS)] for r in study["conditions"]]  # fmt: skip
        body = table(["condition", "SAE strength", *(h for _, h, _ in STEERING_COLUMNS)], rows, "vla steering",
                     "Fragile objects, the same seeds in every condition; means with bootstrap and rates with Wilson 95% "
                     "CIs, n episodes. Strength s = 1 − X of the SAE fragility level X (0: unsteered).")  # fmt: skip
    else:
        rows = [[esc(c), f"{s:g}", est_n_html(e)] for c, s, e in
                zip(dose.get("conditions") or [], dose.get("strengths") or [], dose.get("peak_grip_force") or [], strict=False)]  # fmt: skip
        body = table(["condition", "SAE strength", "peak grip force (N)"], rows, "vla steering",
                     "The SAE dose response (the study's per-condition table was not found).")  # fmt: skip
    if dose:
        from studies.vla.config import ACCEPTANCE

        body += "<h3>Acceptance</h3>" + table(["check", "figures", "pass"], _acceptance_rows(dose, neurons, study.get("acceptance") or ACCEPTANCE),
                                              "vla acceptance", "Criteria fixed in studies.vla.study.ACCEPTANCE before any run.", names=2)  # fmt: skip
    figure = root / Path(VLA_MARKERS["steering"]).parent / "dose_response.png"
    if figure.is_file():
        body += img(figure, "VLA dose response")
    return section(
        "vla-steering",
        "VLA mode: graded steering on fragile objects",
        steering_findings(dose, neurons),
        body,
    )


def vla_sections(vla: dict[str, Any], root: str | Path) -> list[str]:
    """The VLA sections of the demo page (ids vla, vla-steering, vla-sarm; see VLA_NAV) from
    summary.json's "vla" dict and the demo folder `root`."""
    from studies.demo.report_html_sarm import sarm_section

    root = Path(root)
    out = [closed_loop_section(vla.get("closed_loop") or {}, root), steering_section(vla, root)]
    out.append(sarm_section(vla.get("sarm"), None, root, sid="vla-sarm", title="VLA mode: SARM monitor against TA2",
                            folder=root / Path(VLA_MARKERS["sarm"]).parent))  # fmt: skip
    return out
