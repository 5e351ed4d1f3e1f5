"""Command-line flags generated from a job's config dataclass (one dataclass per job).

    add_config_arguments(parser, ExperimentConfig, skip={"out"})
    cfg = config_from_args(ExperimentConfig, args)
    cfg.validate()           # every value checked before any work starts

Each field becomes `--field-name`; its help text is the field's line in the dataclass's
"Attributes:" docstring section, its default the dataclass default. Lists are comma-separated
(`--conditions unsteered,dom:+2`); int lists also take ranges (`--seeds 0-19`); `X | None`
fields take "none" for None; bools become `--flag/--no-flag`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any


def _attribute_help(cls: type) -> dict[str, str]:
    """Field name → its description in the class docstring's Attributes section."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    current: list[str] = []
    for line in section.splitlines():
        m = re.match(r"^\s{4,8}([a-z_][a-z0-9_, ]*):\s*(.*)$", line)
        if m and not line.startswith(" " * 12):
            current = [n.strip() for n in m.group(1).split(",")]
            for n in current:
                out[n] = m.group(2).strip()
        elif current and line.strip():
            for n in current:
                out[n] += " " + line.strip()
    return out


def parse_int_list(text: str) -> list[int]:
    """ "0-19" (a range), "0,3,5" or a mix ("0-3,8") → list of ints."""
    out: list[int] = []
    try:
        for part in (p for p in text.split(",") if p):
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a range like 0-19 or a list like 0,3,5"
        ) from None
    return out


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in _split(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None


def _optional(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _converter(hint: Any) -> tuple[Any, bool]:
    """(argparse type, is_bool) for a resolved type hint."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        convert, _ = _converter(inner)
        return _optional(convert), False
    if hint is bool:
        return None, True
    if origin in (list, tuple):
        element = args[0] if args else str
        if element is int:
            return parse_int_list, False
        if element is float:
            return _floats, False
        return _split, False
    if origin is dict:
        return None, False
    return hint, False


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: set[str] | frozenset[str] = frozenset(),
                         help_overrides: dict[str, str] | None = None, only_given: bool = False) -> None:  # fmt: skip
    """Add one flag per field of dataclass `cls` (see the module docstring).

    With `only_given`, flags the user did not give are absent from the parsed namespace, so
    `config_from_args(..., base=preset)` keeps the preset's value for them."""
    hints = typing.get_type_hints(cls)
    helps = {**_attribute_help(cls), **(help_overrides or {})}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        convert, is_bool = _converter(hints[f.name])
        if convert is None and not is_bool:
            continue  # dicts and other structures stay Python-only
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        # argparse %-formats help texts: a docstring's "i % 4" must reach it as "i %% 4"
        text = f"{helps.get(f.name, '')} (default: {shown})".strip().replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        value = argparse.SUPPRESS if only_given else default
        if is_bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=value, help=text
            )
        else:
            parser.add_argument(
                flag, type=convert, default=value, help=text, metavar=f.name.upper()
            )


def config_from_args(
    cls: type, args: argparse.Namespace, base: Any = None, **overrides: Any
) -> Any:
    """Build the dataclass from parsed arguments (fields without a flag keep their defaults,
    or `base`'s values when given)."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple and isinstance(value, list):
            values[name] = tuple(value)
    values.update(overrides)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)
