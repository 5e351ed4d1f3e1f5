"""Joint SAE: two Matryoshka top-k SAEs, one per modality, whose latents are aligned index by index.

After the Joint Sparse Autoencoder (JSAE; ../shared/reference/joint-sae-review.md): paired
activations of one scene in two modalities (the vision side: a frame's image tokens; the
language side: its description's tokens) are factorised by one SAE each, with a shared latent
index space and an explicit alignment term. Three alignments, each with its weight (0: two
independent SAEs, the ablation the paper lacks):

- "cosine" (the paper's): 1 − cos(z_vision, z_language) of each pair's codes;
- "contrastive": an in-batch InfoNCE over the codes (matched pairs pulled together, the other
  pairs of the batch pushed apart), symmetric;
- "cross": cross-reconstruction (SPARC): each side's code decoded by the other side's decoder
  must reconstruct the other side's activations (normalised MSE).

Each side is a MatryoshkaSAE (`joint.side("vision")`), so everything that reads an SAE (the
steering conditions, scorers, discovery) reads either side unchanged.

    joint = JointSAE(JointConfig.default(d_vision, d_language, alignment="contrastive"))
    loss, parts = joint.loss(x_vision, x_language)     # reconstruction + weight · alignment
    joint.save("runs/jsae/contrastive-1")              # vision/, language/, joint.json
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sae.config import SAEConfig, default_config
from sae.matryoshka import MatryoshkaSAE
from storage import write_json

ALIGNMENTS = ("cosine", "contrastive", "cross")
SIDES = ("vision", "language")
JOINT_FILE = "joint.json"


@dataclass
class JointConfig:
    """The two sides' SAE configs (one latent count) and the alignment term.

    Attributes:
        vision, language: each side's SAEConfig; their n_latents must match (index i is one
            feature on both sides).
        alignment: one of ALIGNMENTS.
        weight: the alignment term's weight (>= 0; 0 trains two independent SAEs).
        temperature: the contrastive term's softmax temperature (> 0).
    """

    vision: SAEConfig
    language: SAEConfig
    alignment: str = "cosine"
    weight: float = 1.0
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.vision.n_latents != self.language.n_latents:
            raise ValueError(f"n_latents: vision {self.vision.n_latents} and language {self.language.n_latents} "
                             "must match (latent i is one feature on both sides)")  # fmt: skip
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment={self.alignment!r}: choose one of {list(ALIGNMENTS)}")
        if not (self.weight >= 0 and self.temperature > 0):
            raise ValueError(
                f"weight={self.weight} must be >= 0 and temperature={self.temperature} > 0"
            )

    @classmethod
    def default(cls, d_vision: int, d_language: int, expansion: float = 4.0, k: int | None = None,
                **fields: Any) -> JointConfig:  # fmt: skip
        """Both sides sized as sae.default_config would size the wider one (one latent count)."""
        base = default_config(
            max(d_vision, d_language), n_latents=int(expansion * max(d_vision, d_language))
        )
        k = base.k if k is None else k
        sides = {name: SAEConfig(d_in=d, n_latents=base.n_latents, k=k, prefixes=base.prefixes)
                 for name, d in (("vision", d_vision), ("language", d_language))}  # fmt: skip
        return cls(**sides, **fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (joint.json)."""
        out = {k: v for k, v in asdict(self).items() if k not in SIDES}
        return {**out, **{name: getattr(self, name).to_dict() for name in SIDES}}


def code_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two code batches (0 where a row is all zeros)."""
    return (F.normalize(a, dim=1, eps=1e-8) * F.normalize(b, dim=1, eps=1e-8)).sum(1)


def nmse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error over the batch's variance (1 − FVE)."""
    return ((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12)


class JointSAE(nn.Module):
    """A vision SAE and a language SAE with aligned latents (see module docstring)."""

    def __init__(self, config: JointConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = MatryoshkaSAE(config.vision)
        self.language = MatryoshkaSAE(config.language)

    def side(self, name: str) -> MatryoshkaSAE:
        """The SAE of one side ("vision" or "language")."""
        if name not in SIDES:
            raise ValueError(f"side={name!r}: choose one of {list(SIDES)}")
        return getattr(self, name)

    def alignment_loss(self, xv: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        """The configured alignment term on a batch of pairs (row i of each is one scene)."""
        zv, zl = self.vision.encode(xv), self.language.encode(xl)
        kind = self.config.alignment
        if kind == "cosine":
            return (1.0 - code_cosine(zv, zl)).mean()
        if kind == "contrastive":
            logits = F.normalize(zv, dim=1, eps=1e-8) @ F.normalize(zl, dim=1, eps=1e-8).T
            logits = logits / self.config.temperature
            target = torch.arange(len(zv), device=zv.device)
            return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        v_from_l = self.vision._normalize(self.vision.decode(zl))  # noqa: SLF001 - one package
        l_from_v = self.language._normalize(self.language.decode(zv))  # noqa: SLF001
        return 0.5 * (
            nmse(v_from_l, self.vision._normalize(xv))
            + nmse(l_from_v, self.language._normalize(xl))
        )  # noqa: SLF001

    def loss(self, xv: torch.Tensor, xl: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean of the two sides' Matryoshka losses + weight · alignment; (total, parts)."""
        if len(xv) != len(xl):
            raise ValueError(
                f"{len(xv)} vision rows but {len(xl)} language rows: give one pair per row"
            )
        lv, pv = self.vision.loss(xv)
        ll, pl = self.language.loss(xl)
        align = self.alignment_loss(xv, xl) if self.config.weight > 0 else lv.new_zeros(())
        total = 0.5 * (lv + ll) + self.config.weight * align
        parts = {"loss": float(total.detach()), "align": float(align.detach()),
                 **{f"vision_{k}": v for k, v in pv.items()}, **{f"language_{k}": v for k, v in pl.items()}}  # fmt: skip
        return total, parts

    # --- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """vision/ and language/ (each a MatryoshkaSAE folder), then joint.json (last)."""
        directory = Path(directory)
        for name in SIDES:
            self.side(name).save(directory / name, metadata)
        write_json(directory / JOINT_FILE, {"class": type(self).__name__, **self.config.to_dict(),
                                            "metadata": metadata or {}})  # fmt: skip
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> JointSAE:
        """Load a saved JointSAE; ValueError naming what is missing or mismatched."""
        directory = Path(directory)
        if not (directory / JOINT_FILE).is_file():
            raise FileNotFoundError(f"no Joint SAE in {directory} (no {JOINT_FILE})")
        doc = json.loads((directory / JOINT_FILE).read_text())
        sides = {
            name: MatryoshkaSAE.from_pretrained(directory / name, device=device) for name in SIDES
        }
        joint = cls(JointConfig(sides["vision"].config, sides["language"].config, doc["alignment"],
                                float(doc["weight"]), float(doc["temperature"])))  # fmt: skip
        joint.vision, joint.language = sides["vision"], sides["language"]
        return joint
