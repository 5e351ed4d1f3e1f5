"""The shift suite (`physteer shift-suite`): how often does a policy fail on its own when the scene
varies in ways it was not trained on?

One experiment through the runner (resume, workers, Ray, exact replay, Parquet logs): the
unshifted scene and every `shift:<kind>:<strength>` condition (envs.shifts: camera, lighting,
table, size, mass, position, distractors) on the same paired seeds, no attack, no monitor. Per
condition: failures (any episode that does not succeed), split into broken objects and
timeouts, each with its 95% Wilson interval, and the paired exact McNemar test against the
unshifted scene on the same seeds. The run folder is the natural-failure data of the monitor
benchmarks (episode rows with `success`, `broken_step`; decision activations per episode).

    cfg = ShiftSuiteConfig(agent="vla", seeds=20, workers=2)
    doc = run_shift_suite(cfg)          # runs/shift-suite/summary.json, failures.png
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.shifts import SHIFT_KINDS, Shift

SUITE_AGENTS = ("vla", "vlm")


@dataclass
class ShiftSuiteConfig:
    """Settings of one shift-suite run.

    Attributes:
        agent: "vla" (the VLA's own action tokens move the arm) or "vlm" (the planner).
        model: "tiny" (the embedded model of that agent), a local folder or a cached hub id.
        kinds: shift kinds (envs.shifts.SHIFT_KINDS).
        strengths: strengths each kind runs at, in (0, 1] (0 is the unshifted scene, always run).
        seeds: paired seeds per condition (the same seeds in every condition).
        first_seed: the first seed.
        max_steps: steps before truncation (a timeout counts as a failure).
        workers: processes (or Ray actors) running episodes.
        envs_per_worker: environments a worker steps together.
        executor: "serial", "processes" or "ray".
        out: the run folder.
        plots: write failures.png.
    """

    agent: str = "vla"
    model: str = "tiny"
    kinds: tuple[str, ...] = SHIFT_KINDS
    strengths: tuple[float, ...] = (0.5, 1.0)
    seeds: int = (
        40  # 600 episodes: over 100 natural failures of the tiny VLA (about 6 min on 2 cores)
    )
    first_seed: int = 7_000_000
    max_steps: int = 200
    workers: int = 2
    envs_per_worker: int = 1
    executor: str = "processes"
    out: str = "runs/shift-suite"
    plots: bool = True

    def check(self) -> None:
        """ValueError naming the first bad setting (before any episode)."""
        if self.agent not in SUITE_AGENTS:
            raise ValueError(f"agent {self.agent!r}: expected one of {list(SUITE_AGENTS)}")
        if not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(
                f"kinds {list(self.kinds)}: give distinct shift kinds among {list(SHIFT_KINDS)}"
            )
        if not self.strengths or len(set(self.strengths)) != len(self.strengths):
            raise ValueError(f"strengths {list(self.strengths)}: give distinct strengths in (0, 1]")
        for kind in self.kinds:
            for s in self.strengths:
                Shift(kind, s)  # ValueError naming the kind or the strength
        if 0 in self.strengths:
            raise ValueError(
                "strengths: 0 is the unshifted scene, which always runs; give strengths in (0, 1]"
            )
        for name in ("seeds", "max_steps", "workers", "envs_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        self.experiment().validate()

    @property
    def conditions(self) -> list[str]:
        """ "unsteered" (the unshifted scene), then shift:<kind>:<strength> per kind and strength."""
        return [
            "unsteered",
            *(f"shift:{k}:{s:g}" for k in self.kinds for s in sorted(self.strengths)),
        ]

    def experiment(self) -> Any:
        """The runner's ExperimentConfig of this suite."""
        from rollouts.experiment_config import ExperimentConfig

        out = Path(self.out)
        return ExperimentConfig(name=out.name, out=str(out.parent), conditions=self.conditions,
                                seeds=list(range(self.first_seed, self.first_seed + self.seeds)), agent=self.agent,
                                model=self.model, max_steps=self.max_steps, holding=False, workers=self.workers,
                                envs_per_worker=self.envs_per_worker, executor=self.executor)  # fmt: skip


def outcome(row: dict[str, Any]) -> str:
    """ "success", "broken" or "timeout" (neither: the episode ran out of steps unfinished)."""
    return "success" if row["success"] else ("broken" if row["broken"] else "timeout")


def summarize_suite(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per condition: failure, broken and timeout rates (Wilson 95% CIs) and, on the seeds it
    shares with the unshifted scene, the paired exact McNemar p of its failures against it.

    Args:
        rows: episode rows (episodes.parquet) with condition, seed, material, success, broken.

    Returns:
        {"conditions": {name: {"kind", "strength", "n", "failure", "broken", "timeout",
         "failure_fragile", "failure_rigid", "paired": {"n", "only_shifted", "only_unshifted",
         "p"}}}, "failures": total failed episodes, "natural_failures": failed shifted episodes}.
    """
    from reports.stats import mcnemar, wilson

    def rate(rs: list[dict[str, Any]], what: str) -> dict[str, Any]:
        k = sum(outcome(r) != "success" if what == "failure" else outcome(r) == what for r in rs)
        return wilson(k, len(rs)).to_dict() | {"k": k}

    by_cond: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_cond.setdefault(r["condition"], []).append(r)
    base = {r["seed"]: outcome(r) != "success" for r in by_cond.get("unsteered", [])}
    out: dict[str, Any] = {"conditions": {}}
    for name, rs in by_cond.items():
        kind, strength = (
            ("none", 0.0)
            if name == "unsteered"
            else (name.split(":")[1], float(name.split(":")[2]))
        )
        pairs = [(base[r["seed"]], outcome(r) != "success") for r in rs if r["seed"] in base]
        a, b = (np.array([p[i] for p in pairs], dtype=bool) for i in (0, 1))
        out["conditions"][name] = {
            "kind": kind, "strength": strength, "n": len(rs),
            **{w: rate(rs, w) for w in ("failure", "broken", "timeout")},
            **{f"failure_{m}": rate([r for r in rs if r["material"] == m], "failure") for m in ("fragile", "rigid")},
            "paired": {"n": len(pairs), "only_shifted": int(np.sum(b & ~a)), "only_unshifted": int(np.sum(a & ~b)),
                       "p": mcnemar(a, b) if pairs else float("nan")},
        }  # fmt: skip
    out["failures"] = sum(outcome(r) != "success" for r in rows)
    out["natural_failures"] = sum(
        outcome(r) != "success" for r in rows if r["condition"] != "unsteered"
    )
    return out


def run_shift_suite(cfg: ShiftSuiteConfig, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the suite; write and return summary.json (module docstring)."""
    import pyarrow.parquet as pq

    from rollouts.experiment import run_experiment
    from storage import write_json

    cfg.check()
    t0 = time.time()
    run_dir = run_experiment(cfg.experiment(), progress=progress)
    rows = pq.read_table(run_dir / "episodes.parquet").to_pylist()
    doc = {"config": asdict(cfg), "run": str(run_dir), "seconds": time.time() - t0,
           "summary": summarize_suite(rows)}  # fmt: skip
    if cfg.plots:
        plot_failures(doc["summary"], run_dir / "failures.png")
    write_json(run_dir / "summary.json", doc)
    return doc


def plot_failures(summary: dict[str, Any], path: Path) -> None:
    """Failure rate against strength per kind (95% Wilson intervals), the unshifted rate as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = summary["conditions"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if "unsteered" in conds:
        f = conds["unsteered"]["failure"]
        ax.axhspan(f["low"], f["high"], color="0.85", label=f"unshifted (n={f['n']})")
    kinds = sorted({c["kind"] for c in conds.values()} - {"none"})
    for i, kind in enumerate(kinds):
        pts = sorted((c["strength"], c["failure"]) for c in conds.values() if c["kind"] == kind)
        x = [s for s, _ in pts]
        y = np.array([f["value"] for _, f in pts])
        err = np.array(
            [[f["value"] - f["low"] for _, f in pts], [f["high"] - f["value"] for _, f in pts]]
        )
        ax.errorbar(
            np.array(x) + 0.01 * (i - len(kinds) / 2),
            y,
            yerr=err,
            marker="o",
            capsize=3,
            label=kind,
        )
    ax.set_xlabel("shift strength (0 = the training scene)")
    ax.set_ylabel("failure rate (not successful)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from storage import write_png

    try:
        write_png(path, fig, dpi=110)
    finally:
        plt.close(fig)


def print_suite(doc: dict[str, Any], console: Any = None) -> None:
    """A rich table: per condition, failures, broken, timeouts (95% CIs) and the paired test."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = doc["summary"]
    cfg = doc["config"]
    t = Table(title=f"shift suite: {cfg['agent']} ({cfg['model']}), {cfg['seeds']} paired seeds per condition",
              caption="failed: not successful, rate [95% Wilson CI]; broken, timeout, frag·rigid: failed "
                      "episodes; paired: +seeds failing only with / −only without the shift, exact McNemar p",
              box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    for col in ("condition", "failed", "broken", "timeout", "frag·rigid", "paired"):
        t.add_column(col, no_wrap=True)
    order = [c for c in ShiftSuiteConfig(**cfg).conditions
             if c in s["conditions"]]  # fmt: skip
    for name in order:
        c, p = s["conditions"][name], s["conditions"][name]["paired"]
        f = c["failure"]
        paired = (
            "–"
            if name == "unsteered"
            else f"+{p['only_shifted']}/−{p['only_unshifted']} {p['p']:.2g}"
        )
        t.add_row(name.removeprefix("shift:") if name != "unsteered" else "unshifted",
                  f"{f['value']:.2f} [{f['low']:.2f},{f['high']:.2f}]", str(c["broken"]["k"]), str(c["timeout"]["k"]),
                  f"{c['failure_fragile']['k']}·{c['failure_rigid']['k']}", paired)  # fmt: skip
    console.print(t)
    console.print(f"{s['failures']} failed episodes, {s['natural_failures']} of them under a shift; "
                  f"{doc['seconds']:.0f} s")  # fmt: skip
