"""Joint SAE directions: add one joint latent's decoder direction, from either modality's side.

The cross-modal steering of the JSAE paper ("Steering Vision-Language Models with Joint Sparse
Autoencoders"): a Joint SAE (sae.joint) has a vision and a language decoder with one latent
index space, so a latent found on descriptions can be written into the image tokens with its
language-side decoder row ("jsae-language"), beside the same latent's vision-side row
("jsae-vision"). Both are direction methods (steering.direction): the row is scaled to
‖μ_fragile − μ_rigid‖ and turned toward fragile, so a strength moves a token as far as DiffMean
and the random control at that strength: the comparison the issue asks for is at equal
displacement norm.

"jsae-suppress" is the paper's other intervention, suppression: each token's own code of the
latent, decoded alone, is subtracted (h ← h − s · z_f(h) · decoder row f, on the latent's `side`:
the vision side at image tokens, the language side at text tokens); s ∈ [0, 1] is the fraction
removed, unsigned, as in directional ablation.

Settings: `joint`, the Joint SAE's folder (physteer train-jsae / jsae-study write them under
saes/); `latent`, its index (-1: the latent whose vision-side code best separates the fit
frames' materials, chosen on the fit data, never on the evaluation seeds).

    physteer steer-bench --agent vla --model runs/tiny-lang/vla --methods dom,jsae-language,jsae-vision \\
        --method-params jsae-language.joint=runs/jsae-lang/saes/joint,jsae-vision.joint=runs/jsae-lang/saes/joint
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steering.base import FitData, SteeringMethod
from steering.direction import DirectionMethod, pooled
from steering.registry import register_method


def check_joint_settings(name: str, joint: str, latent: Any) -> None:
    """ValueError naming a missing Joint SAE folder or a bad latent index."""
    if not joint or not (Path(joint) / "joint.json").is_file():
        raise ValueError(f"{name} joint={joint!r}: give a Joint SAE folder (one with joint.json, "
                         f"as physteer train-jsae writes under saes/): --method-params {name}.joint=DIR")  # fmt: skip
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < -1:
        raise ValueError(
            f"{name} latent={latent!r}: a latent index >= 0, or -1 to choose on the fit data"
        )


def joint_latent(method: SteeringMethod, data: FitData) -> tuple[Any, int]:
    """(the Joint SAE of `method.params["joint"]`, its latent): the given index, or the latent
    whose vision-side code best separates the fit frames' materials (recorded in fit_info)."""
    from sklearn.metrics import roc_auc_score

    from sae.joint import JointSAE

    folder = Path(method.params["joint"])
    layer = json.loads((folder / "joint.json").read_text()).get("metadata", {}).get("layer")
    if layer is not None and int(layer) != data.layer:
        raise ValueError(
            f"{method.name}: the Joint SAE in {folder} reads layer {layer}; this fit is at layer {data.layer}"
        )
    joint = JointSAE.from_pretrained(folder)
    latent = int(method.params["latent"])
    if latent < 0:  # the best separating latent on the fit frames (pooled, as the JSAE reads them)
        x, fragile = pooled(data)
        with torch.no_grad():
            z = joint.vision.encode(x.float()).numpy()
        y = fragile.numpy().astype(bool)
        aucs = np.array(
            [roc_auc_score(y, z[:, i]) if z[:, i].any() else 0.5 for i in range(z.shape[1])]
        )
        latent = int(np.abs(aucs - 0.5).argmax())
        method.fit_info["latent_auroc"] = round(float(aucs[latent]), 4)
    method.fit_info["latent"] = latent
    return joint, latent


class _JointDirection(DirectionMethod):
    side = "language"
    paper = "Steering Vision-Language Models with Joint Sparse Autoencoders (JSAE)"

    def __init__(self, joint: str = "", latent: int = -1, **params: Any) -> None:
        check_joint_settings(self.name, joint, latent)
        super().__init__(joint=str(joint), latent=latent, **params)

    def _direction(self, data: FitData) -> torch.Tensor:
        joint, latent = joint_latent(self, data)
        return joint.side(self.side).W_dec[latent].detach().clone()


@register_method
class JointLanguageDirection(_JointDirection):
    """h ← h + s · ‖dom‖ · (a joint latent's LANGUAGE-side decoder row) at the image tokens."""

    name = "jsae-language"
    side = "language"


@register_method
class JointVisionDirection(_JointDirection):
    """h ← h + s · ‖dom‖ · (the same latent's VISION-side decoder row) at the image tokens."""

    name = "jsae-vision"
    side = "vision"


@register_method
class JointSuppression(SteeringMethod):
    """h ← h − s · z_f(h) · x_scale · W_dec[f] on the latent's `side` (module docstring)."""

    name = "jsae-suppress"
    paper = "Steering Vision-Language Models with Joint Sparse Autoencoders (JSAE): suppression"
    signed = False
    strength_range = (0.0, 1.0)
    dose = (0.25, 0.5, 0.75, 1.0)

    def __init__(
        self, joint: str = "", latent: int = -1, side: str = "vision", **params: Any
    ) -> None:
        from sae.joint import SIDES

        check_joint_settings(self.name, joint, latent)
        if side not in SIDES:
            raise ValueError(f"{self.name} side={side!r}: choose one of {list(SIDES)}")
        super().__init__(joint=str(joint), latent=latent, side=side, **params)
        self.sae: Any = None

    def _fit(self, data: FitData, backend: Any) -> None:
        joint, latent = joint_latent(self, data)
        self.sae = joint.side(self.params["side"]).eval()
        self.state["latent"] = torch.tensor([latent])

    def _save_extra(self, directory: Path) -> None:
        self.sae.save(directory / "sae")

    def _restore(self, doc: dict[str, Any], state: dict[str, torch.Tensor], directory: Path) -> None:  # fmt: skip
        from sae.matryoshka import MatryoshkaSAE

        super()._restore(doc, state, directory)
        self.sae = MatryoshkaSAE.from_pretrained(directory / "sae").eval()

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import ResidualMap

        sae, latent = self.sae, int(self.state["latent"][0])
        row = (
            sae.W_dec[latent] * sae.x_scale
        ).detach()  # one unit of the latent, in residual units

        def suppress(h: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                z = sae.encode(h.to(row.device, row.dtype))[:, latent]
            return h - strength * z.unsqueeze(1).to(h) * row.to(h)

        return ResidualMap(suppress, self.layer, self.positions)
