"""The demo's VLA stage: the embedded tiny VLA, whose own action tokens move the arm.

    closed loop over color × material → graded steering (vla-study) → SARM on the VLA

Small versions of three commands, each resumable through its own marker:
- `physteer agent-eval --agent vla`: success, intact, peak grip force per material, and the
  same seeds with the material pattern removed and unbreakable objects (the grip-force gap
  ratio);
- `physteer vla-study`: SAE steering toward rigid at a few levels, a norm-matched random
  direction, and the neuron cluster of a speed word beside a random cluster;
- `physteer sarm-eval --agent vla`: the monitor against TA2 on the VLA, with and without the
  monitor enforcing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from storage import marker_reads, write_json
from studies.demo.layout import VLA_MARKERS

#: Stage markers under the demo folder (written last by each part).


def run_vla_stage(cfg: Any, root: Path, console: Console) -> dict[str, Any]:
    """Run (or reuse) the three parts; returns their summaries for the report.

    Args:
        cfg: the DemoConfig (vla_* fields, workers).
        root: the demo folder.
        console: where tables go.
    """

    out: dict[str, Any] = {}
    path = root / VLA_MARKERS["closed loop"]
    if not marker_reads(path):
        from agents.vla_agent import VLAAgent
        from studies.agent_eval import run_cells, run_pattern_control, summarize

        agent = VLAAgent("tiny-vla", tap_layer=None)
        run = dict(
            seeds=cfg.vla_seeds_per_cell, first_seed=2_000_000, envs=4, max_steps=cfg.vla_max_steps
        )
        rows = run_cells(agent, **run)
        control = run_pattern_control(agent, **run)
        write_json(
            path,
            {"summary": summarize(rows, control), "episodes": rows, "control_episodes": control},
        )
    out["closed_loop"] = json.loads(path.read_text())["summary"]
    _print_closed_loop(out["closed_loop"], console)

    from studies.vla.study import VLAStudyConfig, run_vla_study

    study = VLAStudyConfig(name="study", out=str(root / "vla"), model="tiny", seeds=cfg.vla_seeds,
                           images=cfg.vla_images, sae_steps=cfg.vla_sae_steps, sae_lr=cfg.sae_lr,
                           sae_levels=list(cfg.vla_sae_levels), dom_scales=[0.5], neuron_words=["quickly"],
                           max_steps=cfg.vla_max_steps, workers=cfg.workers)  # fmt: skip
    path = root / VLA_MARKERS["steering"]
    if not marker_reads(path):
        run_vla_study(study, console=console, progress=False)
    else:
        from studies.vla.report import print_summary

        print_summary(json.loads(path.read_text()), console)
    out["steering"] = json.loads(path.read_text())

    from studies.sarm.eval import print_summary, run_sarm_eval

    path = root / VLA_MARKERS["sarm"]
    if not marker_reads(path):
        doc = run_sarm_eval(cfg.vla_sarm_config(), log=console.print, progress=True)
    else:
        doc = json.loads(path.read_text())
    print_summary(doc, console)
    out["sarm"] = doc
    return out


def _print_closed_loop(s: dict[str, Any], console: Console) -> None:
    for material, c in s["materials"].items():
        f = c["peak_grip_force"]
        console.print(f"VLA on {material} objects (n={c['n']}): success {c['success']['value']:.0%}, "
                      f"intact {c['intact']['value']:.0%}, peak grip {f['value']:.1f} N [{f['low']:.1f}, {f['high']:.1f}]")  # fmt: skip
    ratio = s.get("control", {}).get("gap_ratio")
    if ratio:
        console.print(f"material pattern removed (unbreakable objects): grip-force gap {ratio['value']:.2f} × the trained gap "
                      f"[{ratio['low']:.2f}, {ratio['high']:.2f}]")  # fmt: skip
