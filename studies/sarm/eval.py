"""The SARM evaluation (`physteer sarm-eval`): does the SARM monitor stop the robot when the agent's internals are
perturbed, and how often does it stop it for nothing?

Three experiments through the runner (rollouts.runner: resume, workers, Ray, exact replay,
Parquet logs), each in its own folder under the output folder:
1. `fit/`: clean episodes (no monitor) on the fit seeds. Scorers are fitted on the decision
   activations of half of them and their thresholds calibrated on the decision scores of the
   other half (`--calibration`: split conformal at `--alpha` per episode, the default, or per
   decision, the (1 − fpr) quantile, or mean + k·std; monitors.calibration). The fit, calibration and eval
   seeds are disjoint (`SarmEvalConfig.seed_split`, checked). Saved under `scorers/<name>/`
   (the calibration with its method, alpha and seeds), with `scorers/fit.json` written last
   (the stage marker: the seed split, the calibration settings, every method's threshold side
   by side). Resuming with other calibration settings is refused (use another --name).
   The derived scorers come last (studies.sarm.probe): "probe", a linear probe trained on a
   `probe-fit/` run of its training attacks (`--probe-attacks`) on the scorer-fit seeds, and
   "combined", the max of its parts' threshold-normalised scores, recalibrated.
2. the perturbations are conditions (rollouts.conditions) with an onset, e.g. `ta2:4@10`
   (the TA2 vector is the fit decisions' rigid − fragile difference of means, saved as
   `perturbation_vector.safetensors`), `random:4@10` (a random direction of the same norm),
   `sae:contrast:50@10` (SAE overdrive of the latent that rises most from fragile to rigid
   decisions; `contrast` is replaced by its index), `noise:0.2@10`, `prompt@10`. With `--sweep`
   each kind runs at every magnitude of its attack-strength sweep (studies.sarm.sweep).
3. `eval/`: unsteered ("clean") and every perturbation on the eval seeds, each once with no
   monitor enforcing (every scorer scores in shadow) and once per scorer with its vetoes
   enforced. `studies.sarm.summary.summarize` makes the figures from eval's Parquet logs,
   `studies.sarm.sweep.summarize_sweep` the harm-based ones per (kind, magnitude) (harmful-
   attack coverage, per-decision AUROC, fixed-window detection; `summary["sweep"]`, sweep.png);
   `summary.json` is written last (atomically).

`run_sarm_eval(SarmEvalConfig(...))` is the Python entry point (tests use it). Rerunning the
same command resumes every stage.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from studies.sarm.config import DEFAULT_PERTURBATIONS, SARM_AGENTS, SarmEvalConfig
from studies.sarm.data import COMPARED_CALIBRATIONS, decision_activations, decision_signals
from studies.sarm.probe import DERIVED_SCORERS, derived_summary, fit_derived_scorers
from studies.sarm.tables import print_summary

__all__ = [
    "DEFAULT_PERTURBATIONS",
    "SARM_AGENTS",
    "SarmEvalConfig",
    "print_summary",
    "run_sarm_eval",
]


def fit_scorers(cfg: SarmEvalConfig, fit_dir: Path, log: Any = print) -> dict[str, Any]:
    """Fit and calibrate every scorer on the fit run; save them, the SAE and the TA2 vector.

    Returns the stage marker's content (scorers/fit.json), written last."""
    from safetensors.torch import load_file

    from monitors.attacks import contrast_feature
    from monitors.calibration import calibrate_episodes, calibration_table
    from monitors.sae_scorer import SAEReconstructionScorer
    from monitors.scorers import make_scorer
    from monitors.signals import SIGNAL_SCORERS
    from rollouts.logs import RunLog
    from storage import write_json, write_safetensors

    out = Path(cfg.out)
    episodes = pq.read_table(fit_dir / "episodes.parquet").to_pylist()
    material = {int(e["seed"]): e["material"] for e in episodes}
    config = json.loads((fit_dir / "config.json").read_text())
    split = cfg.seed_split()
    fit = [(a, material[seed]) for seed in split["fit"]
           for a in decision_activations(fit_dir, "unsteered", seed, cfg.tokens)]  # fmt: skip
    calib = [
        decision_activations(fit_dir, "unsteered", seed, cfg.tokens)
        for seed in split["calibration"]
    ]
    layer = int(
        load_file(
            str(
                RunLog(fit_dir).episode_path(
                    "unsteered", cfg.fit_seeds[0], "activations", "safetensors"
                )
            )
        )["layer"]
    )
    meta = {"model": cfg.model_id, "layer": layer, "aggregate": cfg.aggregate}
    method = cfg.calibration_method
    settings = {"k": cfg.k, "fpr": cfg.fpr or 0.05, "alpha": cfg.alpha}
    names, sae, table = [], None, {}
    if any(k in SIGNAL_SCORERS for k in cfg.scorers):  # the agent's own signals, read once
        calib_signals = decision_signals(fit_dir, "unsteered", split["calibration"])
    for kind in (k for k in cfg.scorers if k not in DERIVED_SCORERS):  # probe, combined: below
        # the agent's own signal: nothing to fit, calibrated as the others
        if kind in SIGNAL_SCORERS:
            s = make_scorer("signal", signal=SIGNAL_SCORERS[kind], **meta).fit([a for a, _ in fit])
            calib_inputs = calib_signals
        else:
            extra = {"steps": cfg.sae_steps} if kind == "sae" else {}
            s = make_scorer(kind, **meta, **extra).fit([a for a, _ in fit])
            calib_inputs = calib
        # clean calibration scores, per episode
        per_episode = [s.score_many(e) for e in calib_inputs]
        s.calibration = calibrate_episodes(
            per_episode, method, seeds=split["calibration"], **settings
        )
        name = s.name.replace("/", "-")
        s.save(out / "scorers" / name)
        names.append(name)
        table[name] = calibration_table(per_episode, (method, *COMPARED_CALIBRATIONS), **settings)
        sae = s.sae if isinstance(s, SAEReconstructionScorer) else sae
    fragile = torch.cat([a for a, m in fit if m == "fragile"])
    rigid = torch.cat([a for a, m in fit if m == "rigid"])
    dom = fragile.float().mean(0) - rigid.float().mean(0)
    write_safetensors(out / "perturbation_vector.safetensors", {"dom": dom})
    feature = None
    if any(":contrast:" in p for p in cfg.run_perturbations()):
        if sae is None:
            sae = SAEReconstructionScorer(steps=cfg.sae_steps).fit([a for a, _ in fit]).sae
        sae.save(out / "sae", metadata={"model": cfg.model_id, "layer": layer})
        feature = contrast_feature(sae, [fragile], [rigid])
    n_calib = sum(len(e) for e in calib)
    marker = {"scorers": names, "layer": layer, "d": int(dom.numel()), "contrast_feature": feature,
              "fit_decisions": len(fit), "calibration_decisions": n_calib, "calibration_episodes": len(calib),
              "seed_split": split, "calibration": cfg.calibration_settings(), "calibrations": table,
              "fit_run_config": config}  # fmt: skip
    derived = fit_derived_scorers(cfg, fit_dir, feature, log)  # the probe and combined scorers
    marker = {**marker, "scorers": names + derived["names"], "calibrations": {**table, **derived["calibrations"]},
              **derived["marker"]}  # fmt: skip
    write_json(out / "scorers" / "fit.json", marker)
    log(
        f"fit: {len(fit)} + {n_calib} clean decisions ({len(calib)} calibration episodes), layer {layer}, d {marker['d']}"
    )
    return marker


def records_from_run(run_dir: Path, scorers: list[str]) -> list[dict[str, Any]]:
    """The eval run's episodes as studies.sarm.summary records (clean = unsteered; monitor
    None = no monitor enforcing; decisions carry every scorer's score)."""
    from rollouts.conditions import parse_condition

    steps = pq.read_table(run_dir / "steps.parquet").to_pylist()
    by_episode: dict[tuple, list[dict]] = {}
    for s in steps:
        if s["decided"]:
            by_episode.setdefault((s["condition"], s["monitor"], s["seed"]), []).append(
                {"step": s["step"], "p_fragile": s["p_fragile"],
                 "scores": {n: (None if math.isnan(s[f"score:{n}"]) else s[f"score:{n}"]) for n in scorers}})  # fmt: skip
    records = []
    for e in pq.read_table(run_dir / "episodes.parquet").to_pylist():
        c = parse_condition(e["condition"])
        records.append({
            "seed": e["seed"], "material": e["material"], "steps": e["steps"],
            "condition": "clean" if c.kind == "unsteered" else c.name,
            "monitor": None if e["monitor"] == "none" else e["monitor"],
            "onset": None if c.kind == "unsteered" else c.onset, "broken": e["broken"], "success": e["success"],
            "first_veto_step": e["first_veto_step"], "veto_reason": e["sarm_reason"],
            "broken_cause": e.get("broken_cause"), "committed_handling": e.get("committed_handling"),
            "fallback_step": e.get("fallback_step"), "broken_step": e.get("broken_step"), "peak_force": e["peak_force"],
            "first_alarm": {n: e[f"first_alarm:{n}"] for n in scorers if f"first_alarm:{n}" in e},
            "decisions": by_episode.get((e["condition"], e["monitor"], e["seed"]), []),
        })  # fmt: skip
    return records


def run_sarm_eval(cfg: SarmEvalConfig, log: Any = print, progress: bool = False) -> dict[str, Any]:
    """Run the protocol of the module docstring (resuming finished stages); returns summary.json.
    `progress`: a progress bar over each stage's episodes (the CLI shows it)."""
    from rollouts.experiment import run_experiment
    from storage import marker_reads, write_json
    from studies.sarm.plots import plot_roc, plot_sweep, plot_timelines
    from studies.sarm.summary import summarize
    from studies.sarm.sweep import summarize_sweep, sweep_labels

    cfg.check()
    t0 = time.time()
    out = Path(cfg.out)
    marker_path = out / "scorers" / "fit.json"
    marker = json.loads(marker_path.read_text()) if marker_reads(marker_path) else None
    if (
        marker is not None
        and marker.get("calibration", cfg.calibration_settings()) != cfg.calibration_settings()
    ):
        raise ValueError(f"{out} was calibrated with {marker['calibration']}, not {cfg.calibration_settings()}: "
                         "its eval episodes used those thresholds; choose another --name")  # fmt: skip
    fit_dir = run_experiment(cfg.experiment("fit", cfg.fit_seeds, ["unsteered"]), progress=progress)
    marker = marker or fit_scorers(cfg, fit_dir, log)
    feature = marker["contrast_feature"]
    given = cfg.run_perturbations()
    perturbations = [p.replace(":contrast:", f":{feature}:") for p in given]
    scorer_dirs = [str(out / "scorers" / n) for n in marker["scorers"]]
    eval_cfg = cfg.experiment(
        "eval", cfg.eval_seeds, ["unsteered", *perturbations], monitors=scorer_dirs, enforce=["none", *marker["scorers"]],
        vector=str(out / "perturbation_vector.safetensors"), sae=str(out / "sae") if feature is not None else None,
    )  # fmt: skip
    eval_dir = run_experiment(eval_cfg, progress=progress)
    from monitors.scorers import load_scorer

    thresholds = {
        n: load_scorer(d).threshold for n, d in zip(marker["scorers"], scorer_dirs, strict=True)
    }
    log("thresholds: " + ", ".join(f"{n} {t:.4g}" for n, t in thresholds.items()))
    records = records_from_run(eval_dir, marker["scorers"])
    summary = summarize(
        records,
        thresholds,
        n_boot=cfg.n_boot,
        calibrations=marker.get("calibrations"),
        alpha=cfg.alpha,
    )
    summary.update(
        derived_summary(summary, marker, perturbations)
    )  # probe: trained vs held-out kinds
    labels = sweep_labels(dict(zip(given, perturbations, strict=True)))
    summary["sweep"] = summarize_sweep(
        records, thresholds, labels, window=cfg.window, n_boot=cfg.n_boot
    )
    if marker.get(
        "combined"
    ):  # how the combined scorer trades one attack kind's detection for another's
        from studies.sarm.tradeoff import combined_tradeoff

        summary["tradeoff"] = combined_tradeoff(
            cfg, fit_dir, records, thresholds, marker["combined"]
        )
    doc = {
        "config": asdict(cfg), "layer": marker["layer"], "d": marker["d"], "seconds": time.time() - t0,
        "seed_split": marker.get("seed_split"), "calibration": marker.get("calibration"),
        "perturbations": dict(zip(given, perturbations, strict=True)), "thresholds": thresholds,
        "summary": summary, "records": records,
    }  # fmt: skip
    if cfg.plots:
        plot_roc(records, list(thresholds), perturbations, summary, out / "roc.png")
        plot_sweep(summary["sweep"], out / "sweep.png")
        if len(summary.get("tradeoff", {}).get("rows", [{}])[0].get("kinds", {})) >= 2:
            from studies.sarm.tradeoff import plot_tradeoff

            plot_tradeoff(summary["tradeoff"]["rows"], out / "tradeoff.png")
        for n, t in thresholds.items():
            plot_timelines(records, n, t, perturbations, out / f"timeline_{n}.png")
    write_json(out / "summary.json", doc, default=_json_default)  # last: marks the evaluation done
    return doc


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
