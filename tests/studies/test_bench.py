"""`physteer bench --sections agents`: the VLA line beside the planner's, with each component's
share of the episodes' time (a tiny budget; figures are checked for consistency, never for speed)."""

from __future__ import annotations

import json

import pytest

from agents.tiny_model import TINY_VLM_DIR
from cli.main import main
from studies.bench import COMPONENTS, time_shares

MAX_STEPS = 8


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    return out, [
        "bench", "--sections", "agents", "--agent-episodes", "1", "--agent-workers", "1",
        "--max-steps", str(MAX_STEPS), "--json", str(out),
    ]  # fmt: skip


def test_bench_prints_the_vla_line_beside_the_planner(bench, capsys):
    out, argv = bench
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Planner vs VLA" in text and "VLA:" in text and "target >= 20" in text
    rows = [line for line in text.splitlines() if line.lstrip("│ ").startswith(("vla", "planner"))]
    assert len(rows) == 4, (
        text
    )  # each agent with the one-pass and the layered renderer, side by side
    doc = json.loads(out.read_text())["agents"]
    names = ["planner (vlm), tiny", "planner (vlm), tiny-layered", "vla, tiny", "vla, tiny-layered"]
    assert list(doc) == names
    for name in names:
        r = doc[name]
        agent, renderer = ("vla" if name.startswith("vla") else "vlm"), name.split(", ")[1]
        assert (
            r["agent"] == agent
            and r["renderer"] == renderer
            and r["episodes"] == 1
            and r["workers"] == 1
        )
        assert r["episodes_per_min"] > 0 and r["episodes_per_min_in_loop"] >= r["episodes_per_min"]
        assert 1 <= r["steps_per_episode"] <= MAX_STEPS and r["ms_per_step"] > 0
        shares = r["shares"]
        assert list(shares) == [*COMPONENTS, "other"]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert all(0 <= shares[c] <= 1 for c in COMPONENTS) and shares["other"] > -0.01
        assert (
            shares["render"] > 0 and shares["agent"] > 0 and shares["monitor"] > 0
        )  # shadow scorer on


def test_time_shares_of_rows():
    rows = [{"wall_s": 2.0, "render_s": 1.0, "agent_s": 0.5, "monitor_s": 0.0, "physics_s": 0.25},
            {"wall_s": 2.0, "render_s": 0.0, "agent_s": 0.5, "monitor_s": 0.25, "physics_s": 0.25}]  # fmt: skip
    assert time_shares(rows) == pytest.approx(
        {"render": 0.25, "agent": 0.25, "monitor": 0.0625, "physics": 0.125, "other": 0.3125}
    )
    with pytest.raises(ValueError, match="at least one"):
        time_shares([])


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--sections", "gpus"], "--sections 'gpus'"),
        (["--agent-episodes", "0"], "--agent-episodes (0)"),
        (["--chunk", "0"], "--chunk (0)"),
        (["--renderers", "tiny,vulkan"], "--renderers 'tiny,vulkan'"),
        (["--vla-model", str(TINY_VLM_DIR)], "not a VLA checkpoint"),
    ],
)
def test_bad_bench_input_fails_before_any_episode(argv, named, capsys):
    assert main(["bench", *argv]) == 2
    assert named in capsys.readouterr().err


def test_bench_adds_a_pi0_row_for_a_pi0_folder(tmp_path, capsys):
    """`--pi0-model DIR` runs a π0 beside the planner and the VLA, on the same seeds, with its
    components' shares (a random-weight π0 here: none ships yet)."""
    from agents.pi0_build import build_pi0

    pi0 = build_pi0(tmp_path / "pi0", hidden=32, chunk=4)
    out = tmp_path / "bench.json"
    assert main(["bench", "--sections", "agents", "--agent-episodes", "1", "--agent-workers", "1",
                 "--max-steps", str(MAX_STEPS), "--renderers", "tiny-layered", "--pi0-model", str(pi0),
                 "--json", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text())["agents"]
    assert list(doc) == ["planner (vlm)", "vla", "π0"]
    r = doc["π0"]
    assert r["agent"] == "pi0" and r["episodes_per_min"] > 0 and r["shares"]["agent"] > 0
    assert "π0" in capsys.readouterr().out
