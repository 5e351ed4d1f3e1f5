"""The CLI reference as Markdown, generated from the parsers themselves (whose flags come from
each job's config dataclass), so the documentation never restates a flag by hand.

    python -m cli.reference > reference.md      # what docs/cli.md shows (mkdocs renders it)
"""

from __future__ import annotations

import argparse
import re
import sys


def _default(action: argparse.Action) -> str:
    if action.default in (None, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
        return ""
    value = action.default
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    return ", ".join(f"`{o}`" for o in action.option_strings)


def _cell(text: str | None) -> str:
    """A help text as one Markdown table cell (argparse's %% unescaped, pipes escaped, one line)."""
    return (text or "").replace("%%", "%").replace("|", "\\|").replace("\n", " ")


def command_markdown(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    """One command's section: its one-line summary, usage and a table of its arguments."""
    usage = parser.format_usage().replace("usage: ", "").strip()
    out = [f"### `physteer {name}`", "", summary, "", "```text", usage, "```", "",
           "| argument | default | what it sets |", "| --- | --- | --- |"]  # fmt: skip
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        help_text, default = action.help or "", _default(action)
        if m := re.search(
            r"\s*\(default:? ([^()]*)\)\s*$", help_text
        ):  # config flags say their default
            help_text, default = help_text[: m.start()], f"`{m.group(1)}`"
        out.append(f"| {_flags(action)} | {default} | {_cell(help_text)} |")
    return [*out, ""]


def reference_markdown() -> str:
    """Every command, grouped by job as in `physteer --help`."""
    from cli.main import GROUPS, build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0]
    summaries = {a.dest: a.help or "" for a in sub._choices_actions}
    out = []
    for title, names in GROUPS.items():
        out += [f"## {title}", ""]
        for name in names:
            out += command_markdown(name, sub.choices[name], summaries.get(name, ""))
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
