"""`physteer agent-eval`: per-cell rates, peak grip force per material, the pattern control."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main
from studies.agent_eval import summarize


def _rows(gap: float, pattern: str, n: int = 12) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for color in ("red", "blue"):
        for material, force in (("fragile", 6.0), ("rigid", 6.0 + gap)):
            for k in range(n):
                rows.append({"color": color, "material": material, "seed": k, "pattern": pattern,
                             "success": k % 4 != 0, "broken": material == "fragile" and k == 0,
                             "peak_grip_force": force + rng.normal(0, 0.5), "carry_speed": 0.2,
                             "grip_command": 0.15 + gap / 40 if material == "rigid" else 0.15,
                             "release_height": None})  # fmt: skip
    return rows


def test_gap_and_its_ratio_under_the_pattern_control():
    s = summarize(_rows(30.0, "material"), control=_rows(3.0, "plain"))
    assert s["materials"]["fragile"]["n"] == 24
    assert s["materials"]["fragile"]["intact"]["value"] == pytest.approx(22 / 24)
    assert s["grip_gap"]["low"] < s["grip_gap"]["value"] < s["grip_gap"]["high"]
    assert 28 < s["grip_gap"]["value"] < 32
    ratio = s["control"]["gap_ratio"]
    assert 0.05 < ratio["low"] < ratio["value"] < ratio["high"] < 0.2
    assert np.isnan(
        s["materials"]["rigid"]["release_height"]["value"]
    )  # never released: no estimate
    assert s["control"]["command_gap_ratio"]["value"] == pytest.approx(0.1)  # (3/40) / (30/40)


def test_gap_interval_pairs_each_scene_fragile_with_rigid():
    """A seed draws one scene for both materials: a scene-to-scene spread that both materials
    share must not widen the gap's interval (an unpaired bootstrap would give about ±10 N)."""
    rows = _rows(20.0, "material")
    for r in rows:
        r["peak_grip_force"] = 5.0 * r["seed"] + (20.0 if r["material"] == "rigid" else 0.0)
    gap = summarize(rows)["grip_gap"]
    assert (
        gap["value"] == pytest.approx(20.0) and gap["high"] - gap["low"] < 1e-9 and gap["n"] == 48
    )


def test_vla_agent_eval_runs_both_patterns(tmp_path):
    out = tmp_path / "ae"
    code = main(["agent-eval", "--agent", "vla", "--seeds", "1", "--envs", "4", "--max-steps", "25",
                 "--pattern-control", "--unbreakable", "--out", str(out)])  # fmt: skip
    assert code == 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["config"]["unbreakable"] is True and not any(
        r["broken"] for r in saved["episodes"]
    )
    assert {r["pattern"] for r in saved["episodes"]} == {"material"}
    assert {r["pattern"] for r in saved["control_episodes"]} == {"plain"}
    assert len(saved["episodes"]) == 4 and set(saved["summary"]["control"]) >= {
        "grip_gap",
        "gap_ratio",
    }


def test_bad_pattern_is_refused_before_any_episode(tmp_path, capsys):
    assert main(["agent-eval", "--object-pattern", "stripes", "--out", str(tmp_path / "x")]) != 0
    assert "stripes" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_handling_word_reaches_every_instruction_and_a_bad_one_is_refused(tmp_path, capsys):
    assert main(["agent-eval", "--handling", "roughly", "--out", str(tmp_path / "x")]) != 0
    assert "'roughly'" in capsys.readouterr().err and not (tmp_path / "x").exists()
    from agents.protocol import ScriptedAgent
    from studies.agent_eval import run_cells

    rows = run_cells(ScriptedAgent(), seeds=1, max_steps=60, handling="gently")
    assert {r["handling"] for r in rows} == {"gently"}
    # the oracle follows the word: the gentle grip on rigid objects too
    assert [r["grip_command"] for r in rows] == pytest.approx([0.15] * 4)
