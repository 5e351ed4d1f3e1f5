"""Explanations of an alarm: the SAE features that moved most against the clean distribution
("detect with whatever detects best, explain with the SAE").

    explainer = FeatureExplainer(sae).fit(clean_decisions)    # each decision n_tokens × d
    explainer.explain(decision)   # [{"latent": 17, "z": 6.2, "value": 3.1, "clean_mean": 0.4}, ...]

A decision's code is its tokens' SAE latent activations averaged over the tokens; the clean
reference is the mean and spread of that code over clean decisions. The latents named are the
`top` with the largest |z| = |code − clean mean| / clean spread (the spread floored, so a latent
that never fired on clean decisions and fires now scores high but finite). Saved beside a
scorer (`explainer.safetensors` with the SAE) and read by the monitor-bench report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

FILE = "explainer.safetensors"


class FeatureExplainer:
    """Top SAE latents of a decision by z-score against clean decisions (module docstring).

    Args:
        sae: a trained sae.MatryoshkaSAE reading the monitor's activations.
        top: latents named per explanation.
    """

    def __init__(self, sae: Any, top: int = 3) -> None:
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"top={top!r}: expected an int >= 1")
        self.sae, self.top = sae.eval(), top
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    @torch.inference_mode()
    def code(self, decision: Any) -> torch.Tensor:
        """The decision's mean latent activation over its tokens (n_latents,)."""
        device = next(self.sae.parameters()).device  # the tap's rows may sit on the model's device
        x = torch.as_tensor(decision).to(device=device, dtype=torch.float32)
        return self.sae.encode(x if x.dim() == 2 else x[None]).float().mean(0).cpu()

    def fit(self, clean: Sequence[Any]) -> FeatureExplainer:
        """The clean reference from clean decisions (at least 2)."""
        if len(clean) < 2:
            raise ValueError(f"an explainer needs at least 2 clean decisions, got {len(clean)}")
        codes = torch.stack([self.code(a) for a in clean])
        self.mean = codes.mean(0)
        # floor: a tenth of the typical spread of active latents, so rare latents stay finite
        spread = codes.std(0)
        floor = 0.1 * float(spread[spread > 0].median()) if bool((spread > 0).any()) else 1e-3
        self.std = spread.clamp_min(max(floor, 1e-6))
        return self

    def explain(self, decision: Any) -> list[dict[str, float]]:
        """The `top` latents that moved most at this decision, largest |z| first."""
        if self.mean is None:
            raise ValueError("FeatureExplainer is not fitted: call fit(clean_decisions) or load()")
        c = self.code(decision)
        z = (c - self.mean) / self.std
        order = torch.argsort(z.abs(), descending=True)[: self.top]
        return [{"latent": int(i), "z": float(z[i]), "value": float(c[i]), "clean_mean": float(self.mean[i])}
                for i in order]  # fmt: skip

    def save(self, directory: str | Path) -> Path:
        """Write the clean reference (the SAE is saved by its scorer)."""
        from storage import write_safetensors

        assert self.mean is not None and self.std is not None
        return write_safetensors(Path(directory) / FILE, {"mean": self.mean.contiguous(), "std": self.std.contiguous(),
                                                          "top": torch.tensor(self.top)})  # fmt: skip

    @classmethod
    def load(cls, directory: str | Path, sae: Any) -> FeatureExplainer:
        """The explainer saved in `directory` around `sae`."""
        from storage import read_safetensors

        t = read_safetensors(Path(directory) / FILE)
        out = cls(sae, top=int(t["top"]))
        out.mean, out.std = t["mean"], t["std"]
        return out


def describe(explanation: list[dict[str, float]]) -> str:
    """'latent 17 (z +6.2), latent 3 (z −4.0)'."""
    return ", ".join(f"latent {e['latent']} (z {e['z']:+.1f})" for e in explanation)
