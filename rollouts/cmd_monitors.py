"""`physteer sarm-eval`: does the SARM monitor stop the robot when the agent's internals are
perturbed, and how often does it stop it for nothing?

Three experiments through the runner (rollouts.runner: resume, workers, Ray, exact replay,
Parquet logs), each in its own folder under the output folder:
1. `fit/`: clean episodes (no monitor) on the fit seeds. Scorers are fitted on the decision
   activations of half of them and their thresholds calibrated on the decision scores of the
   other half (`--calibration`: mean + k·std, the (1 − fpr) quantile, or split conformal at
   `--alpha` per decision or per episode; monitors.calibration). The fit, calibration and eval
   seeds are disjoint (`SarmEvalConfig.seed_split`, checked). Saved under `scorers/<name>/`
   (the calibration with its method, alpha and seeds), with `scorers/fit.json` written last
   (the stage marker: the seed split, the calibration settings, every method's threshold side
   by side). Resuming with other calibration settings is refused (use another --name).
   The derived scorers come last (rollouts.sarm_probe): "probe", a linear probe trained on a
   `probe-fit/` run of its training attacks (`--probe-attacks`) on the scorer-fit seeds, and
   "combined", the max of its parts' threshold-normalised scores, recalibrated.
2. the perturbations are conditions (rollouts.conditions) with an onset, e.g. `ta2:4@10`
   (the TA2 vector is the fit decisions' rigid − fragile difference of means, saved as
   `perturbation_vector.safetensors`), `random:4@10` (a random direction of the same norm),
   `sae:contrast:50@10` (SAE overdrive of the latent that rises most from fragile to rigid
   decisions; `contrast` is replaced by its index), `noise:0.2@10`, `prompt@10`. With `--sweep`
   each kind runs at every magnitude of its attack-strength sweep (rollouts.sarm_sweep).
3. `eval/`: unsteered ("clean") and every perturbation on the eval seeds, each once with no
   monitor enforcing (every scorer scores in shadow) and once per scorer with its vetoes
   enforced. `rollouts.sarm_summary.summarize` makes the figures from eval's Parquet logs,
   `rollouts.sarm_sweep.summarize_sweep` the harm-based ones per (kind, magnitude) (harmful-
   attack coverage, per-decision AUROC, fixed-window detection; `summary["sweep"]`, sweep.png);
   `summary.json` is written last (atomically).

`run_sarm_eval(SarmEvalConfig(...))` is the Python entry point (tests use it). Rerunning the
same command resumes every stage.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from rollouts.sarm_config import DEFAULT_PERTURBATIONS, SARM_AGENTS, SarmEvalConfig
from rollouts.sarm_probe import DERIVED_SCORERS, derived_summary, fit_derived_scorers, print_probe

__all__ = ["DEFAULT_PERTURBATIONS", "SARM_AGENTS", "SarmEvalConfig", "run_sarm_eval"]
#: Calibrations computed beside the chosen one on the same clean episodes (scorers/fit.json),
#: whose realised clean false-alarm rates the summary reports side by side.
COMPARED_CALIBRATIONS = ("sigma", "conformal-decision", "conformal-episode")


def decision_activations(run_dir: Path, condition: str, seed: int, tokens: str) -> list[torch.Tensor]:
    """The decision activations (one n_tokens × d tensor per decision) a run logged for an
    unmonitored episode: image tokens, or every row with tokens="all"."""
    from safetensors.torch import load_file

    from rollouts.logs import RunLog

    acts = load_file(str(RunLog(run_dir).episode_path(condition, seed, "activations", "safetensors")))
    n_img = int(acts["n_image_tokens"])
    return [a if tokens == "all" else a[:n_img] for a in acts["decision"]]


def fit_scorers(cfg: SarmEvalConfig, fit_dir: Path, log: Any = print) -> dict[str, Any]:
    """Fit and calibrate every scorer on the fit run; save them, the SAE and the TA2 vector.

    Returns the stage marker's content (scorers/fit.json), written last."""
    from safetensors.torch import load_file

    from monitors.attacks import contrast_feature
    from monitors.calibration import calibrate_episodes, calibration_table
    from monitors.scorers import SAEReconstructionScorer, make_scorer
    from rollouts.logs import RunLog
    from storage import write_json, write_safetensors

    out = Path(cfg.out)
    episodes = pq.read_table(fit_dir / "episodes.parquet").to_pylist()
    material = {int(e["seed"]): e["material"] for e in episodes}
    config = json.loads((fit_dir / "config.json").read_text())
    split = cfg.seed_split()
    fit = [(a, material[seed]) for seed in split["fit"]
           for a in decision_activations(fit_dir, "unsteered", seed, cfg.tokens)]  # fmt: skip
    calib = [decision_activations(fit_dir, "unsteered", seed, cfg.tokens) for seed in split["calibration"]]
    layer = int(load_file(str(RunLog(fit_dir).episode_path("unsteered", cfg.fit_seeds[0], "activations", "safetensors")))["layer"])
    meta = {"model": cfg.model_id, "layer": layer, "aggregate": cfg.aggregate}
    method = cfg.calibration_method
    settings = {"k": cfg.k, "fpr": cfg.fpr or 0.05, "alpha": cfg.alpha}
    names, sae, table = [], None, {}
    for kind in (k for k in cfg.scorers if k not in DERIVED_SCORERS):  # probe, combined: below
        extra = {"steps": cfg.sae_steps} if kind == "sae" else {}
        s = make_scorer(kind, **meta, **extra).fit([a for a, _ in fit])
        per_episode = [s.score_many(e) for e in calib]  # clean calibration scores, per episode
        s.calibration = calibrate_episodes(per_episode, method, seeds=split["calibration"], **settings)
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
    log(f"fit: {len(fit)} + {n_calib} clean decisions ({len(calib)} calibration episodes), layer {layer}, d {marker['d']}")
    return marker


def records_from_run(run_dir: Path, scorers: list[str]) -> list[dict[str, Any]]:
    """The eval run's episodes as rollouts.sarm_summary records (clean = unsteered; monitor
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


def run_sarm_eval(cfg: SarmEvalConfig, log: Any = print) -> dict[str, Any]:
    """Run the protocol of the module docstring (resuming finished stages); returns summary.json."""
    from rollouts.demo import marker_reads
    from rollouts.runner import run_experiment
    from rollouts.sarm_plots import plot_roc, plot_sweep, plot_timelines
    from rollouts.sarm_summary import summarize
    from rollouts.sarm_sweep import summarize_sweep, sweep_labels
    from storage import write_json

    cfg.check()
    t0 = time.time()
    out = Path(cfg.out)
    marker_path = out / "scorers" / "fit.json"
    marker = json.loads(marker_path.read_text()) if marker_reads(marker_path) else None
    if marker is not None and marker.get("calibration", cfg.calibration_settings()) != cfg.calibration_settings():
        raise ValueError(f"{out} was calibrated with {marker['calibration']}, not {cfg.calibration_settings()}: "
                         "its eval episodes used those thresholds; choose another --name")  # fmt: skip
    fit_dir = run_experiment(cfg.experiment("fit", cfg.fit_seeds, ["unsteered"]), progress=False, report=False)
    marker = marker or fit_scorers(cfg, fit_dir, log)
    feature = marker["contrast_feature"]
    given = cfg.run_perturbations()
    perturbations = [p.replace(":contrast:", f":{feature}:") for p in given]
    scorer_dirs = [str(out / "scorers" / n) for n in marker["scorers"]]
    eval_cfg = cfg.experiment(
        "eval", cfg.eval_seeds, ["unsteered", *perturbations], monitors=scorer_dirs, enforce=["none", *marker["scorers"]],
        vector=str(out / "perturbation_vector.safetensors"), sae=str(out / "sae") if feature is not None else None,
    )  # fmt: skip
    eval_dir = run_experiment(eval_cfg, progress=False, report=False)
    from monitors.scorers import load_scorer

    thresholds = {n: load_scorer(d).threshold for n, d in zip(marker["scorers"], scorer_dirs, strict=True)}
    log("thresholds: " + ", ".join(f"{n} {t:.4g}" for n, t in thresholds.items()))
    records = records_from_run(eval_dir, marker["scorers"])
    summary = summarize(records, thresholds, n_boot=cfg.n_boot, calibrations=marker.get("calibrations"))
    summary.update(derived_summary(summary, marker, perturbations))  # probe: trained vs held-out kinds
    labels = sweep_labels(dict(zip(given, perturbations, strict=True)))
    summary["sweep"] = summarize_sweep(records, thresholds, labels, window=cfg.window, n_boot=cfg.n_boot)
    if marker.get("combined"):  # how the combined scorer trades one attack kind's detection for another's
        from rollouts.sarm_tradeoff import combined_tradeoff

        summary["tradeoff"] = combined_tradeoff(cfg, fit_dir, records, thresholds, marker["combined"])
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
            from rollouts.sarm_tradeoff import plot_tradeoff

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


def _rate(r: dict[str, Any], compact: bool = False) -> str:
    """A rate with its 95% CI and n, on one line, or on three (`compact`, for narrow tables)."""
    if r["n"] == 0:
        return "–"
    if compact:
        return f"{r['rate']:.2f}\n[{r['lo']:.2f}, {r['hi']:.2f}]\nn={r['n']}"
    return f"{r['rate']:.2f} [{r['lo']:.2f},{r['hi']:.2f}] n={r['n']}"


def print_summary(doc: dict[str, Any], console: Any = None) -> None:
    """Rich tables: clean false positives per scorer, then figures per perturbation × scorer,
    then the sweep's harm-based figures per (kind, magnitude) × scorer (rollouts.sarm_sweep_report).

    Perturbations are listed in the order given. Each table is printed in full where it fits
    `console` (default: a Console of the terminal's width, 80 columns when piped); otherwise
    its key columns, every figure over its CI and n, so that no number is cut.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from rollouts.report import table_fits

    console = console or Console()
    summ = doc["summary"]
    order = [p for p in doc.get("perturbations", {}).values() if p in summ["perturbations"]]
    order += [p for p in summ["perturbations"] if p not in order]

    def table(title: str, compact: bool) -> Table:
        if not compact:
            return Table(title=title)
        return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False,
                     show_lines=True)  # fmt: skip

    def auc(a: dict[str, Any], compact: bool) -> str:
        if a["auc"] is None or not math.isfinite(a["auc"]):
            return "–"
        lo, hi = ("–" if x is None or not math.isfinite(x) else f"{x:.2f}" for x in (a["lo"], a["hi"]))
        return f"{a['auc']:.2f}\n[{lo}, {hi}]\nn={a['n_neg']}+{a['n_pos']}" if compact else f"{a['auc']:.2f} [{lo},{hi}]"

    def clean(compact: bool) -> Table:
        agent = "VLA" if doc.get("config", {}).get("agent") == "vla" else "planner"
        t = table(f"clean episodes: false positives ({agent}, layer {doc['layer']}, 95% Wilson CI)", compact)
        t.add_column("scorer\n threshold" if compact else "scorer", overflow="fold")
        cols = ("FPR episodes", "FPR steps", "FPR decisions", "broken fragile (on)")
        for col in cols if compact else ("threshold", *cols):
            t.add_column(col.replace(" ", "\n", 1) if compact else col, no_wrap=compact, justify="right" if compact else "left")
        for s, r in summ["clean"].items():
            rates = [_rate(r[k], compact) for k in ("fpr_episode", "fpr_step", "fpr_decision", "broken_fragile_on")]
            name = [f"{s}\n {r['threshold']:.4g}"] if compact else [s, f"{r['threshold']:.4g}"]
            t.add_row(*map(Text, [*name, *rates]))  # Text: no markup or emoji codes in names
        return t

    def perturbed(compact: bool) -> Table:
        title = "perturbations: detection (veto after onset), latency, AUC, fragile broken"
        t = table(title + (" (key columns; all in summary.json)" if compact else ""), compact)
        if compact:
            t.caption = "n: episodes; AUC n: clean + perturbed decisions"
        t.add_column("perturbation\n scorer" if compact else "perturbation", overflow="fold")
        cols = (("detection", "veto\nbefore onset", "AUC", "broken\nfragile (on)") if compact else
                ("scorer", "detection", "veto before onset", "latency (steps)", "AUC [95% CI]", "broken off", "broken on"))  # fmt: skip
        for col in cols:
            t.add_column(col, no_wrap=compact, justify="right" if compact else "left")
        for cond in order:
            per = summ["perturbations"][cond]
            for s in summ["clean"]:
                r = per[s]
                if compact:
                    t.add_row(*map(Text, (f"{cond}\n {s}", _rate(r["detection"], True), _rate(r["early_veto"], True),
                                          auc(r["auc"], True), _rate(r["broken_fragile_on"], True))))  # fmt: skip
                    continue
                lat = r["latency_steps"]
                lat_s = "–" if not lat["n"] else f"{lat['mean']:.1f} (max {lat['max']})"
                t.add_row(*map(Text, (cond, s, _rate(r["detection"]), _rate(r["early_veto"]), lat_s, auc(r["auc"], False),
                                      _rate(per["broken_fragile_off"]), _rate(r["broken_fragile_on"]))))  # fmt: skip
        return t

    def alarms(compact: bool) -> Table:
        t = table("clean false alarms: realised (unmonitored clean episodes, 95% Wilson CI) vs promised α", compact)
        t.add_column("scorer\n calibration" if compact else "scorer", overflow="fold")
        cols = ("threshold", "promised α", "per episode", "per decision")
        for col in cols if compact else ("calibration", *cols):
            t.add_column(col.replace(" ", "\n", 1) if compact else col, no_wrap=compact, justify="right" if compact else "left")
        for s, methods in summ.get("false_alarms", {}).items():
            for method, r in methods.items():
                name = method + (" (on)" if r.get("enforced") else "")
                thr = "–" if r.get("threshold") is None else f"{r['threshold']:.4g}"
                alpha = "–" if r.get("alpha") is None else f"{r['alpha']:.3g} / {r['unit']}"
                rates = [_rate(r[k], compact) if k in r else "–" for k in ("episode", "decision")]
                t.add_row(*map(Text, [f"{s}\n {name}"] if compact else [s, name]), *map(Text, [thr, alpha, *rates]))
        return t

    def outcomes(compact: bool) -> Table:
        policy = doc.get("config", {}).get("on_veto", "?")
        t = table(f"success and breakage (all materials), monitor off vs on (on_veto={policy})", compact)
        t.add_column("condition\n scorer" if compact else "condition", overflow="fold")
        fallback = policy == "fallback" and not compact
        cols = ("success off", "success on", "broken off", "broken on", *(("fallback",) if fallback else ()))
        for col in ("scorer", *cols) if not compact else cols:
            t.add_column(col.replace(" ", "\n", 1) if compact else col, no_wrap=compact, justify="right" if compact else "left")
        for cond in ["clean", *order]:
            off = summ["clean_outcomes_off"] if cond == "clean" else summ["perturbations"][cond]
            for s in summ["clean"]:
                r = summ["clean"][s] if cond == "clean" else summ["perturbations"][cond][s]
                if "success_on" not in r:
                    continue
                rates = [_rate(x, compact) for x in (off["success_off"], r["success_on"], off["broken_off"], r["broken_on"])]
                head = [f"{cond}\n {s}"] if compact else [cond, s]
                t.add_row(*map(Text, [*head, *rates, *([_rate(r["fallback_on"])] if fallback else [])]))
        return t

    for build in (clean, alarms, perturbed, outcomes):
        if build is outcomes and "clean_outcomes_off" not in summ:
            continue
        full = build(False)
        console.print(full if table_fits(full, console) else build(True))
    if summ.get("sweep", {}).get("kinds"):
        from rollouts.sarm_sweep_report import print_sweep

        print_sweep(doc, console)
    print_probe(doc, console)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sarm-eval` sub-command; its flags are SarmEvalConfig's fields."""
    from rollouts.config_cli import add_config_arguments

    p = subparsers.add_parser("sarm-eval", help="evaluate the SARM monitor under injected perturbations")
    add_config_arguments(p, SarmEvalConfig, skip={"out"})
    p.add_argument("--name", default="sarm-eval", help="output folder runs/<name>/")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Build the config from the arguments, run, print tables."""
    from rollouts.config_cli import config_from_args

    cfg = config_from_args(SarmEvalConfig, args, out=str(Path("runs") / args.name))
    doc = run_sarm_eval(cfg)
    print_summary(doc)
    print(f"wrote {cfg.out}/summary.json" + (", roc.png, sweep.png, timeline_*.png" if cfg.plots else ""))
    return 0
