"""Controls every benchmark runs beside the methods: what a method must beat.

- RandomDirection: a direction drawn per episode seed with the norm of μ_fragile − μ_rigid
  (strength in the direction methods' units), the norm-matched random control.
- RandomNeurons: a cluster of random neurons drawn per seed, of the layer and size of the
  neuron method's cluster for the same side, excluding it.
"""

from __future__ import annotations

from typing import Any

import torch

from steering.base import FitData, SteeringMethod
from steering.methods.neurons import NeuronClusters
from steering.registry import register_method


def random_direction(like: torch.Tensor, seed: int) -> torch.Tensor:
    """A gaussian direction drawn from `seed` with the norm of `like`."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(like.shape, generator=g)
    return direction / direction.norm() * like.norm()


@register_method
class RandomDirection(SteeringMethod):
    """h ← h + s · r_seed, ‖r_seed‖ = ‖μ_fragile − μ_rigid‖ (drawn per episode seed)."""

    name = "random"
    paper = "control: norm-matched random direction"
    supervision = "none"
    per_seed = True

    def _fit(self, data: FitData, backend: Any) -> None:
        self.state["dom"] = data.dom()

    def _intervention(self, strength: float, seed: int) -> Any:
        from agents.interventions import AddVector

        return AddVector(random_direction(self.state["dom"], seed), strength, layer=self.layer,
                         positions=self.positions)  # fmt: skip


@register_method
class RandomNeurons(NeuronClusters):
    """A random cluster of the neuron method's layer and size (drawn per seed), clamped to |s|."""

    name = "neuron-random"
    paper = "control: random neuron cluster (Häon et al. 2025)"
    per_seed = True

    def cluster_intervention(self, side: str, value: float, seed: int = 0) -> Any:
        """A random cluster of `side`'s layer and size, drawn from `seed`, clamped to `value`
        (the `neuron-random:[<word>:]<value>` edit)."""
        from agents.interventions import NeuronOverride
        from agents.neurons import random_ids

        layer, ref = int(self.state[f"{side}_layer"]), self.state[f"{side}_ids"].tolist()
        ids = random_ids(int(self.state[f"{side}_n"]), len(ref), seed, exclude=ref, layer=layer)
        return NeuronOverride(layer, ids, value)
