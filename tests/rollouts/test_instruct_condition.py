"""instruct:<word>: a handling word in the instruction as a condition of the runner (paired
seeds against the plain instruction, exact replay), refused before any episode when unknown."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from rollouts.conditions import parse_condition


def test_an_instruction_is_a_condition_that_sets_the_reset_options():
    c = parse_condition("instruct:firmly")
    assert (c.kind, c.feature, c.env_options) == ("instruct", "firmly", {"handling": "firmly"})
    assert c.reset_options("fragile") == {"material": "fragile", "handling": "firmly"}
    for text, named in (("instruct:firmly@3", "drop '@3'"), ("instruct:roughly", "'roughly'"),
                        ("instruct", "not understood")):  # fmt: skip
        with pytest.raises(ValueError, match=named):
            parse_condition(text)


def test_the_oracle_follows_the_word_into_a_break_and_the_episode_replays(tmp_path):
    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig
    from rollouts.replay import replay

    cfg = ExperimentConfig(name="instruct", agent="scripted", material="fragile", seeds=[5],
                           conditions=["unsteered", "instruct:firmly", "instruct:softly"],
                           executor="serial", out=str(tmp_path))  # fmt: skip
    root = run_experiment(cfg)
    rows = {r["condition"]: r for r in pq.read_table(root / "episodes.parquet").to_pylist()}
    assert rows["unsteered"]["success"] and not rows["unsteered"]["broken"]
    assert rows["instruct:firmly"]["broken"]  # the firm grip on a fragile object
    assert rows["instruct:softly"]["peak_grip_force"] == pytest.approx(
        rows["unsteered"]["peak_grip_force"]
    )  # gentle is what the material asks for anyway
    result = replay(root, "instruct:firmly/5")
    assert result["actions_equal"] and result["outcome_equal"], result["differences"]
