"""The VLA study's statistics (`physteer vla-study`, studies.vla.study): per condition
estimates paired by seed against unsteered, the SAE dose response with its acceptance flags,
and the neuron clusters' carry-speed effects. Episode rows in, a JSON-able summary out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from reports.steering import compare_conditions
from studies.vla.config import (
    ACCEPTANCE,
    EXPECTED_CARRY_SIGN,
    METRICS,
    VLAStudyConfig,
    sae_condition,
)


def summarize_vla_study(
    rows: list[dict[str, Any]], cfg: VLAStudyConfig, matched: dict[str, Any]
) -> dict[str, Any]:
    """Per condition estimates, the SAE dose response and the neuron clusters' effects.

    Args:
        rows: episode rows (condition, seed, METRICS), every condition on the same seeds.
        cfg: the study's config (which conditions are which).
        matched: `matched_random`'s record (the random control's condition and norms).
    """
    order = cfg.conditions(matched["random_condition"])
    table = compare_conditions(rows, "unsteered", order)
    by = {r["condition"]: r for r in table}
    missing = [c for c in order if c not in by]
    if missing:
        raise ValueError(f"conditions {missing} have no episodes in the run")
    # Paired by seed against unsteered (compare_conditions): `<metric>_diff` is the mean of
    # (condition − unsteered) with its bootstrap CI, `<metric>_p` McNemar's or Wilcoxon's p.
    conds = ["unsteered", *(sae_condition(x) for x in cfg.levels)]  # weakest first
    strengths = [0.0, *map(cfg.strength, cfg.levels)]
    grip = [by[c]["peak_grip_force"] for c in conds]
    means = np.array([g["value"] for g in grip], dtype=float)
    finite = np.isfinite(means)
    varies = finite.sum() >= 3 and np.ptp(means[finite]) > 0  # else rho is undefined
    rho, p = (
        spearmanr(np.array(strengths)[finite], means[finite]) if varies else (math.nan, math.nan)
    )
    lo_end, hi_end = grip[0], grip[-1]

    def separated(e: dict) -> bool:
        between = (
            min(lo_end["value"], hi_end["value"])
            < e["value"]
            < max(lo_end["value"], hi_end["value"])
        )
        return between and all(
            e["high"] < x["low"] or e["low"] > x["high"] for x in (lo_end, hi_end)
        )

    sep = [s for s, e in zip(strengths[1:-1], grip[1:-1], strict=True) if separated(e)]
    strongest = by[conds[-1]]
    sae_change, rand_change = (
        strongest["peak_grip_force_diff"],
        by[matched["random_condition"]]["peak_grip_force_diff"],
    )
    fraction = rand_change["value"] / sae_change["value"] if sae_change["value"] else math.nan
    broken_diff = strongest["broken_diff"]
    dose = {
        "conditions": conds, "strengths": strengths, "peak_grip_force": grip,
        "grip_command": [by[c].get("grip_command") for c in conds],
        "spearman_rho": float(rho), "spearman_p": float(p), "separated_intermediates": sep,
        "broken_unsteered": by["unsteered"]["broken"], "broken_strongest": by[conds[-1]]["broken"],
        "broken_change": broken_diff, "broken_change_p": strongest["broken_p"],
        "sae_grip_change": sae_change, "random_grip_change": rand_change, "random_fraction": fraction,
        "direction": cfg.direction, "material": cfg.material, "unbreakable": cfg.unbreakable,
        "flags": {
            # the expected direction: rising on fragile objects, falling on rigid ones
            "monotone": bool(len(conds) >= ACCEPTANCE["min_magnitudes"]
                             and cfg.direction * rho >= ACCEPTANCE["spearman_rho_min"]),
            "graded": len(sep) >= ACCEPTANCE["min_separated_intermediates"],
            "random_small": bool(abs(fraction) < ACCEPTANCE["random_fraction_max"]),
        },
    }  # fmt: skip
    if (
        cfg.material == "fragile" and not cfg.unbreakable
    ):  # rigid (or unbreakable) objects do not break
        dose["flags"]["breakage_rises"] = bool(
            by["unsteered"]["broken"]["value"] <= ACCEPTANCE["broken_unsteered_max"]
            and by[conds[-1]]["broken"]["value"] >= ACCEPTANCE["broken_strongest_min"]
        )
    neurons: dict[str, Any] = {}
    if cfg.neuron_words:
        for word, cond in [(w, f"neuron:{w}:{cfg.neuron_value:g}") for w in cfg.neuron_words] + \
                [(f"random {w}", f"neuron-random:{w}:{cfg.neuron_value:g}") for w in cfg.neuron_words]:  # fmt: skip
            diff, pval = by[cond]["carry_speed_diff"], by[cond]["carry_speed_p"]
            sign = EXPECTED_CARRY_SIGN.get(word)
            flags = {"significant": bool(pval < ACCEPTANCE["alpha"])}
            if sign is not None:
                flags["expected_direction"] = bool(
                    flags["significant"] and np.sign(diff["value"]) == sign
                )
            neurons[word] = {"condition": cond, "carry_speed_change": diff, "carry_speed_p": pval,
                             "peak_grip_force_change": by[cond].get("peak_grip_force_diff"),
                             "expected_sign": sign, "flags": flags}  # fmt: skip
    return {"n_seeds": cfg.seeds, "baseline": "unsteered", "metrics": list(METRICS), "acceptance": ACCEPTANCE,
            "matched_norm": matched, "conditions": table, "dose_response": dose, "neurons": neurons}  # fmt: skip
