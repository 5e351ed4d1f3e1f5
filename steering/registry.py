"""Which steering methods exist: the built-ins, installed plug-ins and a user's own files.

    make_method("selective")                      # a built-in, by name
    load_method_files(["my_methods.py"])          # a user's file: its classes register themselves
    method_names()                                # every name make_method accepts

A user method is a SteeringMethod subclass decorated with `@register_method` in any Python file
(`physteer steer-bench --method-file my_methods.py --methods mine`) or in an installed package
that names it in the "physteer.steering" entry-point group (name = method, value = module:Class).
The registry never imports a method module until its name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from steering.base import FORMAT_VERSION, METHOD_FILE, STATE_FILE, SteeringMethod

#: Method name → class, filled as method modules are imported (each registers its own class).
METHODS: dict[str, type[SteeringMethod]] = {}
#: Where the built-in methods live ("module:Class").
BUILTIN_METHODS = {
    "dom": "steering.methods.dom:DiffMean",
    "pca": "steering.methods.pca:PCADirection",
    "lat": "steering.methods.lat:LATDirection",
    "probe": "steering.methods.probe:ProbeDirection",
    "sae": "steering.methods.sae_clamp:SAEClamp",
    "neuron": "steering.methods.neurons:NeuronClusters",
    "ablation": "steering.methods.ablation:DirectionalAblation",
    "selective": "steering.methods.selective:SelectiveSteering",
    "austeer": "steering.methods.austeer:AUSteer",
    "conceptor": "steering.methods.conceptor:ConceptorSteering",
    "cast": "steering.methods.cast:ConditionalSteering",
    "lineas": "steering.methods.lineas:LinEAS",
    "steer2edit": "steering.methods.steer2edit:Steer2Edit",
    "loreft": "steering.methods.reft:LoReFT",
    "jsae-language": "steering.methods.jsae:JointLanguageDirection",
    "jsae-vision": "steering.methods.jsae:JointVisionDirection",
    "jsae-both": "steering.methods.jsae:JointBothDirections",
    "jsae-suppress": "steering.methods.jsae:JointSuppression",
    "sae-direction": "steering.methods.sae_direction:SAEFeatureDirection",
    "random": "steering.methods.controls:RandomDirection",
    "neuron-random": "steering.methods.controls:RandomNeurons",
}
#: Controls: run in every benchmark beside the methods, never ranked as methods.
CONTROLS = ("random", "neuron-random")
ENTRY_POINT_GROUP = "physteer.steering"
#: User method files imported in this process (resolved path → the names they registered).
LOADED_FILES: dict[str, list[str]] = {}


def register_method(cls: type[SteeringMethod]) -> type[SteeringMethod]:
    """Make `cls` known under `cls.name` (use as a decorator on a SteeringMethod subclass)."""
    if not (isinstance(cls, type) and issubclass(cls, SteeringMethod)) or not cls.name:
        raise ValueError(f"{cls!r}: register a SteeringMethod subclass with a non-empty `name`")
    known = _plugin_paths().get(cls.name)
    if known is not None and known != f"{cls.__module__}:{cls.__qualname__}":
        raise ValueError(
            f"steering method {cls.name!r} is taken by {known}: give {cls.__qualname__} another name"
        )
    METHODS[cls.name] = cls
    return cls


def _plugin_paths() -> dict[str, str]:
    from importlib.metadata import entry_points

    paths = dict(BUILTIN_METHODS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        paths.setdefault(ep.name, ep.value)
    return paths


def method_names() -> list[str]:
    """Every name make_method accepts (registered, built-in and entry-point methods)."""
    return sorted(set(METHODS) | set(_plugin_paths()))


def method_class(name: Any) -> type[SteeringMethod]:
    """The class of method `name`, importing its module on first use.

    Raises:
        ValueError: no such method (the message lists the known ones), or its module fails.
    """
    if name not in METHODS:
        path = _plugin_paths().get(name) if isinstance(name, str) else None
        if path is None:
            raise ValueError(f"steering method {name!r}: expected one of {method_names()}")
        module, _, attr = path.partition(":")
        try:
            register_method(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"steering method {name!r} ({path}) does not import: {exc}") from exc
    return METHODS[name]


def make_method(name: str, **params: Any) -> SteeringMethod:
    """An unfitted method by name, with its parameters."""
    return method_class(name)(**params)


def method_settings(name: str) -> list[str]:
    """The settings method `name` takes (its and its bases' __init__ keywords, and positions)."""
    import inspect

    found = {"positions"}
    for cls in method_class(name).__mro__:
        if "__init__" in vars(cls):
            params = inspect.signature(cls.__init__).parameters.values()
            found |= {
                p.name
                for p in params
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            }
    return sorted(found)


def load_method_files(paths: list[str]) -> list[str]:
    """Import each user method file (its classes register themselves); the names it added.

    Raises:
        ValueError: a file is missing or fails to import (the message names the file and why).
    """
    added: list[str] = []
    for path in paths:
        file = Path(path)
        if not file.is_file() or file.suffix != ".py":
            raise ValueError(f"method file {path!r}: expected an existing .py file")
        if str(file.resolve()) in LOADED_FILES:  # imported once per process
            added += LOADED_FILES[str(file.resolve())]
            continue
        name = f"physteer_user_methods_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's file: whatever it raises is reported, not re-raised raw
            sys.modules.pop(name, None)
            raise ValueError(
                f"method file {path!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        new = sorted(n for n, cls in METHODS.items() if cls.__module__ == name)
        if not new:
            raise ValueError(f"method file {path!r} registers no method: decorate a SteeringMethod "
                             "subclass with @steering.register_method")  # fmt: skip
        LOADED_FILES[str(file.resolve())] = new
        added += new
    return added


def load_method(directory: str | Path) -> SteeringMethod:
    """A fitted method from its folder (a user method's class is imported from the file it was
    defined in, recorded at save).

    Raises:
        FileNotFoundError: no method.json / state.safetensors.
        ValueError: not a method file this version reads, or an unknown method name.
    """
    from storage import read_safetensors

    directory = Path(directory)
    for p in (directory / METHOD_FILE, directory / STATE_FILE):
        if not p.is_file():
            raise FileNotFoundError(
                f"no fitted steering method file {p} (fit it with `physteer steer-bench`)"
            )
    try:
        doc = json.loads((directory / METHOD_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{directory / METHOD_FILE} is not valid JSON: {exc}") from exc
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / METHOD_FILE}: format_version {doc.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")  # fmt: skip
    name = doc.get("name")
    if doc.get("file") and name not in method_names():
        load_method_files([doc["file"]])
    method = method_class(name)(**doc.get("params", {}))
    method._restore(doc, read_safetensors(directory / STATE_FILE), directory)
    return method
