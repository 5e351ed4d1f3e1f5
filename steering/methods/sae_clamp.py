"""SAE feature clamp: set the discovered fragility latents to a level between the classes.

Templeton et al. 2024 ("Scaling Monosemanticity": feature clamping); the Matryoshka SAE of
Bussmann et al. 2025; in physteer, the decorrelated discovery's top fragility features set
together (rollouts.conditions explains why one is not enough). Level X puts every feature at
rigid + X · (fragile − rigid): 1 is the fragile level, 0 the rigid level. Strength s clamps at
`own` + s, where `own` is the level of the material the run steers from (1 for fragile
objects), so s = −1 on fragile objects clamps at the rigid level; s = 0 is no edit at all
(a clamp at the own level is not: it sets every token to the class mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steering.base import FitData, SteeringMethod
from steering.registry import register_method

LEVELS = {"fragile": 1.0, "rigid": 0.0}


@register_method
class SAEClamp(SteeringMethod):
    """Clamp the top discovered fragility latents (delta mode: the SAE's error term stays)."""

    name = "sae"
    paper = "Templeton et al. 2024, Scaling Monosemanticity (feature clamping); Matryoshka SAE"
    needs = ("labelled", "sae")
    strength_range = (-3.0, 3.0)
    dose = (0.2, 0.4, 0.6, 0.8, 1.0)
    from_zero = False
    takes_own_material = True  # the benchmark passes the material it steers from

    def __init__(self, own: str = "fragile", **params: Any) -> None:
        if own not in LEVELS:
            raise ValueError(f"own={own!r}: expected one of {sorted(LEVELS)}")
        super().__init__(own=own, **params)
        self.sae: Any = None

    def _fit(self, data: FitData, backend: Any) -> None:
        self.sae = data.sae
        self.state["features"] = torch.tensor(data.fragility_features, dtype=torch.float64)
        self.fit_info["units"] = len(data.fragility_features)

    def _save_extra(self, directory: Path) -> None:
        self.sae.save(directory / "sae")

    def _restore(
        self, doc: dict[str, Any], state: dict[str, torch.Tensor], directory: Path
    ) -> None:
        from sae.matryoshka import MatryoshkaSAE

        super()._restore(doc, state, directory)
        self.sae = MatryoshkaSAE.from_pretrained(directory / "sae")
        self.sae.eval()

    @classmethod
    def from_features(
        cls, sae: Any, features: list[tuple[int, float, float]], layer: int
    ) -> SAEClamp:
        """The method on a given SAE and discovered features (a `--sae` / `--discovery` pair)."""
        method = cls()
        method.sae, method.layer = sae, layer
        method.state["features"] = torch.tensor(features, dtype=torch.float64)
        method.fit_info = {"units": len(features), "source": "discovery file"}
        return method

    def level_intervention(self, level: float) -> Any:
        """Every feature clamped at rigid + level · (fragile − rigid) (the `sae:fragility:X` edit)."""
        from agents.interventions import SAEFeatureSteering
        from steering.edits import EditStack

        if self.sae is None:
            raise ValueError(
                "steering method 'sae' has no SAE: load it with load_method(dir, sae=...)"
            )
        features = [(int(f), float(r), float(g)) for f, r, g in self.state["features"].tolist()]
        return EditStack([SAEFeatureSteering(self.sae, f, rigid + level * (fragile - rigid), layer=self.layer,
                                             positions=self.positions)
                          for f, rigid, fragile in features])  # fmt: skip

    def _intervention(self, strength: float, seed: int) -> Any:
        return self.level_intervention(LEVELS[self.params["own"]] + strength)
