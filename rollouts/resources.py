"""What steered conditions need, loaded once per worker: an SAE and its discovered fragility
features, the difference-of-means vector, fitted steering methods; and the check that every
condition of a run finds what it needs before any episode."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FRAGILITY_TOP = 30  # rollouts.conditions explains why the top features are steered together


@dataclass
class SteeringResources:
    """What steered conditions need, loaded once: an SAE, the discovered feature, the vector.

    Attributes:
        sae: a MatryoshkaSAE (or None).
        fragility_features: [(latent, rigid mean, fragile mean)] of the top discovered
            fragility features (at most FRAGILITY_TOP).
        dom_vector: mean fragile − mean rigid activation at the tap layer (d,).
        methods: fitted steering methods by name (`method:` conditions), from a folder of
            `<name>/method.json` (steering.base.load_method).
    """

    sae: Any = None
    fragility_features: list[tuple[int, float, float]] | None = None
    dom_vector: torch.Tensor | None = None
    methods: dict[str, Any] = field(default_factory=dict)

    def method(self, name: str) -> Any:
        """The fitted method `name`; ValueError naming the ones the run has."""
        if name not in self.methods:
            raise ValueError(f"steering method {name!r} is not fitted in this run's methods folder; "
                             f"it has {sorted(self.methods) or 'none'} (`physteer steer-bench` fits them)")  # fmt: skip
        return self.methods[name]

    @classmethod
    def load(cls, sae_dir: str | None = None, discovery: str | None = None, vector: str | None = None,
             methods: str | None = None, method_files: list[str] | tuple[str, ...] = ()) -> SteeringResources:  # fmt: skip
        """Load from an SAE checkpoint folder, a discovery JSON, a steering-vector file, a folder
        of fitted steering methods and the user method files their classes live in."""
        res = cls()
        if method_files:
            from steering.registry import load_method_files

            load_method_files(list(method_files))
        if methods:
            from steering.base import METHOD_FILE
            from steering.registry import load_method

            root = Path(methods)
            if not root.is_dir():
                raise FileNotFoundError(
                    f"methods folder {root} does not exist (`physteer steer-bench` writes one)"
                )
            for path in sorted(root.glob(f"*/{METHOD_FILE}")):  # keyed by the method's own name
                method = load_method(path.parent)
                res.methods[method.name] = method
        if sae_dir:
            from sae.matryoshka import MatryoshkaSAE

            res.sae = MatryoshkaSAE.from_pretrained(sae_dir)
            res.sae.eval()
        if discovery:
            path = Path(discovery)
            if not path.exists():
                raise FileNotFoundError(
                    f"discovery file {path} does not exist (run `physteer discover`)"
                )
            data = json.loads(path.read_text())
            if not data.get("fragility"):
                raise ValueError(
                    f"discovery file {path} lists no fragility feature: SAE steering has nothing to steer"
                )
            effects = {int(e["feature"]): e for e in data["features"]}
            res.fragility_features = []
            for f in data["fragility"][:FRAGILITY_TOP]:
                means = effects[int(f)]["cell_means"]
                fragile = float(np.mean([v for k, v in means.items() if "fragile" in k]))
                rigid = float(np.mean([v for k, v in means.items() if "rigid" in k]))
                res.fragility_features.append((int(f), rigid, fragile))
        if vector:
            from safetensors.torch import load_file

            path = Path(vector)
            if not path.exists():
                raise FileNotFoundError(f"steering vector file {path} does not exist")
            res.dom_vector = load_file(str(path))["dom"]
        return res


def check_resources(
    conditions: list[Any], res: SteeringResources, n_latents: int | None = None
) -> None:
    """Fail before any episode if a condition lacks what it needs."""
    for c in conditions:
        if c.needs_sae and res.sae is None:
            raise ValueError(f"condition {c.name!r} needs an SAE: pass --sae DIR")
        if c.kind == "sae" and c.feature == "fragility" and not res.fragility_features:
            raise ValueError(
                f"condition {c.name!r} needs a discovered fragility feature: pass --discovery FILE"
            )
        if c.kind == "sae" and c.feature != "fragility":
            n = int(res.sae.n_latents)
            if not 0 <= int(c.feature) < n:
                raise ValueError(
                    f"condition {c.name!r}: feature {c.feature} is out of range; the SAE has latents 0..{n - 1}"
                )
        if c.needs_method:
            res.method(c.feature).check_strength(c.magnitude)
        if c.needs_dom and res.dom_vector is None:
            raise ValueError(
                f"condition {c.name!r} needs a difference-of-means vector: pass --vector FILE"
            )
