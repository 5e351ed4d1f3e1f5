"""The simple baselines every anomaly score stands beside: Mahalanobis distance and PCA
reconstruction error of a decision's tokens (the interface: monitors.scorers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monitors.scorers import Scorer, register_scorer


@register_scorer
class MahalanobisScorer(Scorer):
    """Squared Mahalanobis distance / d of each token under a Ledoit–Wolf shrinkage covariance."""

    kind = "mahalanobis"

    def _fit(self, x: torch.Tensor) -> None:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(x.double().numpy())
        self.mean = torch.from_numpy(lw.location_).float()
        self.precision = torch.from_numpy(lw.precision_).float()
        self.shrinkage = float(lw.shrinkage_)

    def _token_scores(self, x: torch.Tensor) -> torch.Tensor:
        c = x - self.mean
        return ((c @ self.precision) * c).sum(1) / c.shape[1]

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "precision": self.precision}

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        self.mean, self.precision = tensors["mean"], tensors["precision"]


@register_scorer
class PCAReconstructionScorer(Scorer):
    """Squared residual off the top principal components / mean clean squared deviation.

    Args:
        n_components: int (number of components) or float in (0, 1) (variance to explain).
        aggregate, model, layer: as in Scorer.
    """

    kind = "pca"

    def __init__(
        self,
        n_components: int | float = 0.9,
        aggregate: str = "mean",
        model: str | None = None,
        layer: int | None = None,
    ) -> None:
        super().__init__(aggregate, model, layer)
        ok_int = (
            isinstance(n_components, int)
            and not isinstance(n_components, bool)
            and n_components >= 1
        )
        ok_frac = isinstance(n_components, float) and 0.0 < n_components < 1.0
        if not (ok_int or ok_frac):
            raise ValueError(
                f"n_components={n_components!r}: expected an int >= 1 or a float in (0, 1)"
            )
        self.n_components = n_components

    def _fit(self, x: torch.Tensor) -> None:
        from sklearn.decomposition import PCA

        n = self.n_components
        if isinstance(n, int) and n > min(x.shape):
            raise ValueError(
                f"n_components={n}: at most min(rows, d) = {min(x.shape)} for this data"
            )
        pca = PCA(n_components=n, svd_solver="full").fit(x.double().numpy())
        self.mean = torch.from_numpy(pca.mean_).float()
        self.components = torch.from_numpy(pca.components_).float()
        self.scale = torch.tensor(float(((x - self.mean) ** 2).sum(1).mean().clamp_min(1e-12)))

    def _token_scores(self, x: torch.Tensor) -> torch.Tensor:
        c = x - self.mean
        resid = c - (c @ self.components.T) @ self.components
        return (resid**2).sum(1) / self.scale

    def _params(self) -> dict[str, Any]:
        return {"n_components": self.n_components}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "components": self.components, "scale": self.scale}

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        self.mean, self.components, self.scale = (
            tensors["mean"],
            tensors["components"],
            tensors["scale"],
        )
