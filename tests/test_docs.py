"""The documentation: the site builds with `mkdocs build --strict` (no broken link, no page
missing from the nav), the README stays a front page, and the CLI reference and `--help` cover
every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cli_page = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "physteer sarm-eval" in cli_page and "<!-- cli-reference -->" not in cli_page


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The check can fail: the same site with a link to a missing page does not build."""
    import shutil

    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "index.md").write_text("[gone](no-such-page.md)\n", encoding="utf-8")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and "no-such-page.md" in proc.stdout + proc.stderr


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    assert (ROOT / "docs" / "img" / "hero.png").is_file()


def test_every_command_in_one_help_group_and_in_the_reference():
    from cli.main import GROUPS, build_parser
    from cli.reference import reference_markdown

    registered = set(build_parser()._subparsers._group_actions[0].choices)
    grouped = [n for names in GROUPS.values() for n in names]
    assert sorted(grouped) == sorted(registered), (
        "each command in exactly one group of cli.main.GROUPS"
    )
    reference = reference_markdown()
    assert all(f"### `physteer {n}`" in reference for n in registered)


def test_help_is_grouped_and_version_answers(capsys):
    import pytest

    from cli.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert (
        out.index("Start here:")
        < out.index("  demo ")
        < out.index("Monitors:")
        < out.index("  sarm-eval ")
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("physteer ")


def test_no_library_banners_on_a_command(tmp_path):
    """Neither PyBullet's build banner nor transformers' loading bars reach a command's output
    (a command that loads the tiny VLM and steps the env)."""
    argv = ["agent-eval", "--seeds", "1", "--max-steps", "3", "--out", str(tmp_path / "eval")]
    code = f"from cli.main import main; import sys; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pybullet build time" not in proc.stdout + proc.stderr
    assert "Loading weights" not in proc.stdout + proc.stderr
