"""Every command checks its arguments before any work starts: a bad value fails fast (exit 2),
names the value and what is allowed, and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.main import main

CASES = [
    (["run", "--conditions", "unsteered,warp:1"], "warp:1"),
    (["run", "--executor", "slurm"], "executor 'slurm'"),
    (["run", "--envs-per-worker", "0"], "envs_per_worker=0"),
    (["run", "--executor", "serial", "--workers", "2"], "workers=2"),
    (["run", "--seeds", "3,3"], "distinct"),
    (["run", "--monitors", "no/such/scorer"], "no/such/scorer"),
    (["run", "--enforce", "maha"], "enforce arm 'maha'"),
    (["run", "--conditions", "noise:2@5"], "(0, 1]"),
    (["run", "--material", "glass"], "material 'glass'"),
    (["run", "--conditions", "unsteered,neuron-random:zebra:5"], "answer word 'zebra'"),
    (
        ["run", "--agent", "vla", "--conditions", "neuron:quickly:5,neuron:zebra:5"],
        "answer word 'zebra'",
    ),
    (["demo", "--seeds", "0"], "seeds=0"),
    (["demo", "--quick", "--sarm-perturbations", "laser"], "'laser'"),
    (["sarm-eval", "--k", "-1"], "k=-1.0"),
    (["env-demo", "--seeds", "0"], "seeds=0"),
    (["agent-eval", "--seeds", "0"], "seeds=0"),
    (["agent-eval", "--threshold", "2"], "threshold=2.0"),
    (["bench", "--episodes", "0"], "--episodes (0)"),
    (["bench", "--variants", "gpu-farm"], "variant 'gpu-farm'"),
]


@pytest.mark.parametrize("argv, named", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_values_fail_fast_and_name_the_value(argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert named in err, err
    assert out == "", "a rejected command must not start any stage (nothing printed but the error)"
    assert not any(tmp_path.iterdir()), "a rejected command must not start writing"


def test_demo_with_a_bad_value_fails_before_any_work_from_the_shell(tmp_path):
    """`physteer demo --seeds 0` used to start the whole demo. It must refuse before any stage:
    nothing written, nothing printed but the error (no wall-clock bound: a loaded CI machine
    took 15 s to import torch and transformers alone)."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--seeds", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "seeds=0" in proc.stderr
    assert proc.stdout == ""
    assert not any(tmp_path.iterdir())


def test_every_command_prints_its_help():
    """`physteer <command> --help` prints each command's flags (argparse %-formats help texts: a
    literal % in a docstring that becomes a flag's help once crashed `physteer demo --help`)."""
    import argparse
    import contextlib
    import io

    from cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "demo" in commands and len(commands) > 10
    for name, sub in commands.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            sub.print_help()
        assert out.getvalue().startswith("usage:"), name
