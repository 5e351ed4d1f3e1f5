"""The `physteer` command line: one sub-command per job, each defined in its own module.

Each `rollouts/cmd_*.py` module exposes `register(subparsers)` which adds its sub-commands
and sets `func` on them. Keeping commands in separate modules keeps this file a table of
contents rather than a blob.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that register sub-commands, in the order they appear in `physteer --help`.
COMMAND_MODULES = [
    "cli.env",
    "cli.agents",
    "cli.sae",
    "cli.collect",
    "cli.run",
    "cli.demo",
    "cli.bench",
    "cli.monitors",
    "cli.dashboard",
    "cli.export",
    "cli.vla",
]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="physteer",
        description="Steer and monitor VLM-driven robot agents in a PyBullet Franka Panda testbed.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `physteer` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # User errors: a clear message, no traceback.
        print(f"physteer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
