"""A combined scorer: the largest of several calibrated scorers' scores, each divided by its own
threshold, aimed at covering activation attacks (the SAE score) and corrupted frames
(Mahalanobis) with one monitor.

    sae, maha = ...   # fitted and calibrated scorers (monitors.scorers) of the same activations
    both = CombinedScorer([sae, maha])
    both.score(acts)                      # max(sae.score / sae.threshold, maha.score / maha.threshold)
    both.calibrate(clean_scores, ...)     # its own threshold, on the same clean calibration data
    both.save("runs/x/combined"); load_scorer("runs/x/combined")   # the parts are saved inside

A part's normalised score exceeds 1 exactly when that part alone would veto, so the combined
score exceeds t exactly when some part's score exceeds t times its threshold: with t = 1 it
fires whenever either part fires. Recalibrating the combined score on the parts' clean
calibration scores (same method and settings: mean + k·std, quantile, or split conformal at the
same alpha) brings it back to the clean false-alarm rate of its parts; t is then usually a
little above 1, because the union of two alarms fires more often than either.

Split conformal note: the normalisation uses the parts' thresholds, themselves computed on the
calibration episodes, so the combined score is not independent of the data its own threshold
is calibrated on; its promised alpha is approximate (the realised clean rate is reported beside
it), unlike the parts' exact per-episode guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from monitors.scorers import Scorer, as_token_matrix, load_scorer, register_scorer

PARTS_DIR = "parts"


@register_scorer
class CombinedScorer(Scorer):
    """max over parts of part.score / part.threshold (see the module docstring).

    Args:
        parts: fitted, calibrated scorers (at least 2) of the same activations (same d, and no
            scorer that reads other rows than the others, such as the linear probe). None:
            an empty shell that `load_scorer` fills.
        part_names: folder names of the parts inside a saved combined scorer (set by load).
        aggregate, model, layer: as in Scorer (model and layer default to the first part's).
    """

    kind = "combined"

    def __init__(
        self,
        parts: Sequence[Scorer] | None = None,
        part_names: Sequence[str] | None = None,
        aggregate: str = "mean",
        model: str | None = None,
        layer: int | None = None,
    ) -> None:
        super().__init__(aggregate, model, layer)
        self.parts: list[Scorer] = []
        self.part_names = list(part_names or [])
        self.thresholds = torch.zeros(0)
        if parts is not None:
            self._set_parts(list(parts))

    def _set_parts(self, parts: list[Scorer]) -> None:
        if len(parts) < 2:
            raise ValueError(f"a combined scorer needs at least 2 parts, got {len(parts)}")
        names = []
        for i, p in enumerate(parts):
            label = f"part {i} ({type(p).__name__})"
            if not isinstance(p, Scorer) or not p.fitted:
                raise ValueError(f"{label}: expected a fitted monitors.scorers.Scorer")
            if isinstance(p, CombinedScorer) or getattr(p, "tokens", None) is not None:
                raise ValueError(f"{label}: combine scorers that read the same rows (not {p.kind})")
            thr = p.threshold
            if thr is None or not (math.isfinite(thr) and thr > 0):
                raise ValueError(f"{label}: threshold {thr!r}; expected a calibrated threshold > 0 "
                                 "(calibrate each part first)")  # fmt: skip
            if p.d != parts[0].d:
                raise ValueError(f"{label}: d={p.d}, but part 0 has d={parts[0].d}")
            names.append(p.name.replace("/", "-"))
        if len(set(names)) != len(names):
            raise ValueError(f"parts {names}: give distinct scorers")
        self.parts, self.part_names = parts, names
        self.thresholds = torch.tensor([float(p.threshold) for p in parts], dtype=torch.float64)
        self.d = parts[0].d
        self.model = self.model if self.model is not None else parts[0].model
        self.layer = self.layer if self.layer is not None else parts[0].layer

    @property
    def name(self) -> str:
        """The kind: "combined"."""
        return self.kind

    def fit(self, activations: Any = None) -> CombinedScorer:
        """Nothing to fit: the parts are fitted and calibrated already (ValueError without parts)."""
        if not self.parts:
            raise ValueError("a combined scorer is built from fitted, calibrated parts: "
                             "CombinedScorer([sae, mahalanobis])")  # fmt: skip
        return self

    def normalised(self, activations: Any) -> dict[str, float]:
        """Each part's score divided by its threshold (> 1: that part alone would veto)."""
        x = self._validated(activations)
        return {n: p.score(x) / t for n, p, t in zip(self.part_names, self.parts, self.thresholds.tolist(), strict=True)}  # fmt: skip

    def _validated(self, activations: Any) -> torch.Tensor:
        if not self.fitted:
            raise ValueError("CombinedScorer is not fitted: give it parts or load_scorer()")
        return as_token_matrix(activations, self.d)

    def _token_scores(self, x: torch.Tensor) -> torch.Tensor:
        """One value per decision (float64): the largest normalised part score."""
        best = max(
            p.score(x) / t for p, t in zip(self.parts, self.thresholds.tolist(), strict=True)
        )
        return torch.tensor([best], dtype=torch.float64)

    # --- persistence ----------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"part_names": self.part_names}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"part_thresholds": self.thresholds}

    def _save_extra(self, directory: Path) -> None:
        for name, part in zip(self.part_names, self.parts, strict=True):
            part.save(directory / PARTS_DIR / name)

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        parts = [load_scorer(directory / PARTS_DIR / n, d=self.d) for n in self.part_names]
        saved = tensors["part_thresholds"].tolist()
        for n, p, t in zip(self.part_names, parts, saved, strict=True):
            if p.threshold != t:
                raise ValueError(f"{directory}: part {n} has threshold {p.threshold}, but the combined "
                                 f"scorer was built with {t}")  # fmt: skip
        model, layer = self.model, self.layer
        self._set_parts(parts)
        self.model, self.layer = model, layer
