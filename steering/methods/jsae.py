"""Joint SAE steering: one joint latent's decoder row added, from either modality's side or both,
and the latent's own code suppressed.

The cross-modal steering of the JSAE paper ("Steering Vision-Language Models with Joint Sparse
Autoencoders"): a Joint SAE (sae.joint) has a vision and a language decoder with one latent
index space, so a latent found on descriptions can be written into the image tokens with its
language-side decoder row ("jsae-language"), beside the same latent's vision-side row
("jsae-vision"). Each row is scaled to ‖μ_fragile − μ_rigid‖, so a strength moves a token as far
as DiffMean and the random control at that strength (the comparison at equal displacement
norm), and turned by the latent's own sign: +s adds the latent where it marks fragile objects
(its vision-side code higher on the fit frames' fragile objects), whichever side's row is added.
"jsae-both" adds each side's row at its own tokens: the vision row at the image tokens and the
language row at the text tokens (the instruction), at one strength.

"jsae-suppress" is the paper's other intervention, suppression: each token's own code of the
latent, decoded alone, is subtracted (h ← h − s · z_f(h) · decoder row f, on the latent's `side`:
the vision side at image tokens, the language side at text tokens, or "both", each side at its
own tokens); s ∈ [0, 1] is the fraction removed, unsigned, as in directional ablation.

Settings: `joint`, the Joint SAE's folder (physteer train-jsae / jsae-study write them under
saes/); `latent`, its index (-1: the latent whose vision-side code best separates the fit
frames' materials, chosen on the fit data, never on the evaluation seeds); `marks` ("any",
"fragile", "rigid"): with -1, choose among the latents higher on that material only.

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

#: where each side of a Joint SAE acts when a method uses both: its own modality's tokens
SIDE_TOKENS = {"vision": "image", "language": "text"}


#: which latents `latent=-1` chooses among: any, or those whose code is higher on one material
MARKS = ("any", "fragile", "rigid")


def check_joint_settings(name: str, joint: str, latent: Any, marks: Any = "any") -> None:
    """ValueError naming a missing Joint SAE folder, a bad latent index or a bad `marks`."""
    if marks not in MARKS:
        raise ValueError(f"{name} marks={marks!r}: choose one of {list(MARKS)}")
    if not joint or not (Path(joint) / "joint.json").is_file():
        raise ValueError(f"{name} joint={joint!r}: give a Joint SAE folder (one with joint.json, "
                         f"as physteer train-jsae writes under saes/): --method-params {name}.joint=DIR")  # fmt: skip
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < -1:
        raise ValueError(
            f"{name} latent={latent!r}: a latent index >= 0, or -1 to choose on the fit data"
        )


def joint_latent(method: SteeringMethod, data: FitData) -> tuple[Any, int, float]:
    """(the Joint SAE of `method.params["joint"]`, its latent, the latent's sign): the given
    index, or the latent whose vision-side code best separates the fit frames' materials (among
    those higher on `marks`'s material when it names one: the feature present on the objects a
    suppression acts on); the sign is +1 where its code is higher on the fit frames' fragile
    objects (AUROC ≥ 0.5), else −1. The latent and its AUROC are recorded in fit_info."""
    from sklearn.metrics import roc_auc_score

    from sae.joint import JointSAE

    folder = Path(method.params["joint"])
    layer = json.loads((folder / "joint.json").read_text()).get("metadata", {}).get("layer")
    if layer is not None and int(layer) != data.layer:
        raise ValueError(
            f"{method.name}: the Joint SAE in {folder} reads layer {layer}; this fit is at layer {data.layer}"
        )
    joint = JointSAE.from_pretrained(folder)
    x, fragile = pooled(data)  # one row per frame, as the JSAE reads frames
    with torch.no_grad():
        z = joint.vision.encode(x.float()).numpy()
    y = fragile.numpy().astype(bool)
    latent = int(method.params["latent"])
    if latent >= z.shape[1]:
        raise ValueError(
            f"{method.name} latent={latent}: the Joint SAE in {folder} has {z.shape[1]} latents"
        )
    if latent < 0:  # the best separating latent on the fit frames
        aucs = np.array(
            [roc_auc_score(y, z[:, i]) if z[:, i].any() else 0.5 for i in range(z.shape[1])]
        )
        marks = method.params.get("marks", "any")
        score = {"any": np.abs(aucs - 0.5), "fragile": aucs, "rigid": 1.0 - aucs}[marks]
        latent = int(score.argmax())
    auroc = float(roc_auc_score(y, z[:, latent])) if z[:, latent].any() else 0.5
    method.fit_info.update(latent=latent, latent_auroc=round(auroc, 4))
    return joint, latent, 1.0 if auroc >= 0.5 else -1.0


def row_vector(joint: Any, side: str, latent: int, sign: float, dom: torch.Tensor) -> torch.Tensor:
    """The latent's `side` decoder row, turned by `sign`, at the norm of `dom`."""
    row = joint.side(side).W_dec[latent].detach().float()
    if float(row.norm()) == 0.0:
        raise ValueError(
            f"the Joint SAE's {side} decoder row of latent {latent} is zero: no direction"
        )
    return sign * row / row.norm() * dom.norm()


class _JointDirection(DirectionMethod):
    side = "language"
    paper = "Steering Vision-Language Models with Joint Sparse Autoencoders (JSAE)"

    def __init__(self, joint: str = "", latent: int = -1, **params: Any) -> None:
        check_joint_settings(self.name, joint, latent, params.get("marks", "any"))
        super().__init__(joint=str(joint), latent=latent, **params)

    def _fit(self, data: FitData, backend: Any) -> None:
        joint, latent, sign = joint_latent(self, data)
        dom = data.dom()
        self.state["vector"] = row_vector(joint, self.side, latent, sign, dom)
        self.fit_info["cos_dom"] = round(float(self.state["vector"] @ dom / dom.norm() ** 2), 4)


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
class JointBothDirections(SteeringMethod):
    """h ← h + s · ‖dom‖ · (vision row) at the image tokens and (language row) at the text tokens."""

    name = "jsae-both"
    paper = "Steering Vision-Language Models with Joint Sparse Autoencoders (JSAE): both modalities"
    choose_positions = False  # each side acts at its own modality's tokens

    def __init__(self, joint: str = "", latent: int = -1, **params: Any) -> None:
        check_joint_settings(self.name, joint, latent, params.get("marks", "any"))
        super().__init__(joint=str(joint), latent=latent, **params)

    def _fit(self, data: FitData, backend: Any) -> None:
        joint, latent, sign = joint_latent(self, data)
        for side in SIDE_TOKENS:
            self.state[side] = row_vector(joint, side, latent, sign, data.dom())
        self.fit_info["units"] = 2

    def _intervention(self, strength: float, seed: int) -> Any:
        from agents.interventions import AddVector
        from steering.edits import EditStack

        return EditStack([AddVector(self.state[side], strength, layer=self.layer, positions=tokens)
                          for side, tokens in SIDE_TOKENS.items()])  # fmt: skip


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

        check_joint_settings(self.name, joint, latent, params.get("marks", "any"))
        if side not in (*SIDES, "both"):
            raise ValueError(f"{self.name} side={side!r}: choose one of {[*SIDES, 'both']}")
        if side == "both" and params.get("positions", "image") != "image":
            raise ValueError(f"{self.name} side='both' acts at each side's own tokens "
                             f"({SIDE_TOKENS}): positions={params['positions']!r} is not allowed")  # fmt: skip
        super().__init__(joint=str(joint), latent=latent, side=side, **params)
        self.saes: dict[str, Any] = {}

    @property
    def _placement(self) -> dict[str, str]:
        """side → the positions it acts at."""
        side = self.params["side"]
        return dict(SIDE_TOKENS) if side == "both" else {side: self.positions}

    def _fit(self, data: FitData, backend: Any) -> None:
        joint, latent, _ = joint_latent(self, data)
        self.saes = {side: joint.side(side).eval() for side in self._placement}
        self.state["latent"] = torch.tensor([latent])

    def _save_extra(self, directory: Path) -> None:
        for side, sae in self.saes.items():
            sae.save(directory / f"sae-{side}")

    def _restore(self, doc: dict[str, Any], state: dict[str, torch.Tensor], directory: Path) -> None:  # fmt: skip
        from sae.matryoshka import MatryoshkaSAE

        super()._restore(doc, state, directory)
        self.saes = {side: MatryoshkaSAE.from_pretrained(directory / f"sae-{side}").eval()
                     for side in self._placement}  # fmt: skip

    def _intervention(self, strength: float, seed: int) -> Any:
        from steering.edits import EditStack, ResidualMap

        latent = int(self.state["latent"][0])

        def suppressor(sae: Any) -> Any:
            row = (
                sae.W_dec[latent] * sae.x_scale
            ).detach()  # one unit of the latent, residual units

            def suppress(h: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    z = sae.encode(h.to(row.device, row.dtype))[:, latent]
                return h - strength * z.unsqueeze(1).to(h) * row.to(h)

            return suppress

        edits = [ResidualMap(suppressor(self.saes[side]), self.layer, positions)
                 for side, positions in self._placement.items()]  # fmt: skip
        return edits[0] if len(edits) == 1 else EditStack(edits)
