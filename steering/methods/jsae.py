"""Joint SAE directions: add one joint latent's decoder direction, from either modality's side.

The cross-modal steering of the JSAE paper ("Steering Vision-Language Models with Joint Sparse
Autoencoders"): a Joint SAE (sae.joint) has a vision and a language decoder with one latent
index space, so a latent found on descriptions can be written into the image tokens with its
language-side decoder row ("jsae-language"), beside the same latent's vision-side row
("jsae-vision"). Both are direction methods (steering.direction): the row is scaled to
‖μ_fragile − μ_rigid‖ and turned toward fragile, so a strength moves a token as far as DiffMean
and the random control at that strength: the comparison the issue asks for is at equal
displacement norm.

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

from steering.base import FitData
from steering.direction import DirectionMethod, pooled
from steering.registry import register_method


class _JointDirection(DirectionMethod):
    side = "language"
    paper = "Steering Vision-Language Models with Joint Sparse Autoencoders (JSAE)"

    def __init__(self, joint: str = "", latent: int = -1, **params: Any) -> None:
        if not joint or not (Path(joint) / "joint.json").is_file():
            raise ValueError(f"{self.name} joint={joint!r}: give a Joint SAE folder (one with joint.json, "
                             f"as physteer train-jsae writes under saes/): --method-params {self.name}.joint=DIR")  # fmt: skip
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < -1:
            raise ValueError(
                f"{self.name} latent={latent!r}: a latent index >= 0, or -1 to choose on the fit data"
            )
        super().__init__(joint=str(joint), latent=latent, **params)

    def _direction(self, data: FitData) -> torch.Tensor:
        from sklearn.metrics import roc_auc_score

        from sae.joint import JointSAE

        folder = Path(self.params["joint"])
        layer = json.loads((folder / "joint.json").read_text()).get("metadata", {}).get("layer")
        if layer is not None and int(layer) != data.layer:
            raise ValueError(
                f"{self.name}: the Joint SAE in {folder} reads layer {layer}; this fit is at layer {data.layer}"
            )
        joint = JointSAE.from_pretrained(folder)
        latent = int(self.params["latent"])
        if (
            latent < 0
        ):  # the best separating latent on the fit frames (pooled, as the JSAE reads them)
            x, fragile = pooled(data)
            with torch.no_grad():
                z = joint.vision.encode(x.float()).numpy()
            y = fragile.numpy().astype(bool)
            aucs = np.array(
                [roc_auc_score(y, z[:, i]) if z[:, i].any() else 0.5 for i in range(z.shape[1])]
            )
            latent = int(np.abs(aucs - 0.5).argmax())
            self.fit_info["latent_auroc"] = round(float(aucs[latent]), 4)
        self.fit_info["latent"] = latent
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
