"""The world-model probe's table and verdict (studies.world_model fits the probes)."""

from __future__ import annotations

import numpy as np

from studies.world_model import ProbeRow


def probe_table_markdown(rows: list[ProbeRow]) -> str:
    """The probe results as a Markdown table (with notes)."""
    lines = [
        "| target | predictor | metric | test value [95% CI] | train value | episodes |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        lines.append(
            f"| {r.target} | {r.predictor} | {r.metric} | {r.value:.3f} [{r.low:.3f}, {r.high:.3f}] | {r.train_value:.3f} | {r.n_episodes} |"
        )
        notes += [f"- {r.target} / {r.predictor}: {n}" for n in r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def broken_verdict(rows: list[ProbeRow]) -> str:
    """One sentence: is broken predicted above the labels-only baseline?"""
    get = {(r.target, r.predictor): r for r in rows}
    h, lab = get.get(("broken", "h_t (activations)")), get.get(("broken", "labels only"))
    if h is None or lab is None or not np.isfinite(h.value):
        return "Breakage after release could not be evaluated (no variation in the outcome)."
    above = h.low > lab.value
    return (
        f"Breakage after release is predicted from h_t with AUROC {h.value:.2f} [{h.low:.2f}, {h.high:.2f}] vs "
        f"{lab.value:.2f} [{lab.low:.2f}, {lab.high:.2f}] from labels only: "
        + (
            "h_t predicts breakage ABOVE the labels-only baseline."
            if above
            else "h_t does NOT predict breakage clearly above the labels-only baseline."
        )
    )
