"""The steering benchmark's leaderboard: leaderboard.json (everything), leaderboard.csv (one
row per method), leaderboard.html (the table, the dose curves, the two Pareto plots) and a
terminal table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from studies.steer_bench.config import SteerBenchConfig

CSV_COLUMNS = ("method", "control", "strength", "target_reached", "grip_change_N", "grip_low", "grip_high",
               "grip_change_red_N", "grip_change_blue_N", "p_fragile_change", "grip_command_change", "release_height_change", "carry_speed_change", "success", "success_unsteered",
               "broken", "broken_unsteered", "other_grip_change_N", "other_success", "plain_action_change", "jerk_change", "chatter_change",
               "persistence_retained", "units", "fit_seconds", "overhead_ratio", "displacement_layer",
               "displacement_last", "acts_on", "supervision", "paper")  # fmt: skip


def csv_row(r: dict[str, Any]) -> dict[str, Any]:
    """One method's leaderboard row, flat."""
    grip = r["effect"]["peak_grip_force"]
    return {"method": r["method"], "control": r["control"], "strength": r["strength"],
            "target_reached": r["target_reached"], "grip_change_N": grip["value"], "grip_low": grip["low"],
            "grip_high": grip["high"], "grip_change_red_N": r["effect_by_color"].get("red", {}).get("value"),
            "grip_change_blue_N": r["effect_by_color"].get("blue", {}).get("value"),
            "p_fragile_change": r["p_fragile"]["value"], "grip_command_change": r["effect"]["grip_command"]["value"],
            "release_height_change": r["effect"]["release_height"]["value"],
            "carry_speed_change": r["effect"]["carry_speed"]["value"], "success": r["success"]["value"],
            "success_unsteered": r["success_unsteered"]["value"], "broken": r["broken"]["value"],
            "broken_unsteered": r["broken_unsteered"]["value"],
            "other_grip_change_N": r["other_material"]["peak_grip_force"]["value"],
            "other_success": r["other_success"]["value"], "plain_action_change": r["plain"]["action_change"]["value"], "jerk_change": r["motion"].get("jerk"),
            "chatter_change": r["motion"].get("chatter"), "persistence_retained": r["persistence"]["retained"],
            "units": r["cost"]["units"], "fit_seconds": r["cost"]["fit_seconds"],
            "overhead_ratio": r["cost"]["overhead_ratio"], "displacement_layer": r["displacement"]["layer"],
            "displacement_last": r["displacement"]["last"], "acts_on": r["cost"]["acts_on"],
            "supervision": r["cost"]["supervision"], "paper": r["paper"]}  # fmt: skip


def plot_doses(summary: dict[str, Any], path: Path) -> None:
    """Every method's calibration dose curve (mean grip change against strength) and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage import write_png

    rows = summary["methods"]
    cols = 4
    fig, axes = plt.subplots((len(rows) + cols - 1) // cols, cols, figsize=(12, 2.6 * ((len(rows) + cols - 1) // cols)),
                             squeeze=False)  # fmt: skip
    for ax, r in zip(axes.flat, rows, strict=False):
        xs = [0.0] + [d["strength"] for d in r["dose"]]
        ys = [0.0] + [d["effect"] if d["effect"] is not None else float("nan") for d in r["dose"]]
        ax.plot(xs, ys, "o-", color="#888" if r["control"] else "#3b7dd8")
        ax.axhline(summary["target_change_N"], color="#d8863b", ls="--", lw=1)
        ax.axvline(r["strength"], color="#2a9d55", lw=1)
        ax.set_title(r["method"] + (" (control)" if r["control"] else ""), fontsize=10)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.supxlabel("strength (the method's own units)")
    fig.supylabel("peak grip change (N), calibration seeds")
    fig.tight_layout()
    write_png(path, fig)
    plt.close(fig)


def plot_pareto(summary: dict[str, Any], path: Path, y_key: str) -> None:
    """Effect (grip change, evaluation seeds) against success retained or the side effect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage import write_png

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in summary["methods"]:
        x = r["effect"]["peak_grip_force"]
        y = r["success"] if y_key == "success" else r["other_material"]["peak_grip_force"]
        if x["value"] is None or y["value"] is None:
            continue
        ax.errorbar(x["value"], y["value"], xerr=[[x["value"] - x["low"]], [x["high"] - x["value"]]],
                    yerr=[[y["value"] - y["low"]], [y["high"] - y["value"]]], fmt="o", ms=4,
                    color="#888" if r["control"] else "#3b7dd8", elinewidth=0.8)  # fmt: skip
        ax.annotate(
            r["method"],
            (x["value"], y["value"]),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.axvline(summary["target_change_N"], color="#d8863b", ls="--", lw=1)
    ax.set_xlabel("peak grip change on the steered material (N, 95% CI)")
    ax.set_ylabel(
        "success (95% CI)"
        if y_key == "success"
        else "grip change on the other material (N, 95% CI)"
    )
    fig.tight_layout()
    write_png(path, fig)
    plt.close(fig)


def plot_traces(summary: dict[str, Any], path: Path) -> None:
    """Each method's mean commanded grip per step (evaluation seeds, unbreakable objects) over
    the unsteered trace: where the effect starts, and whether it fades while the steering is on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage import write_png

    rows, cols = summary["methods"], 4
    n_rows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(12, 2.4 * n_rows), squeeze=False, sharey=True)
    base = summary.get("unsteered_trace") or []
    for ax, r in zip(axes.flat, rows, strict=False):
        ax.plot(base, color="#bbb", lw=1, label="unsteered")
        ax.plot(
            r.get("trace") or [],
            color="#888" if r["control"] else "#3b7dd8",
            lw=1.2,
            label=r["method"],
        )
        ax.set_title(r["method"], fontsize=10)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.supxlabel("step")
    fig.supylabel("mean commanded grip")
    fig.tight_layout()
    write_png(path, fig)
    plt.close(fig)


def write_html(summary: dict[str, Any], root: Path) -> Path:
    """leaderboard.html: the table with intervals, the dose curves and the Pareto plots."""
    from reports.html import est_html, img, page, section, table
    from storage import write_text

    head = ["method", "strength", "grip change (N)", "success", "broken", "other material grip (N)",
            "retained late/early", "plain objects |Δa|", "units", "overhead ×", "‖Δh‖/‖h‖ layer / last"]  # fmt: skip
    body = []
    for r in summary["methods"]:
        name = r["method"] + (" <i>(control)</i>" if r["control"] else "") + ("" if r["target_reached"] in (True, None)
                                                                               else " <i>(target not reached)</i>")  # fmt: skip
        ret = r["persistence"]["retained"]
        body.append([name, f"{r['strength']:+.4g}", est_html(r["effect"]["peak_grip_force"], signed=True),
                     est_html(r["success"], pct=True), est_html(r["broken"], pct=True, p=r["broken_p"]),
                     est_html(r["other_material"]["peak_grip_force"], signed=True),
                     "–" if ret is None else f"{ret:.2f}", est_html(r["plain"]["action_change"]), str(r["cost"]["units"]), f"{r['cost']['overhead_ratio']:.2f}",
                     f"{r['displacement']['layer']:.3f} / {r['displacement']['last']:.3f}"])  # fmt: skip
    cfg = summary["config"]
    shows = [f"Each method's strength was chosen on {cfg['calibration_seeds']} calibration seeds to change the peak grip "
             f"by {summary['target_change_N']:+.2f} N ({cfg['target']:.0%} of the way to the scripted expert on "
             f"{'rigid' if cfg['material'] == 'fragile' else 'fragile'} objects), then scored on {cfg['seeds']} other seeds.",
             f"Prompting: {summary['prompting']}."]  # fmt: skip
    sections = [
        section("table", "Leaderboard", shows, table(head, body, "steer")),
        section("doses", "Dose curves (calibration seeds)", [], img(root / "dose_curves.png", "dose curves")),
        section("traces", "Per-step commanded grip (evaluation seeds)", [], img(root / "traces.png", "traces")),
        section("pareto", "Effect against success and side effect", [],
                img(root / "pareto_success.png", "effect vs success") + img(root / "pareto_side.png", "effect vs side effect")),
    ]  # fmt: skip
    meta = f"agent {cfg['agent']}, model {cfg['model']}, steered material {cfg['material']}"
    return write_text(root / "leaderboard.html", page("Steering benchmark", meta, [], sections))


def print_table(summary: dict[str, Any], console: Console) -> None:
    """The leaderboard in the terminal (≤ 100 columns)."""
    t = Table(title=f"steering benchmark: target grip change {summary['target_change_N']:+.2f} N")
    for col in (
        "method",
        "strength",
        "grip Δ N [95% CI]",
        "success",
        "broken",
        "other Δ N",
        "units",
    ):
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in summary["methods"]:
        g = r["effect"]["peak_grip_force"]
        grip = (
            "–" if g["value"] is None else f"{g['value']:+.2f} [{g['low']:+.1f}, {g['high']:+.1f}]"
        )
        o = r["other_material"]["peak_grip_force"]["value"]
        name = (
            r["method"]
            + (" (ctl)" if r["control"] else "")
            + ("" if r["target_reached"] in (True, None) else " *")
        )
        t.add_row(name, f"{r['strength']:+.3g}", grip, f"{r['success']['value']:.0%}", f"{r['broken']['value']:.0%}",
                  "–" if o is None else f"{o:+.2f}", str(r["cost"]["units"]))  # fmt: skip
    console.print(t)
    console.print("* target not reached on calibration seeds: the dose of the largest change runs")


def write_leaderboard(summary: dict[str, Any], cfg: SteerBenchConfig, console: Console) -> Path:
    """Every output of the benchmark; returns leaderboard.json's path."""
    from storage import write_json, write_text

    root = cfg.root
    plot_doses(summary, root / "dose_curves.png")
    plot_traces(summary, root / "traces.png")
    plot_pareto(summary, root / "pareto_success.png", "success")
    plot_pareto(summary, root / "pareto_side.png", "side")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for r in summary["methods"]:
        writer.writerow(csv_row(r))
    write_text(root / "leaderboard.csv", buffer.getvalue())
    write_html(summary, root)
    path = write_json(root / "leaderboard.json", summary)
    print_table(summary, console)
    console.print(f"leaderboard: {path} (.csv, .html)")
    return path
