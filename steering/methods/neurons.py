"""FFN neuron clusters chosen by vocabulary projection, clamped (Häon et al. 2025).

Each word's cluster is chosen as agents.neurons.select_cluster does (semantic embeddings of the
value vectors' top tokens, cosine kNN, the cluster closest to the word). Strength s > 0 clamps
the cluster of `fragile_word` to s, s < 0 the cluster of `rigid_word` to |s|: the paper's
intervention, pointed at either material.
"""

from __future__ import annotations

from typing import Any

import torch

from steering.base import FitData, SteeringMethod
from steering.registry import register_method


@register_method
class NeuronClusters(SteeringMethod):
    """Clamp the inputs of one layer's mlp.down_proj at a word's neuron cluster."""

    name = "neuron"
    paper = "Häon et al. 2025, FFN neuron clusters by vocabulary projection"
    needs = ("labelled",)
    needs_backend = True
    acts_on = "ffn"
    supervision = "none"
    strength_range = (-50.0, 50.0)
    dose = (1.0, 2.0, 5.0, 10.0, 20.0)
    from_zero = False
    default_positions, choose_positions = "all", False  # Häon clamps at every token

    def __init__(
        self, fragile_word: str = "fragile", rigid_word: str = "rigid", **params: Any
    ) -> None:
        super().__init__(fragile_word=fragile_word, rigid_word=rigid_word, **params)

    def select(self, backend: Any, side: str) -> None:
        """Choose the cluster of `side`'s word ("fragile" or "rigid") on `backend`."""
        from agents.neurons import select_cluster, value_vectors

        cluster = select_cluster(backend, self.params[f"{side}_word"])
        self.state[f"{side}_ids"] = torch.tensor(cluster.neuron_ids, dtype=torch.long)
        self.state[f"{side}_layer"] = torch.tensor([cluster.layer])
        self.state[f"{side}_n"] = torch.tensor([value_vectors(backend, cluster.layer).shape[0]])
        self.layer = cluster.layer if self.layer is None else self.layer

    def _fit(self, data: FitData, backend: Any) -> None:
        self.layer = None
        for side in ("fragile", "rigid"):
            self.select(backend, side)
        self.fit_info["units"] = int(len(self.state["fragile_ids"]))

    def cluster_intervention(self, side: str, value: float, seed: int = 0) -> Any:
        """`side`'s cluster clamped to `value` (the `neuron:<word>:<value>` edit)."""
        from agents.interventions import NeuronOverride

        return NeuronOverride(
            int(self.state[f"{side}_layer"]), self.state[f"{side}_ids"].tolist(), value
        )

    def _intervention(self, strength: float, seed: int) -> Any:
        return self.cluster_intervention(
            "fragile" if strength > 0 else "rigid", abs(strength), seed
        )
