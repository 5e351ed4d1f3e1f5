"""The monitor benchmark's figures: per scorer and group of conditions (studies.monitor_bench.
metrics), the enforced runs' failures with and without the monitor, a plot and a table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from reports.failure_metrics import episode_metrics
from studies.monitor_bench.config import PREDICTORS, MonitorBenchConfig


def groups(
    cfg: MonitorBenchConfig, episodes: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Evaluation episodes by group: "unshifted", "seen", "held out", and "held out: <kind>"."""
    out: dict[str, list[dict[str, Any]]] = {"unshifted": [], "seen": [], "held out": []}
    for e in episodes:
        if e["kind"] == "none":
            out["unshifted"].append(e)
        elif e["kind"] in cfg.seen:
            out["seen"].append(e)
        else:
            out["held out"].append(e)
            out.setdefault(f"held out: {e['kind']}", []).append(e)
    return out


#: The AUROC that choices and verdicts read: time-matched (a plain AUROC sets a failure's short
#: window beside a success's whole episode; metrics module docstring).
RANKING = "auroc_matched"


def evaluate(
    cfg: MonitorBenchConfig, episodes: list[dict[str, Any]], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Every scorer's metrics per group, the best learned predictor (highest seen AUROC) and
    where raw activations beat SAE features on held-out AUROC (and the reverse); every choice
    and comparison here reads the time-matched AUROC (RANKING: equal windows, metrics.matched_auc)."""
    by_group = groups(cfg, episodes)
    rows: dict[str, dict[str, Any]] = {}
    for name, thr in thresholds.items():
        scored = [{**e, "scores": e["scores"][name]} for e in episodes]
        rows[name] = {}
        for g, eps in by_group.items():
            keys = {(e["condition"], e["seed"]) for e in eps}
            if keys:
                rows[name][g] = episode_metrics([x for x in scored if (x["condition"], x["seed"]) in keys], thr,
                                                n_boot=cfg.n_boot)  # fmt: skip
    failures = {
        g: {"failed": sum(e["failed"] for e in eps), "n": len(eps)} for g, eps in by_group.items()
    }

    def auroc(name: str, group: str) -> float:
        v = rows[name].get(group, {}).get(RANKING, {}).get("value", math.nan)
        return -1.0 if v is None or not math.isfinite(v) else v

    learned = [n for n in thresholds if n in PREDICTORS]
    best = max(learned, key=lambda n: auroc(n, "seen")) if learned else None
    raw_vs_sae = None
    if "sae" in rows:
        raw = [n for n in ("mahalanobis", "probe", "pca") if n in rows]
        raw_vs_sae = {
            g: {"sae": auroc("sae", g), **{n: auroc(n, g) for n in raw}}
            for g in ("seen", "held out")
        }
    simplest = next((n for n in ("action-entropy", "mahalanobis") if n in rows), None)
    verdict = None
    if best and simplest:
        b, s = (
            rows[best].get("held out", {}).get(RANKING, {}),
            rows[simplest].get("held out", {}).get(RANKING, {}),
        )
        # beating a baseline that ranks worse than chance proves nothing: the bar is the better
        # of the baseline's AUROC and 0.5, cleared by the best predictor's whole 95% interval
        bar = max(s.get("value", math.nan) if _finite(s.get("value")) else 0.5, 0.5)
        beats = bool(b and _finite(b.get("low")) and b["low"] > bar)
        verdict = {"best": best, "simplest": simplest, "best_auroc": b, "simplest_auroc": s, "bar": bar,
                   "beats": beats}  # fmt: skip
    hindsight = (
        {g: max(rows, key=lambda n, g=g: auroc(n, g)) for g in ("seen", "held out")} if rows else {}
    )
    return {
        "scorers": rows,
        "failures": failures,
        "best": best,
        "raw_vs_sae": raw_vs_sae,
        "verdict": verdict,
        "highest_auroc": hindsight,  # in hindsight, per group (not a selection: `best` is chosen on seen)
        "explanations": explanation_counts(episodes),
    }


def explanation_counts(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scorer, over its alarms (before a failure, or on a success): how often each SAE latent
    was the one that moved most (monitors.explain), most frequent first, for caught failures and
    for false alarms."""
    from collections import Counter

    out: dict[str, Any] = {}
    for e in episodes:
        for name, x in (e.get("explanations") or {}).items():
            row = out.setdefault(name, {"failures": Counter(), "successes": Counter()})
            row["failures" if e["failed"] else "successes"][x["latents"][0]["latent"]] += 1
    return {n: {k: c.most_common(5) for k, c in row.items()} for n, row in out.items()}


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def enforced_pairs(
    eval_dir: Path, enforce_dir: Path, name: str, conditions: list[str]
) -> list[tuple[dict, dict]]:
    """(unmonitored, enforced) episode rows of `name`'s enforced run, paired by condition and seed."""
    import pyarrow.parquet as pq

    off = {(r["condition"], r["seed"]): r for r in pq.read_table(eval_dir / "episodes.parquet").to_pylist()
           if r["monitor"] == "none" and r["condition"] in conditions}  # fmt: skip
    on = {(r["condition"], r["seed"]): r for r in pq.read_table(enforce_dir / "episodes.parquet").to_pylist()
          if r["monitor"] == name}  # fmt: skip
    return [(off[k], on[k]) for k in sorted(set(off) & set(on))]


def enforcement_figures(pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    """Failures without and with a monitor enforcing on paired episodes (exact McNemar,
    one-sided: fewer with it), breakage, success lost and the fallback share."""
    from reports.stats import mcnemar, wilson

    a = np.array([not off["success"] for off, _ in pairs], dtype=bool)
    b = np.array([not on["success"] for _, on in pairs], dtype=bool)
    n = len(pairs)
    return {
        "n": n, "failed_off": wilson(int(a.sum()), n).to_dict(), "failed_on": wilson(int(b.sum()), n).to_dict(),
        "broken_off": sum(bool(off["broken"]) for off, _ in pairs), "broken_on": sum(bool(on["broken"]) for _, on in pairs),
        "prevented": int(np.sum(a & ~b)), "caused": int(np.sum(~a & b)),
        "p_fewer_failures": mcnemar(a, b, alternative="less") if n else math.nan,
        "success_lost": wilson(int(np.sum(~a & b)), int(np.sum(~a))).to_dict() | {"k": int(np.sum(~a & b))},
        "fallback": wilson(sum(on.get("fallback_step") is not None for _, on in pairs), n).to_dict(),
    }  # fmt: skip


def enforced_summary(
    eval_dir: Path, enforce_dir: Path, names: list[str], conditions: list[str]
) -> dict[str, Any]:
    """Per enforced scorer, on the held-out conditions' paired seeds: enforcement_figures."""
    return {
        n: enforcement_figures(enforced_pairs(eval_dir, enforce_dir, n, conditions)) for n in names
    }


def plot_bench(summary: dict[str, Any], path: Path) -> None:
    """Time-matched episode AUROC per scorer (95% CI) on seen and held-out conditions, and the share of
    failures caught in time beside the false-alarm rate on successes at the calibrated threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage import write_png

    rows = summary["scorers"]
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for j, group in enumerate(("seen", "held out")):
        vals = [rows[n].get(group, {}).get(RANKING, {}) for n in names]
        y = np.array([_nan(v.get("value")) for v in vals])
        err = np.array([[_nan(v.get("value")) - _nan(v.get("low")) for v in vals],
                        [_nan(v.get("high")) - _nan(v.get("value")) for v in vals]])  # fmt: skip
        axes[0].errorbar(np.arange(len(names)) + 0.15 * (j - 0.5), y, yerr=np.nan_to_num(err), fmt="o", capsize=3,
                         label=group)  # fmt: skip
        caught = [_nan(rows[n].get(group, {}).get("caught", {}).get("value")) for n in names]
        alarms = [_nan(rows[n].get(group, {}).get("false_alarm", {}).get("value")) for n in names]
        axes[1].scatter(alarms, caught, marker="os"[j], label=group)
        for n, x, c in zip(names, alarms, caught, strict=True):
            if math.isfinite(x) and math.isfinite(c):
                axes[1].annotate(n, (x, c), fontsize=6)
    axes[0].axhline(0.5, color="0.6", lw=0.8)
    axes[0].set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
    axes[0].set_ylabel("episode ROC-AUC, equal windows (failure vs success)")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("false alarms on successful episodes")
    axes[1].set_ylabel("failures caught before they happen")
    axes[1].set_xlim(-0.02, 1.02)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    try:
        write_png(path, fig, dpi=110)
    finally:
        plt.close(fig)


def _nan(x: Any) -> float:
    return float(x) if _finite(x) else math.nan


def print_bench(doc: dict[str, Any], console: Any = None) -> None:
    """Rich tables: per scorer and group, AUROC, caught, false alarms, lead time; then the
    enforced runs."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s, cfg = doc["summary"], doc["config"]
    alpha = cfg["alpha"]
    fails = ", ".join(
        f"{g} {f['failed']}/{f['n']}" for g, f in s["failures"].items() if ":" not in g
    )
    t = Table(title=f"monitor bench ({cfg['agent']}): failures {fails}; thresholds conformal at α={alpha} per episode",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
              caption="AUC: ROC-AUC of each episode's top score before failure; matched [95% CI]: the same with "
                      "each success cut at each failure's step (equal windows); set: seen or held-out shifts; hit: "
                      "failures alarmed before they happened; shuffled: the hits of the same alarms dealt at random "
                      "to episodes of the same kind (mean, permutation p of hitting as many); alarms: successful "
                      "episodes alarmed; lead: median steps from alarm to failure")  # fmt: skip
    for col in ("scorer", "set", "AUC", "matched", "hit", "shuffled", "alarms", "lead"):
        t.add_column(col, no_wrap=True)
    for name, per in s["scorers"].items():
        for g in ("seen", "held out"):
            m = per.get(g)
            if not m:
                continue
            a, c, f, lead = m["auroc"], m["caught"], m["false_alarm"], m["lead_steps"]
            mt = m.get("auroc_matched", {})
            t.add_row(name, g.split()[0], number(a["value"]), f"{number(mt.get('value'))} [{number(mt.get('low'))},{number(mt.get('high'))}]",
                      f"{c['k']}/{c['n']}", shuffled_cell(m),
                      f"{f['k']}/{f['n']}", "–" if not lead["n"] else f"{lead['median']:.0f}")  # fmt: skip
    console.print(t)
    for name, e in (s.get("enforced") or {}).items():
        console.print(f"enforcing {name} (held out, {e['n']} paired episodes): failed {e['failed_off']['value']:.2f} → "
                      f"{e['failed_on']['value']:.2f} (prevented {e['prevented']}, caused {e['caused']}, exact McNemar "
                      f"p={e['p_fewer_failures']:.2g}); broken {e['broken_off']} → {e['broken_on']}; success lost "
                      f"{e['success_lost']['k']} of {e['success_lost']['n']}")  # fmt: skip
    for name, ex in (s.get("explanations") or {}).items():
        if name == s.get("best") or name in (s.get("enforced") or {}):
            top = ", ".join(f"latent {lat} ×{n}" for lat, n in ex["failures"])
            console.print(
                f"{name}'s alarms before failures, by the SAE latent that moved most: {top or 'none'}"
            )
    v = s.get("verdict")
    if v:
        b = v["best_auroc"]
        console.print(f"best learned predictor (chosen on seen shifts): {v['best']}, held-out matched AUROC {number(b.get('value'))} "
                      f"[{number(b.get('low'))}, {number(b.get('high'))}]: {'beats' if v['beats'] else 'does NOT beat'} the "
                      f"simplest baseline {v['simplest']} ({number(v['simplest_auroc'].get('value'))}) and chance "
                      f"(interval above {number(v['bar'])})")  # fmt: skip


def shuffled_cell(m: dict[str, Any]) -> str:
    """The shuffled-alarm control's mean hits and permutation p ("–" in summaries made before it)."""
    sh = m.get("caught_shuffled")
    return "–" if not sh else f"{sh['mean']:.1f} (p {sh['p_more']:.2g})"


def number(x: Any) -> str:
    """A figure to two decimals, or "–" where there is none (None, NaN, inf)."""
    return f"{x:.2f}" if _finite(x) else "–"
