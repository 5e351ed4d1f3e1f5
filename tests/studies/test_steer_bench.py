"""`physteer steer-bench --quick` end to end through the CLI on the shipped tiny VLA: every
method and control gets a chosen strength, paired effects with intervals, a CSV and HTML
leaderboard; bad input is refused before any work; a method that moves nothing stops the run
before any episode."""

from __future__ import annotations

import csv
import json
import re
import textwrap

import pytest

from cli.main import main

NOOP = textwrap.dedent("""
    from steering import SteeringMethod, register_method
    from steering.edits import EditStack

    @register_method
    class DoesNothing(SteeringMethod):
        name = "noop"

        def _fit(self, data, backend):
            pass

        def _intervention(self, strength, seed):
            return EditStack([])
""")


def check_page(page, methods):
    """The leaderboard in a real browser: every figure loads, one table row per method, nothing
    overflows the page, no console error (skipped where Chromium is missing)."""
    from headless_chromium import HeadlessChromium, find_chromium

    if find_chromium() is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    with HeadlessChromium() as browser:
        tab = browser.open(page, width=1280, height=900)
        images = [m for m in tab.media if m["tag"] == "img"]
        assert len(images) == 4 and all(m["complete"] and m["width"] > 0 for m in images), images
        names = tab.evaluate("Array.from(document.querySelectorAll('table.steer tbody tr'))"
                             ".map(r => r.cells[0].innerText.split(' ')[0])")  # fmt: skip
        assert names == methods
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert tab.evaluate(overflow) == 0
        assert tab.console_errors == []


def test_quick_bench(tmp_path):
    out = tmp_path / "runs"
    assert (
        main(
            [
                "steer-bench",
                "--quick",
                "--name",
                "q",
                "--out",
                str(out),
                "--methods",
                "dom,selective",
            ]
        )
        == 0
    )
    root = out / "q"
    board = json.loads((root / "leaderboard.json").read_text())
    rows = {r["method"]: r for r in board["methods"]}
    assert set(rows) == {"dom", "selective", "random", "neuron-random"}
    assert rows["random"]["control"] and not rows["dom"]["control"]
    assert rows["random"]["strength"] == rows["dom"]["strength"]  # norm-matched to DiffMean
    for r in rows.values():
        assert r["effect"]["peak_grip_force"]["n"] == 2
        assert r["displacement"]["layer"] > 0 or r["displacement"]["last"] > 0
        measured = [d["strength"] for d in r["dose"]]
        if r["target_reached"]:  # a dose point, or bisection added measured points to the 5
            assert r["strength"] in measured or len(measured) > 5
        lo, hi = r["fit_info"]["strength_range"]  # None: unbounded
        assert (lo is None or lo <= r["strength"]) and (hi is None or r["strength"] <= hi)
    assert board["target_change_N"] * 1 == pytest.approx(
        0.5 * (board["expert_other_calibration_grip_N"] - board["unsteered_calibration_grip_N"])
    )
    with open(root / "leaderboard.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == [r["method"] for r in board["methods"]]
    # a rerun resumes: every episode is on disk, nothing is fitted again
    before = (root / "methods" / "dom" / "method.json").stat().st_mtime_ns
    assert (
        main(
            [
                "steer-bench",
                "--quick",
                "--name",
                "q",
                "--out",
                str(out),
                "--methods",
                "dom,selective",
            ]
        )
        == 0
    )
    assert (root / "methods" / "dom" / "method.json").stat().st_mtime_ns == before
    check_page(root / "leaderboard.html", [r["method"] for r in board["methods"]])


@pytest.mark.parametrize(("flags", "message"), [
    (["--methods", "dom,nope"], "steering method 'nope': expected one of"),
    (["--target", "0"], "target=0.0: a fraction of the way to the expert, in (0, 1]"),
    (["--agent", "pi0"], "agent='pi0': allowed ['vla', 'vlm']"),
    (["--method-files", "missing.py"], "method file 'missing.py': expected an existing .py file"),
    (["--positions", "tokens"], "positions='tokens': allowed ['image', 'text', 'state', 'slots', 'all', 'last']"),
    (["--method-params", "dom.rank"], "method_params entry 'dom.rank': expected NAME.KEY=VALUE"),
    (["--methods", "dom,lineas", "--method-params", "lineas.steps=0"], "steps=0: must be an int >= 1"),
    (["--method-params", "dom.rank=1"], "method_params ['rank'] of method 'dom': it takes ['positions']"),
    (["--method-params", "loreft.rank=2"], "method_params name ['loreft'], which this run does not run"),
    (["--fit-data", "pairs"], "fit_data='pairs': allowed ['unpaired', 'paired']"),
    (["--fit-data", "paired", "--images", "33"], "images=33: paired fit data need an even number of frames"),
    (["--demo-episodes", "1"], "demo_episodes=1 is not allowed: it must be an int >= 2"),
])  # fmt: skip
def test_bad_input_before_any_work(tmp_path, capsys, flags, message):
    assert main(["steer-bench", "--quick", "--name", "bad", "--out", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_method_that_moves_nothing_stops_before_any_episode(tmp_path, capsys):
    user = tmp_path / "noop.py"
    user.write_text(NOOP)
    assert main(["steer-bench", "--quick", "--name", "n", "--out", str(tmp_path), "--methods", "noop",
                 "--method-files", str(user), "--images", "16"]) == 2  # fmt: skip
    assert re.search(
        r"steering method 'noop' at strength .* silently does nothing", capsys.readouterr().err
    )
    assert not (tmp_path / "n" / "episodes").exists()


def test_choose_strength():
    from studies.steer_bench.run import choose_strength

    curve = [(-1.0, 4.0), (-2.0, 10.0), (-4.0, 2.0)]
    assert choose_strength(curve, 7.0) == (-1.5, True)  # between the bracketing dose points
    assert choose_strength(curve, 2.0) == (-0.5, True)  # an additive method starts at (0, 0)
    assert choose_strength(curve, 2.0, from_zero=False) == (-1.0, True)  # a clamp does not
    assert choose_strength(curve, 12.0) == (-2.0, False)  # never reached: the largest change
    assert choose_strength([(1.0, -3.0), (2.0, -6.0)], -4.5) == (1.5, True)  # a negative target
