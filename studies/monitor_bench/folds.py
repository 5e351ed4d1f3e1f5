"""Leave one shift kind out (`physteer monitor-bench --leave-one-out`): does a failure predictor
fitted on many kinds of shift see failures coming under a kind it never saw?

The default bench fits on two kinds (heavier and larger objects) and holds five out; what a
predictor learns from two kinds may be those kinds. Here every kind of `seen` + `held_out` is
held out in turn, as SAFE holds out tasks:

1. `train/`: the unshifted scene and every kind on the fit and calibration seeds, and `eval/`:
   every condition on the eval seeds, each run once (the runner: resume, workers, Ray).
2. Per kind k (`folds/<k>/`): every scorer fitted and calibrated (conformal per episode at
   alpha, successes only) on the unshifted scene and the other kinds' episodes, then scored on
   every eval episode: the fold's "seen" group picks its best learned predictor (as the bench
   does), its "held out" group is kind k.
3. Per kind, `enforce-<k>/`: each arm of `enforce` (`best`: the fold's best predictor; or a
   scorer by name) enforcing (`on_veto`) on kind k's eval seeds, paired with the unmonitored
   episodes.
4. Pooled over folds: each held-out episode scored by the fold that held its kind out, as its
   margin over that fold's threshold (so one threshold, 0, serves every fold), through the
   bench's metrics; per arm, the enforced pairs of every fold in one exact McNemar test.

`summary.json` (written last) holds the pooled table, each fold's summary and the enforcement.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from studies.monitor_bench.config import MonitorBenchConfig


def run_leave_one_out(
    cfg: MonitorBenchConfig, log: Any = print, progress: bool = False
) -> dict[str, Any]:
    """Run the folds (module docstring), resuming finished stages; returns summary.json."""
    from reports.failure_metrics import episode_metrics
    from rollouts.experiment import run_experiment
    from storage import marker_reads, write_json
    from studies.monitor_bench.report import (
        enforced_pairs,
        enforcement_figures,
        evaluate,
        plot_bench,
    )
    from studies.monitor_bench.run import fit_stage, load_episodes, run_layer, score_stage

    cfg.check()
    t0, out = time.time(), Path(cfg.out)
    kinds = (*cfg.seen, *cfg.held_out)
    every = replace(cfg, seen=kinds, held_out=(), leave_one_out=False)
    train = run_experiment(every.experiment("train", every.train_conditions,
                                            cfg.fit_seed_list + cfg.calibration_seed_list), progress=progress)  # fmt: skip
    ev = run_experiment(
        every.experiment("eval", every.train_conditions, cfg.eval_seed_list), progress=progress
    )
    train_episodes, layer = None, run_layer(train, cfg)
    episodes = load_episodes(ev)
    folds: dict[str, Any] = {}
    # per scorer: the held-out episodes, scored as margins over their fold's threshold
    held: dict[str, list[dict[str, Any]]] = {}
    pairs: dict[str, list[tuple[dict, dict]]] = {}  # per enforced arm: every fold's pairs
    for k in kinds:
        fold = replace(
            cfg, seen=tuple(x for x in kinds if x != k), held_out=(k,), leave_one_out=False
        )
        scorer_dir = out / "folds" / k
        if not marker_reads(scorer_dir / "fit.json"):
            if train_episodes is None:  # loaded once, and only while some fold still needs fitting
                train_episodes = load_episodes(train)
            fit_stage(fold, [e for e in train_episodes if e["kind"] != k], layer, scorer_dir)
        marker = json.loads((scorer_dir / "fit.json").read_text())
        thresholds = score_stage(scorer_dir, marker["scorers"], episodes)
        scored = [_without_decisions(e) for e in episodes]
        summary = evaluate(fold, scored, thresholds)
        for name, thr in thresholds.items():
            held.setdefault(name, []).extend(
                {**e, "scores": [x - thr for x in e["scores"][name]]}
                for e in scored
                if e["kind"] == k
            )
        best = summary["best"]
        # "best" is this fold's own choice; the other arms are named scorers (cfg.enforce)
        arms = {label: best if label == "best" else label for label in cfg.enforce}
        arms = {label: name for label, name in arms.items() if name}
        if arms:
            run = run_experiment(fold.experiment(f"enforce-{k}", fold.held_out_conditions, cfg.eval_seed_list,
                                                 monitors=[str(scorer_dir / n) for n in marker["scorers"]],
                                                 enforce=list(dict.fromkeys(arms.values()))), progress=progress)  # fmt: skip
            summary["enforced"] = {}
            for label, name in arms.items():
                fold_pairs = enforced_pairs(ev, run, name, fold.held_out_conditions)
                pairs.setdefault(label, []).extend(fold_pairs)
                summary["enforced"][name] = enforcement_figures(fold_pairs)
        folds[k] = {"summary": summary, "thresholds": thresholds, "fit": marker["fit"],
                    "calibration": marker["calibration"]}  # fmt: skip
        best_held = summary["scorers"].get(best, {}).get("held out", {})
        log(f"fold {k}: best {best}, held-out AUROC {best_held.get('auroc', {}).get('value')} "
            f"(time-matched {best_held.get('auroc_matched', {}).get('value')})")  # fmt: skip
    pooled = {
        name: {"held out": episode_metrics(eps, 0.0, n_boot=cfg.n_boot)}
        for name, eps in held.items()
    }
    doc = {"config": asdict(cfg), "seconds": time.time() - t0, "layer": layer, "kinds": list(kinds),
           "pooled": pooled, "enforced": {label: enforcement_figures(p) for label, p in pairs.items()},
           "folds": folds}  # fmt: skip
    if cfg.plots:
        plot_bench({"scorers": pooled}, out / "bench.png")
    write_json(out / "summary.json", doc)  # last: the bench is done
    return doc


def _without_decisions(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k not in ("decisions", "signals")}


def print_folds(doc: dict[str, Any], console: Any = None) -> None:
    """Rich table of the pooled held-out figures per scorer, then each fold's best predictor and
    the pooled enforcement."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from studies.monitor_bench.report import number, shuffled_cell

    console = console or Console()
    t = Table(title=f"monitor bench, leave one kind out ({', '.join(doc['kinds'])}): held-out episodes pooled "
                    f"over folds, thresholds conformal at α={doc['config']['alpha']} per fold",
              box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    for col in ("scorer", "AUC", "matched", "hit", "shuffled", "alarms", "lead"):
        t.add_column(col, no_wrap=True)
    for name, per in doc["pooled"].items():
        m = per["held out"]
        a, c, f, lead = m["auroc_matched"], m["caught"], m["false_alarm"], m["lead_steps"]
        t.add_row(name, number(m["auroc"]["value"]), f"{number(a['value'])} [{number(a['low'])},{number(a['high'])}]",
                  f"{c['k']}/{c['n']}", shuffled_cell(m),
                  f"{f['k']}/{f['n']}", "–" if not lead["n"] else f"{lead['median']:.0f}")  # fmt: skip
    console.print(t)
    for k, fold in doc["folds"].items():
        s = fold["summary"]
        for name, e in (s.get("enforced") or {}).items():
            off, on = (round(e[x]["value"] * e["n"]) for x in ("failed_off", "failed_on"))
            console.print(f"held out {k}: {name} enforcing, failed {off} → {on} of {e['n']} (prevented "
                          f"{e['prevented']}, caused {e['caused']})")  # fmt: skip
    for label, e in (doc.get("enforced") or {}).items():
        who = "every fold's best predictor" if label == "best" else label
        console.print(f"{who} enforcing on each held-out kind ({e['n']} paired episodes): failed "
                      f"{e['failed_off']['value']:.2f} → {e['failed_on']['value']:.2f} (prevented {e['prevented']}, "
                      f"caused {e['caused']}, exact McNemar p={e['p_fewer_failures']:.2g}); success lost "
                      f"{e['success_lost']['k']} of {e['success_lost']['n']}")  # fmt: skip
