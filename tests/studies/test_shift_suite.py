"""The shift suite: shifts as conditions of the runner (paired seeds, exact replay), the
failure summary with Wilson intervals and paired tests, the CLI, and bad settings refused
before any episode."""

from __future__ import annotations

import json
import os

import pytest

from cli.main import main
from rollouts.conditions import parse_condition
from studies.shift_suite import ShiftSuiteConfig, summarize_suite


def test_a_shift_is_a_condition_that_sets_the_reset_options():
    c = parse_condition("shift:mass:0.5")
    assert (c.kind, c.feature, c.magnitude, c.env_options) == (
        "shift",
        "mass",
        0.5,
        {"shift": "mass:0.5"},
    )
    assert parse_condition("unsteered").env_options == {}
    assert c.reset_options("fragile") == {"material": "fragile", "shift": "mass:0.5"}
    assert parse_condition("unsteered").reset_options() is None
    from rollouts.experiment_config import ExperimentConfig

    ExperimentConfig(
        agent="scripted", conditions=["unsteered", "shift:mass:1"]
    ).validate()  # no model needed
    for text, named in (("shift:mass:0.5@3", "drop '@3'"), ("shift:gravity:1", "shift kind 'gravity'"),
                        ("shift:mass:3", "shift strength 3.0")):  # fmt: skip
        with pytest.raises(ValueError, match=named):
            parse_condition(text)


def row(cond, seed, success, broken=False, material="fragile"):
    return {
        "condition": cond,
        "seed": seed,
        "success": success,
        "broken": broken,
        "material": material,
    }


def test_summary_counts_failures_by_kind_and_pairs_them_with_the_unshifted_seeds():
    rows = [row("unsteered", s, True) for s in range(10)]
    rows += [
        row("shift:mass:1", s, s >= 6, broken=s < 3, material="rigid" if s % 2 else "fragile")
        for s in range(10)
    ]
    out = summarize_suite(rows)["conditions"]
    mass = out["shift:mass:1"]
    assert (mass["failure"]["k"], mass["broken"]["k"], mass["timeout"]["k"]) == (6, 3, 3)
    assert mass["failure"]["low"] < 0.6 < mass["failure"]["high"] and mass["failure"]["n"] == 10
    assert (mass["paired"]["only_shifted"], mass["paired"]["only_unshifted"]) == (6, 0)
    assert mass["paired"]["p"] == pytest.approx(2 * 0.5**6)
    assert mass["failure_fragile"]["k"] + mass["failure_rigid"]["k"] == 6
    assert summarize_suite(rows)["natural_failures"] == 6


@pytest.mark.parametrize("fields, named", [
    ({"kinds": ("gravity",)}, "shift kind 'gravity'"), ({"strengths": (1.5,)}, "shift strength 1.5"),
    ({"strengths": (0.0, 1.0)}, "0 is the unshifted scene"), ({"agent": "scripted"}, "agent 'scripted'"),
    ({"seeds": 0}, "seeds=0"), ({"kinds": ("mass", "mass")}, "distinct shift kinds"),
])  # fmt: skip
def test_bad_settings_fail_before_any_episode(fields, named):
    with pytest.raises(ValueError, match=named):
        ShiftSuiteConfig(**fields).check()


def test_the_cli_runs_resumes_and_replays_a_shifted_episode(tmp_path):
    from rollouts.replay import replay

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        args = ["shift-suite", "--kinds", "mass,distractors", "--strengths", "1", "--seeds", "2", "--max-steps", "30",
                "--executor", "serial", "--workers", "1", "--name", "suite"]  # fmt: skip
        assert main(args) == 0
        doc = json.loads((tmp_path / "runs" / "suite" / "summary.json").read_text())
        assert set(doc["summary"]["conditions"]) == {
            "unsteered",
            "shift:mass:1",
            "shift:distractors:1",
        }
        assert (tmp_path / "runs" / "suite" / "failures.png").is_file()
        assert main(args) == 0  # resumes: nothing to run
        result = replay(
            tmp_path / "runs" / "suite", f"shift:distractors:1/{ShiftSuiteConfig.first_seed + 1}"
        )
        assert result["actions_equal"] and result["outcome_equal"], result["differences"]
        # re-simulated from the log's actions (what the LeRobot export does): the shifted scene again
        import pyarrow.parquet as pq

        from rollouts.resimulate import replay_frames

        root = tmp_path / "runs" / "suite"
        seed = ShiftSuiteConfig.first_seed + 1
        (episode,) = [e for e in pq.read_table(root / "episodes.parquet").to_pylist()
                      if e["condition"] == "shift:distractors:1" and e["seed"] == seed]  # fmt: skip
        steps = [s for s in pq.read_table(root / "steps.parquet").to_pylist()
                 if s["condition"] == "shift:distractors:1" and s["seed"] == seed]  # fmt: skip
        config = json.loads((root / "config.json").read_text())
        assert (
            len(replay_frames(config, episode, steps, render=False)["states"]) == episode["steps"]
        )
        assert main(["shift-suite", "--strengths", "2", "--name", "bad"]) == 2
        assert not (tmp_path / "runs" / "bad").exists()
    finally:
        os.chdir(cwd)
