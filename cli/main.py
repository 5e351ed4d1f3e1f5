"""The `physteer` command line: one sub-command per job, each defined in a module of this package.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its sub-commands and
sets `func` on them; GROUPS orders them by job for `physteer --help`, in the order a user meets
them. This file is a table of contents, not a blob.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that register sub-commands.
COMMAND_MODULES = ["cli.demo", "cli.env", "cli.run", "cli.collect", "cli.sae", "cli.monitors", "cli.agents",
                   "cli.vla", "cli.steering", "cli.dashboard", "cli.export", "cli.bench"]  # fmt: skip

#: `physteer --help`: the commands by job, in the order a user meets them (a test keeps every
#: registered command in exactly one group).
GROUPS = {
    "Start here": ["demo", "env-demo"],
    "Experiments: steer and compare on paired seeds": [
        "run",
        "replay",
        "steer-bench",
        "cross-modal",
        "jsae-layers",
    ],
    "Features: what the model encodes": [
        "collect",
        "train-sae",
        "train-jsae",
        "jsae-study",
        "discover",
        "dashboard",
    ],
    "Monitors": ["sarm-eval", "shift-suite", "monitor-bench"],
    "Agents and models": [
        "agent-eval",
        "vla-study",
        "pi0-decodability",
        "vla-rewiring",
        "train-tiny",
        "train-vla",
        "train-pi0",
    ],
    "Data and speed": ["export-lerobot", "bench"],
}


def version() -> str:
    """The installed distribution's version (the source tree's pyproject when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("physteer")
    except PackageNotFoundError:
        return "unknown (not installed)"


class GroupedParser(argparse.ArgumentParser):
    """The top-level parser: its help lists the sub-commands grouped by job (GROUPS)."""

    def format_help(self) -> str:
        helps = {a.dest: a.help or "" for a in self._subparsers._group_actions[0]._choices_actions}
        width = max(map(len, helps)) + 2
        lines = [self.format_usage().rstrip(), "", self.description or "", ""]
        for title, names in GROUPS.items():
            lines.append(f"{title}:")
            lines += [f"  {n:<{width}}{helps.get(n, '')}" for n in names if n in helps]
            lines.append("")
        lines += ["options:", "  -h, --help    show this help and exit",
                  "  --version     show physteer's version and exit",
                  "  --frame-cache DIR  reuse camera frames stored under DIR, keyed by what they show", "",
                  "Each command's own options: physteer COMMAND --help. Documentation: docs/ (mkdocs serve)."]  # fmt: skip
        return "\n".join(lines) + "\n"


def quiet_libraries() -> None:
    """Keep library noise out of the output: transformers' "Loading weights" bars and advisory
    warnings (in this process and, through the environment, in every worker it starts)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
    parser = GroupedParser(
        prog="physteer",
        description="Steer and monitor vision-language(-action) robot agents in a PyBullet Franka Panda testbed.",
    )
    parser.add_argument("--version", action="version", version=f"physteer {version()}")
    parser.add_argument("--frame-cache", metavar="DIR", default=None,
                        help="keep camera frames under DIR, keyed by what they show, and reuse them (envs.frame_cache)")  # fmt: skip
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `physteer` console script."""
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.frame_cache is not None:
        if os.path.exists(args.frame_cache) and not os.path.isdir(args.frame_cache):
            print(
                f"physteer: error: --frame-cache {args.frame_cache!r} exists and is not a directory",
                file=sys.stderr,
            )
            return 2
        # Through the environment, so every worker process (and Ray worker) uses it too.
        os.environ["PHYSTEER_FRAME_CACHE"] = os.path.abspath(args.frame_cache)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # User errors: a clear message, no traceback.
        print(f"physteer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
