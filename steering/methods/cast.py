"""Conditional Activation Steering (CAST): steer only the forwards whose activations match a
condition.

Lee et al. 2025, "Programming Refusal with Conditional Activation Steering" (ICLR): a condition
vector c is read from the activations of condition-positive vs -negative inputs; at inference
the hidden state's similarity to c decides, per input, whether the behaviour vector is added.
Here the condition is "the object looks fragile": c = unit(μ_fragile − μ_rigid) at the layer,
the gate reads the cosine between the frame's mean image-token state (centred on the data's
mean) and c against a threshold chosen on the fit frames for the best balanced accuracy: above
it the frame looks fragile, at or below it rigid. The gate fires on the material the steering
moves away from (fragile-looking frames for s < 0, toward rigid; rigid-looking ones for s > 0).
The behaviour is the difference of means (strength as in steering.direction). Each forward row
is gated on its own image tokens; `fit_info` gives the gate's firing rate on the fit frames of
each material, and an attached edit counts its firings (`fired`, one entry per gated row).
"""

from __future__ import annotations

from typing import Any

import torch

from agents.hooks import output_tensor, position_mask, replace_output
from agents.interventions import ResidualIntervention
from steering.base import FitData, SteeringMethod
from steering.direction import pooled
from steering.registry import register_method


class GatedAddVector(ResidualIntervention):
    """h ← h + s · vector at `positions` of the rows whose gate fires (the gate reads the
    mean of the rows' tokens at those positions)."""

    def __init__(self, vector: torch.Tensor, scale: float, condition: torch.Tensor, centre: torch.Tensor,
                 threshold: float, layer: int, positions: str = "image") -> None:  # fmt: skip
        super().__init__(layer, positions)
        self.vector, self.scale, self.condition, self.centre = vector, scale, condition, centre
        self.threshold = threshold
        self.fired: list[bool] = []  # one entry per gated row, in forward order

    def _hook(self, module: torch.nn.Module, args: tuple, output: Any) -> Any:
        hidden = output_tensor(output)
        mask = position_mask(self.positions, self._input_ids, self.view.image_token_id,
                             tuple(hidden.shape[:2]), self.view.groups).to(hidden.device)  # fmt: skip
        if not bool(mask.any()):
            return None
        hidden = hidden.clone()
        for row in range(hidden.shape[0]):
            tokens = hidden[row][mask[row]].float()
            mean = tokens.mean(0) - self.centre.to(tokens.device)
            sim = float(
                torch.nn.functional.cosine_similarity(mean, self.condition.to(tokens.device), dim=0)
            )
            # the condition is the material the steering moves away from: fragile-looking
            # frames when steering toward rigid (s < 0), rigid-looking ones toward fragile
            fires = sim > self.threshold if self.scale < 0 else sim <= self.threshold
            self.fired.append(fires)
            if fires:
                hidden[row][mask[row]] = (tokens + self.scale * self.vector.to(tokens.device)).to(
                    hidden.dtype
                )
        return replace_output(output, hidden)


@register_method
class ConditionalSteering(SteeringMethod):
    """Difference-of-means steering gated per forward by the fragility condition vector."""

    name = "cast"
    paper = "Lee et al. 2025, Programming Refusal with Conditional Activation Steering (CAST)"

    def _fit(self, data: FitData, backend: Any) -> None:
        x, fragile = pooled(data)
        centre = x.mean(0)
        dom = data.dom()
        condition = dom / dom.norm()
        sims = torch.nn.functional.cosine_similarity(x - centre, condition.unsqueeze(0), dim=1)
        best, threshold = -1.0, 0.0
        for t in torch.unique(sims).tolist():  # the balanced accuracy of "fires above t"
            fires = sims > t
            acc = 0.5 * (
                float(fires[fragile == 1].float().mean())
                + float((~fires[fragile == 0]).float().mean())
            )
            if acc > best:
                best, threshold = acc, t
        fires = sims > threshold
        self.state.update(
            vector=dom, condition=condition, centre=centre, threshold=torch.tensor([threshold])
        )
        self.fit_info.update(gate_balanced_accuracy=round(best, 4),
                             fires_fragile=round(float(fires[fragile == 1].float().mean()), 4),
                             fires_rigid=round(float(fires[fragile == 0].float().mean()), 4))  # fmt: skip

    def _intervention(self, strength: float, seed: int) -> Any:
        s = self.state
        return GatedAddVector(
            s["vector"],
            strength,
            s["condition"],
            s["centre"],
            float(s["threshold"]),
            self.layer,
            self.positions,
        )
