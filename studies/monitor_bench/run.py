"""The monitor benchmark (`physteer monitor-bench`): which scorer sees the policy's own failures
coming, on scene variations it was never fitted on?

Three experiments through the runner (resume, workers, Ray, exact replay), under `out`:
1. `train/`: the unshifted scene and the seen shifts (envs.shifts) on the fit and calibration
   seeds, no monitor. Every scorer is fitted on the fit seeds' episodes: the learned failure
   predictors (monitors.failure: an MLP and an LSTM over the decisions, SAFE-style) and the
   raw-activation probe on their success/failure labels (decisions before the failure only), the
   anomaly scorers (Mahalanobis, PCA, SAE reconstruction) on their successes, the signal
   scorers (the VLA's action-token entropy and chunk change) on nothing. Every threshold is
   calibrated on the calibration seeds' successful episodes: split conformal per episode at
   alpha (the failure predictors' scores first normalised per decision index: SAFE's
   time-varying thresholds). Saved under `scorers/<name>/`, `scorers/fit.json` last.
2. `eval/`: the unshifted scene, the seen and the held-out shifts on the eval seeds, no monitor.
   Each scorer's scores are computed from the logged decisions (the same numbers the monitor
   computes online) and summarised by reports.failure_metrics per group (unshifted, seen,
   held out, each held-out kind).
3. `enforce/`: the held-out conditions on the eval seeds again, once per enforced scorer with its
   vetoes enforced (`on_veto`, default the gentle fallback): failures with it against without
   it on the same seeds (exact McNemar) and the success it costs.

`summary.json` is written last; rerunning resumes every stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from studies.monitor_bench.config import BENCH_SCORERS, LEARNED, MonitorBenchConfig


def load_episodes(run_dir: Path, load_decisions: bool = True) -> list[dict[str, Any]]:
    """The unmonitored episodes of a run: outcome, failure step, decision steps, the agent's
    signals and (with `load_decisions`) every decision's activations (all rows) and n_image_tokens."""
    from safetensors.torch import load_file

    from rollouts.conditions import parse_condition
    from rollouts.episode import SIGNAL_COLUMNS
    from rollouts.logs import RunLog

    steps = pq.read_table(run_dir / "steps.parquet").to_pylist()
    signals: dict[tuple, list[dict[str, float]]] = {}
    for s in steps:
        if s["decided"] and s["monitor"] == "none":
            signals.setdefault((s["condition"], s["seed"]), []).append(
                {k: s[k] for k in SIGNAL_COLUMNS if k in s}
            )
    log, out = RunLog(run_dir), []
    for e in pq.read_table(run_dir / "episodes.parquet").to_pylist():
        if e["monitor"] != "none":
            continue
        c = parse_condition(e["condition"])
        failed = not e["success"]
        # the first step whose decision can no longer prevent the failure: the monitor judges
        # the break step's decision before its action runs, so an alarm there is still in time
        failure_step = (e["broken_step"] + 1 if e["broken"] else e["steps"]) if failed else None
        ep = {"seed": e["seed"], "condition": e["condition"], "kind": c.feature if c.kind == "shift" else "none",
              "material": e["material"], "failed": failed, "broken": bool(e["broken"]), "failure_step": failure_step,
              "signals": signals.get((e["condition"], e["seed"]), [])}  # fmt: skip
        acts = load_file(
            str(log.episode_path(e["condition"], e["seed"], "activations", "safetensors"))
        )
        ep["steps"] = [int(x) for x in acts["decision_steps"]]
        ep["n_image_tokens"] = int(acts["n_image_tokens"])
        if load_decisions:
            ep["decisions"] = list(acts["decision"])
        out.append(ep)
    return out


def before_failure(ep: dict[str, Any], key: str = "decisions") -> list[Any]:
    """The episode's decisions (or their `key`: "signals") before its failure step (all of them
    for a success)."""
    end = ep["failure_step"]
    return [a for s, a in zip(ep["steps"], ep[key], strict=True) if end is None or s < end]


def image_rows(ep: dict[str, Any], decisions: list[Any]) -> list[Any]:
    """The image-token rows of decisions."""
    return [a[: ep["n_image_tokens"]] for a in decisions]


def score_episode(scorer: Any, name: str, ep: dict[str, Any]) -> list[float]:
    """One scorer's score at each of the episode's decisions, in order (what the monitor computes)."""
    kind = BENCH_SCORERS[name][0]
    if kind == "signal":
        return [float(x) for x in scorer.score_many(ep["signals"])]
    if kind == "failure":
        return [float(x) for x in scorer.score_many(image_rows(ep, ep["decisions"]))]
    rows = ep["decisions"] if kind == "probe" else image_rows(ep, ep["decisions"])
    return [float(scorer.score(a)) for a in rows]


def fit_scorers(cfg: MonitorBenchConfig, fit: list[dict[str, Any]], layer: int) -> dict[str, Any]:
    """Fit every scorer on the fit episodes (module docstring, stage 1)."""
    from monitors.probe import LinearProbeScorer
    from monitors.scorers import make_scorer

    meta = {
        "model": cfg.model if not (cfg.agent == "vla" and cfg.model == "tiny") else "tiny-vla",
        "layer": layer,
    }
    ok = [e for e in fit if not e["failed"]]
    bad = [e for e in fit if e["failed"]]
    if any(n in LEARNED for n in cfg.scorers) and (not bad or not ok):
        raise ValueError(f"the fit episodes hold {len(bad)} failures and {len(ok)} successes: the learned predictors "
                         f"({[n for n in cfg.scorers if n in LEARNED]}) need both; choose seen shifts the policy fails "
                         "in (physteer shift-suite shows the rates)")  # fmt: skip
    scorers: dict[str, Any] = {}
    for name in cfg.scorers:
        kind, kwargs = BENCH_SCORERS[name]
        if kind == "failure":
            s = make_scorer(kind, **kwargs, **meta).fit_episodes([image_rows(e, before_failure(e)) for e in fit
                                                                  if before_failure(e)],
                                                                 [e["failed"] for e in fit if before_failure(e)])  # fmt: skip
            s.set_time_profile([image_rows(e, e["decisions"]) for e in ok])
        elif kind == "probe":
            s = LinearProbeScorer(n_image_tokens=fit[0]["n_image_tokens"], **meta).fit(
                [a for e in ok for a in e["decisions"]],
                [a for e in bad for a in before_failure(e)],
                kinds=list(cfg.seen),
            )
        elif kind == "signal":
            s = make_scorer(kind, **kwargs, **meta).fit(image_rows(fit[0], fit[0]["decisions"]))
            if s.oriented:  # which way the signal moves before a failure, from the fit labels
                s.orient([before_failure(e, "signals") for e in fit], [e["failed"] for e in fit])
        else:
            extra = {"steps": cfg.sae_steps} if kind == "sae" else {}
            s = make_scorer(kind, **meta, **extra).fit(
                [a for e in ok for a in image_rows(e, e["decisions"])]
            )
        scorers[name] = s
    return scorers


def calibrate(
    cfg: MonitorBenchConfig, scorers: dict[str, Any], calib: list[dict[str, Any]]
) -> dict[str, Any]:
    """Conformal per-episode thresholds from the calibration seeds' successful episodes."""
    from monitors.calibration import calibrate_episodes, conformal_min_n

    ok = [e for e in calib if not e["failed"]]
    if len(ok) < conformal_min_n(cfg.alpha):
        raise ValueError(f"{len(ok)} successful calibration episodes (of {len(calib)}): split conformal at "
                         f"alpha={cfg.alpha} needs {conformal_min_n(cfg.alpha)}; raise calibration_seeds")  # fmt: skip
    out = {}
    for name, s in scorers.items():
        s.calibration = calibrate_episodes([score_episode(s, name, e) for e in ok], "conformal-episode",
                                           alpha=cfg.alpha, seeds=sorted({e["seed"] for e in ok}))  # fmt: skip
        out[name] = s.calibration.to_dict() | {"seeds": None}
    return out


def fit_stage(
    cfg: MonitorBenchConfig, episodes: list[dict[str, Any]], layer: int, out: Path
) -> dict[str, Any]:
    """Fit every scorer on the fit seeds' episodes, calibrate it on the others' successes, save
    it (and the SAE's explainer) under `out`/<name>; `out`/fit.json, written last, is returned."""
    from storage import write_json

    fit_seeds = set(cfg.fit_seed_list)
    fit = [e for e in episodes if e["seed"] in fit_seeds]
    calib = [e for e in episodes if e["seed"] not in fit_seeds]
    scorers = fit_scorers(cfg, fit, layer)
    cal = calibrate(cfg, scorers, calib)
    for name, s in scorers.items():
        s.save(out / name)
    if "sae" in scorers:  # explanations of any scorer's alarms: the SAE latents that moved most
        from monitors.explain import FeatureExplainer

        ok = [e for e in fit if not e["failed"]]
        FeatureExplainer(scorers["sae"].sae).fit(
            [a for e in ok for a in image_rows(e, e["decisions"])]
        ).save(out / "sae")
    marker = {"scorers": list(scorers), "layer": layer, "calibrations": cal,
              "fit": {"episodes": len(fit), "failed": sum(e["failed"] for e in fit)},
              "calibration": {"episodes": len(calib), "successful": sum(not e["failed"] for e in calib)}}  # fmt: skip
    write_json(out / "fit.json", marker)
    return marker


def score_stage(
    scorer_dir: Path, names: list[str], episodes: list[dict[str, Any]]
) -> dict[str, float]:
    """Each saved scorer's score at every decision of `episodes` (into e["scores"][name]) and
    the explanations of its alarms; returns the thresholds."""
    from monitors.scorers import load_scorer

    scorers = {n: load_scorer(scorer_dir / n) for n in names}
    explainer = _explainer(scorer_dir / "sae") if "sae" in scorers else None
    thresholds = {n: s.threshold for n, s in scorers.items()}
    for e in episodes:
        e["scores"] = {n: score_episode(s, n, e) for n, s in scorers.items()}
        if explainer is not None:
            e["explanations"] = explain_alarms(e, thresholds, explainer)
    return thresholds


def run_monitor_bench(
    cfg: MonitorBenchConfig, log: Any = print, progress: bool = False
) -> dict[str, Any]:
    """Run the protocol of the module docstring (resuming finished stages); returns summary.json.
    (`leave_one_out`: studies.monitor_bench.folds.run_leave_one_out.)"""
    from rollouts.experiment import run_experiment
    from storage import marker_reads, write_json
    from studies.monitor_bench.report import enforced_summary, evaluate, plot_bench

    cfg.check()
    if cfg.leave_one_out:
        raise ValueError(
            "leave_one_out=True is the folds protocol: run studies.monitor_bench.folds.run_leave_one_out"
        )
    t0, out = time.time(), Path(cfg.out)
    train = run_experiment(cfg.experiment("train", cfg.train_conditions, cfg.fit_seed_list + cfg.calibration_seed_list),
                           progress=progress)  # fmt: skip
    marker_path = out / "scorers" / "fit.json"
    if not marker_reads(marker_path):
        fit_stage(cfg, load_episodes(train), run_layer(train, cfg), out / "scorers")
    marker = json.loads(marker_path.read_text())
    log(f"scorers fitted on {marker['fit']['episodes']} episodes ({marker['fit']['failed']} failed), calibrated on "
        f"{marker['calibration']['successful']} successful episodes")  # fmt: skip
    ev = run_experiment(
        cfg.experiment("eval", cfg.eval_conditions, cfg.eval_seed_list), progress=progress
    )
    episodes = load_episodes(ev)
    thresholds = score_stage(out / "scorers", marker["scorers"], episodes)
    for e in episodes:
        del e["decisions"]  # scored: the activations are not needed again
    summary = evaluate(cfg, episodes, thresholds)
    enforced = [summary["best"] if e == "best" else e for e in cfg.enforce]
    enforced = list(dict.fromkeys(e for e in enforced if e))
    if enforced:
        run = run_experiment(cfg.experiment("enforce", cfg.held_out_conditions, cfg.eval_seed_list,
                                            monitors=[str(out / "scorers" / n) for n in marker["scorers"]],
                                            enforce=enforced, explainer=str(out / "scorers" / "sae") if "sae" in marker["scorers"] else None),
                           progress=progress)  # fmt: skip
        summary["enforced"] = enforced_summary(ev, run, enforced, cfg.held_out_conditions)
    doc = {"config": asdict(cfg), "seconds": time.time() - t0, "layer": marker["layer"],
           "thresholds": thresholds, "fit": marker["fit"],
           "calibration": marker["calibration"], "summary": summary,
           "episodes": [{k: v for k, v in e.items() if k != "signals"} for e in episodes]}  # fmt: skip
    if cfg.plots:
        plot_bench(summary, out / "bench.png")
    write_json(out / "summary.json", doc)  # last: the bench is done
    return doc


def _explainer(directory: Path) -> Any:
    from monitors.explain import FeatureExplainer
    from sae import MatryoshkaSAE

    return FeatureExplainer.load(directory, MatryoshkaSAE.from_pretrained(directory / "sae"))


def explain_alarms(
    ep: dict[str, Any], thresholds: dict[str, float], explainer: Any
) -> dict[str, Any]:
    """Per scorer that alarms before the failure: its first alarm's step and the SAE latents that
    moved most at that decision (monitors.explain)."""
    from reports.failure_metrics import first_alarm

    out = {}
    for name, scores in ep["scores"].items():
        step = first_alarm({**ep, "scores": scores}, thresholds[name])
        if step is not None:
            decision = ep["decisions"][ep["steps"].index(step)]
            out[name] = {"step": step, "latents": explainer.explain(image_rows(ep, [decision])[0])}
    return out


def run_layer(run_dir: Path, cfg: MonitorBenchConfig) -> int:
    """The decoder layer the run's activations come from."""
    from safetensors.torch import load_file

    for path in sorted((run_dir / "activations").rglob("*.safetensors")):
        acts = load_file(str(path))
        if "layer" in acts:
            return int(acts["layer"])
    if cfg.layer is not None:
        return cfg.layer
    raise ValueError(f"{run_dir}: no logged activations name their layer")
