"""`unbreakable`: fragile objects that never break, so the peak grip force on them is the whole
grip and not cut short at the breaking threshold (ClosedLoop, `physteer run --unbreakable`,
`agent-eval --unbreakable`, `vla-study --unbreakable`); everything else about the episode is
unchanged, and a logged unbreakable run replays."""

from __future__ import annotations

import json

import pytest

from agents.protocol import ScriptedAgent
from cli.main import main
from envs.fragility import FragilityConfig
from rollouts.episode import ClosedLoop, EpisodeSpec


@pytest.fixture(scope="module")
def firm_on_fragile():
    """One firm grasp of a fragile object, breakable and unbreakable (same seed)."""
    out = {}
    for unbreakable in (False, True):
        loop = ClosedLoop(ScriptedAgent({"fragile": "firm", "rigid": "firm"}), image_size=64, max_steps=120,
                          record_decisions=False, unbreakable=unbreakable)  # fmt: skip
        try:
            (out[unbreakable],) = loop.run(
                [EpisodeSpec(seed=3, options={"material": "fragile", "color": "red"})]
            )
        finally:
            loop.close()
    return out


def test_a_firm_grip_breaks_a_fragile_object_only_when_breakable(firm_on_fragile):
    threshold = FragilityConfig().threshold
    broke, kept = firm_on_fragile[False].row, firm_on_fragile[True].row
    assert broke["broken"] and broke["broken_cause"] == "grip"
    assert broke["peak_grip_force"] < threshold + 5  # cut short where it broke
    assert not kept["broken"] and kept["success"]
    assert kept["peak_grip_force"] > threshold + 10  # the whole firm grip (~30 N on rigid objects)


def test_run_records_the_option_and_replays(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from rollouts.resimulate import Replayer

    monkeypatch.chdir(tmp_path)
    argv = ["run", "--agent", "scripted", "--executor", "serial", "--seeds", "0", "--max-steps", "110",
            "--image-size", "64", "--material", "fragile", "--unbreakable", "--name", "u", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    assert config["unbreakable"] is True
    (row,) = pq.read_table(tmp_path / "u" / "episodes.parquet").to_pylist()
    assert not row["broken"]
    replayer = Replayer(config, render=False)
    try:
        assert replayer.loop.envs[0].config.fragility.threshold == float("inf")
    finally:
        replayer.close()


def test_replay_follows_the_option(firm_on_fragile):
    """The firm grasp replays in unbreakable physics; in breakable physics the object breaks
    and the replay differs (the option is what the replayer runs)."""
    from rollouts.resimulate import Replayer

    rec = firm_on_fragile[True]
    for unbreakable in (True, False):
        replayer = Replayer(
            {"image_size": 64, "max_steps": 120, "unbreakable": unbreakable}, render=False
        )
        try:
            if unbreakable:
                replayer.replay(rec.row, rec.steps)  # raises at the first step that differs
            else:
                with pytest.raises(ValueError, match="does not replay"):
                    replayer.replay(rec.row, rec.steps)
        finally:
            replayer.close()
