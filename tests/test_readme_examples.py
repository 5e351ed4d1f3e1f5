"""The examples of the README and of every documentation page run as written, on a tiny budget,
in one temp folder: the README first, then the pages in mkdocs.yml's nav order.

Every ```bash and ```python block of README.md and docs/**.md either runs here or is listed in
SKIP with the reason it cannot run in CI. A block not in SKIP runs, so a new or edited example
is run (and fails the test if it does not work); a SKIP or budget entry that no longer matches
a block fails too. Blocks that depend on each other run in order in one folder (the
Experiments run that `physteer replay` replays is the run the dashboard and the LeRobot export
read), and the python blocks share one namespace, as a doctest file does (the agents example
acts on the environment example's `obs`).

The budget: for each `physteer` sub-command, the flags in BUDGET replace the README's values,
or are appended where the README leaves a flag at its default; python blocks get the textual
substitutions in PY_BUDGET. Nothing else is changed. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def doc_pages() -> list[Path]:
    """README.md, then every page of mkdocs.yml's nav, in order (the order the examples run in)."""
    import yaml

    def walk(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for v in node.values() for p in walk(v)]
        if isinstance(node, list):
            return [p for v in node for p in walk(v)]
        return []

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [README, *(ROOT / "docs" / page for page in walk(nav))]


#: First line of a block that cannot run in CI → why.
SKIP = {
    "physteer steer-bench --agent vla --seeds 20":
        "fits 13 methods and runs about 1,500 episodes (see docs/results.md for its time on 2 cores); "
        "tests/studies/test_steer_bench.py runs `physteer steer-bench --quick` through the same CLI",
    "physteer monitor-bench --agent vla --workers 2":
        "needs episodes that fail and succeed under the shifts, several hundred (about 20 min); "
        "tests/studies/test_monitor_bench.py runs a small bench through the same CLI",
    "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e . && .venv/bin/physteer demo":
        "installs the package into a new venv and runs the full demo (about 15 min); "
        "tests/studies/test_demo_and_probe.py runs `physteer demo --quick`",
    '{ command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }; } '
    '&& python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[dev]" '
    "&& .venv/bin/python -m pytest -q -n 2 --dist loadscope":
        "installs system packages and runs the whole test suite, this test included (.ci/run runs it)",
    "physteer run --executor ray --address auto --workers 8 --gpus-per-worker 0.5 --envs-per-worker 16 \\":
        "needs a Ray cluster with GPUs and a downloaded SmolVLM-Instruct",
    "huggingface-cli download lerobot/pi0_base --local-dir models/pi0_base":
        "downloads a released π0 (several GB) from the hub; tests/agents/test_pi0.py runs random-weight π0s",
    "huggingface-cli download HuggingFaceTB/SmolVLM-Instruct --local-dir models/smolvlm":
        "downloads SmolVLM-Instruct from the hub and runs it on CUDA",
    'backend = load_vlm("models/smolvlm", device="cuda", dtype="bfloat16", image_splitting=False)':
        "needs the downloaded SmolVLM-Instruct and a CUDA GPU",
    "from sae import (ActivationStore, SAEConfig, default_config, MatryoshkaSAE,":
        "an API overview with placeholders (`acts`, `...`) at the reference width 2048 -> 8192, "
        "whose 2000 steps are long training on a CPU; tests/sae/ run each call",
    "from monitors import SARMMonitor, make_scorer, load_scorer":
        "an API overview with placeholders (`clean_tokens`, `clean_decisions`, `FrankaPickEnv(...)`); "
        "tests/monitors/test_sarm.py and test_scorers.py run each call",
    "physteer train-vla --episodes 256 --epochs 3 --dagger-rounds 2 --dagger-episodes 128 --dagger-epochs 2 \\":
        "history (the changelog's development findings): a recipe measured and not shipped; the VLA "
        "guide's train-vla example runs the same command's shape on the test budget",
    '[project.entry-points."physteer.scorers"]':
        "a pyproject.toml excerpt (TOML, not a command); tests/monitors/test_scorer_registry.py "
        "registers a scorer through the same entry-point group",
}  # fmt: skip

#: `physteer <sub-command>` → flags that replace the README's value (or are appended); None: a
#: flag without a value.
BUDGET: dict[str, dict[str, str | None]] = {
    "collect": {"--images": "32"},  # README 512, default 2048
    "train-sae": {"--steps": "50"},  # default 2000
    "discover": {"--n-boot": "50"},  # default 1000
    # README 0-19 (0-31 for the VLA): two seeds, 3 among them, the seed the README replays
    "run": {"--seeds": "2-3", "--videos": "0", "--workers": "1"},  # README --videos 2
    "dashboard": {"--features": "4", "--top-frames": "2"},
    "export-lerobot": {"--no-video": None},  # MP4 encoding takes about 15 s per episode here
    "train-vla": {
        "--episodes": "4",
        "--epochs": "1",
        "--threads": "1",
        "--dagger-episodes": "2",
        "--dagger-epochs": "1",
    },  # README 256, 3, 128, 2
    # the tour: a clean fit large enough to calibrate, one eval episode, one cheap scorer
    "sarm-eval": {
        "--fit-episodes": "20",  # 10 calibration episodes: enough for the default alpha 0.1
        "--episodes": "1",
        "--scorers": "mahalanobis",
        "--max-steps": "40",
        "--n-boot": "50",
        "--no-plots": None,
    },
    "agent-eval": {"--seeds": "1", "--max-steps": "40"},  # the tour's 5 seeds per cell
    "train-jsae": {"--images": "16", "--steps": "30"},  # the guide's 64 frames, 300 steps
    "train-tiny": {"--n-train": "16", "--n-eval": "16", "--epochs": "1"},  # 2,400 frames, 10 epochs
    "jsae-study": {"--images": "16", "--steps": "4", "--batch-size": "8"},  # 256 frames, 1500 steps
    # the π0 guide's 16 episodes and 200 steps: a tiny model, two episodes, a few steps
    "train-pi0": {
        "--episodes": "2",
        "--steps": "4",
        "--hidden": "32",
        "--expert-hidden": "16",
        "--layers": "2",
        "--image-size": "64",
        "--frame-every": "8",
    },
    # the monitors guide's suite: 15 conditions × 20 seeds; here one shift, two seeds, 30 steps
    "shift-suite": {
        "--kinds": "mass",
        "--strengths": "1",
        "--seeds": "2",
        "--max-steps": "30",
        "--workers": "1",
        "--executor": "serial",
        "--no-plots": None,
    },  # fmt: skip
}

#: First line of a python block → (README text, budget text) substitutions.
PY_BUDGET = {
    "from rollouts.experiment import run_experiment": [
        ("seeds=list(range(20))", "seeds=[2, 3]"),  # keeps seed 3, the one it replays
        ("workers=2", "workers=1"),
    ],
}


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page: its language, first line (its key), text, page and line."""

    lang: str
    key: str
    text: str
    line: int  # page line of the opening fence
    page: Path = README

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def page_blocks(path: Path) -> list[Block]:
    """The ```bash, ```python and ```toml blocks of one page, in order (toml: only to be skipped)."""
    text = path.read_text()
    blocks = []
    for m in re.finditer(r"^```(bash|python|toml)\n(.*?)^```", text, re.S | re.M):
        body = m.group(2)
        key = body.splitlines()[0].strip()
        blocks.append(Block(m.group(1), key, body, text.count("\n", 0, m.start()) + 1, path))
    return blocks


def readme_blocks() -> list[Block]:
    """Every block of the README and the documentation pages, in the order they run."""
    return [b for page in doc_pages() for b in page_blocks(page)]


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a bash block as argv lists (continuations joined, comments dropped)."""
    commands = []
    for line in block.text.replace("\\\n", " ").splitlines():
        argv = shlex.split(line)
        cut = next((i for i, a in enumerate(argv) if a.startswith("#")), len(argv))
        if argv[:cut]:
            commands.append(argv[:cut])
    return commands


def with_budget(argv: list[str]) -> list[str]:
    """`physteer SUB ...` with SUB's BUDGET flags set."""
    out = list(argv)
    for flag, value in BUDGET.get(argv[1], {}).items():
        if flag in out:
            if value is not None:
                out[out.index(flag) + 1] = value
        else:
            out += [flag] if value is None else [flag, value]
    return out


def physteer() -> list[str]:
    """The installed console script beside this interpreter, else `python -m cli.main`."""
    script = Path(sys.executable).with_name("physteer")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli.main"]


def test_every_block_is_run_or_skipped_for_a_reason():
    blocks = readme_blocks()
    keys = {b.key for b in blocks}
    repeated = {b.key for b in blocks if b.key not in SKIP} - {
        k for k in keys if sum(c.key == k for c in blocks) == 1
    }
    assert not repeated, (
        f"blocks that start with the same line (SKIP cannot tell them apart): {sorted(repeated)}"
    )
    assert all(b.lang != "toml" or b.key in SKIP for b in blocks), (
        "a toml block is not run: list it in SKIP"
    )
    assert not set(SKIP) - keys, (
        f"SKIP entries that match no README block: {sorted(set(SKIP) - keys)}"
    )
    assert not set(PY_BUDGET) - keys, (
        f"PY_BUDGET entries that match no block: {sorted(set(PY_BUDGET) - keys)}"
    )
    assert all(len(why) > 20 for why in SKIP.values())
    run = [b for b in blocks if b.key not in SKIP]
    assert {b.lang for b in run} == {"bash", "python"} and len(run) >= 10, [b.key for b in run]
    used = set()
    for b in run:
        for argv in shell_commands(b) if b.lang == "bash" else []:
            assert argv[0] == "physteer" and len(argv) > 1, (
                f"{b.where}: {argv} is not a physteer command"
            )
            used.add(argv[1])
        for old, _ in PY_BUDGET.get(b.key, []):
            assert old in b.text, f"{b.where}: PY_BUDGET's {old!r} is no longer in the block"
    assert not set(BUDGET) - used, (
        f"BUDGET entries for commands the README no longer runs: {set(BUDGET) - used}"
    )


def test_budget_flags_replace_or_append():
    assert with_budget(["physteer", "run", "--seeds", "0-19", "--name", "x"]) == [
        "physteer", "run", "--seeds", "2-3", "--name", "x", "--videos", "0", "--workers", "1"]  # fmt: skip
    assert with_budget(["physteer", "export-lerobot", "a", "b"]) == [
        "physteer",
        "export-lerobot",
        "a",
        "b",
        "--no-video",
    ]
    assert with_budget(["physteer", "replay", "r", "c/3"]) == ["physteer", "replay", "r", "c/3"]
    cmds = shell_commands(
        Block("bash", "", "physteer a --b c \\\n  --d e   # note\n\nphysteer f 'g#h/1'\n", 1)
    )
    assert cmds == [["physteer", "a", "--b", "c", "--d", "e"], ["physteer", "f", "g#h/1"]]


def run_command(
    argv: list[str], cwd: Path, env: dict[str, str], in_process: bool
) -> tuple[int, str]:
    """Run `physteer ...`: the first command through the installed console script, the others
    through the same entry point in this process (each new process would spend ~3 s importing
    torch and transformers again: about a minute and a half of the suite's time). Returns the
    exit code and what it printed."""
    if not in_process:
        proc = subprocess.run(
            physteer() + argv[1:], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        return proc.returncode, proc.stdout + proc.stderr
    import torch

    from cli.main import main

    out, environ, threads = io.StringIO(), dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for a command's own process
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv[1:])
        except SystemExit as exc:  # argparse's --help and errors
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            torch.set_num_threads(threads)
            os.environ.clear()
            os.environ.update(environ)
    return code, out.getvalue()


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    namespace: dict = {"__name__": "readme"}
    seconds = {}  # what each step took (shown with -s)
    for block in readme_blocks():
        if block.key in SKIP:
            continue
        if block.lang == "bash":
            for argv in shell_commands(block):
                argv, t0 = with_budget(argv), time.perf_counter()
                code, output = run_command(argv, tmp_path, env, in_process=bool(seconds))
                if code != 0:
                    pytest.fail(
                        f"{block.where}: `{shlex.join(argv)}` exited {code}\n{output[-3000:]}"
                    )
                seconds[f"{block.where}: physteer {argv[1]}"] = time.perf_counter() - t0
        else:
            text, t0 = block.text, time.perf_counter()
            for old, new in PY_BUDGET.get(block.key, []):
                text = text.replace(old, new)
            # Pad so that a traceback names the README's own line numbers.
            exec(compile("\n" * block.line + text, str(block.page), "exec"), namespace)
            seconds[f"{block.where}: python"] = time.perf_counter() - t0
    print(
        f"documentation examples: {sum(seconds.values()):.0f} s;",
        ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
    )
    assert (tmp_path / "runs" / "fragile" / "episodes.parquet").is_file()
    assert (tmp_path / "runs" / "dashboard" / "dashboard.html").is_file()
    assert (tmp_path / "runs" / "fragile_lerobot" / "meta" / "info.json").is_file()
