"""A raw-activation linear probe: logistic regression on pooled decision activations, trained on
clean vs perturbed decisions from some attack kinds and evaluated on held-out kinds.

    probe = LinearProbeScorer(n_image_tokens=81, model="tiny", layer=2)
    probe.fit(clean_decisions, perturbed_decisions, kinds=["ta2", "noise"])  # lists of (n × d)
    probe.score(tap.latest)             # the decision's logit of "perturbed"
    probe.calibrate(clean_scores)       # thresholds as for every scorer (monitors.calibration)
    probe.save("runs/x/probe-mean"); load_scorer("runs/x/probe-mean")

Unlike the anomaly scorers (monitors.scorers), which see clean activations only, the probe is
supervised ("detect with raw activations, explain with the SAE": SAEGuardBench). It reads one
feature vector per decision: the image tokens pooled by `aggregate` (mean or max over tokens),
followed by the last token (the next-token position, where a prompt injection shows) when the
decision has a row after its `n_image_tokens` image rows. Features are standardised
(sklearn StandardScaler) and scored by an L2-regularised LogisticRegression with balanced class
weights; the score is the decision function (log-odds of "perturbed"). At run time the score
is computed in torch from the saved scaler and weights (no sklearn call in the control loop).

The probe reads every row of a decision (`tokens = "all"`): the SARM monitor passes it the
image tokens and the last token whatever its own `tokens` setting (monitors.sarm.SARMMonitor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitors.scorers import Scorer, as_token_matrix, register_scorer


@register_scorer
class LinearProbeScorer(Scorer):
    """Logistic regression on pooled decision activations (see the module docstring).

    Args:
        n_image_tokens: image rows at the top of each decision; a decision with more rows also
            contributes its last row (the last token) as features. None: every row is pooled
            and no last token is read.
        C: inverse L2 regularisation strength of the logistic regression (> 0).
        max_iter: solver iterations (>= 1).
        aggregate: pooling over the image tokens, "mean" or "max".
        model, layer: provenance, as in Scorer.

    Attributes:
        trained_on: the attack kinds of the perturbed training decisions (as given to `fit`).
        use_last: whether the features include the last token (set by `fit`: True when every
            training decision has a row after its image rows).
        n_train: {"clean", "perturbed"} decision counts it was trained on.
    """

    kind = "probe"
    #: the SARM monitor passes this scorer every row (image tokens and the last token)
    tokens = "all"

    def __init__(
        self,
        n_image_tokens: int | None = None,
        C: float = 1.0,  # noqa: N803 - sklearn's name
        max_iter: int = 2000,
        aggregate: str = "mean",
        model: str | None = None,
        layer: int | None = None,
        trained_on: Sequence[str] = (),
        use_last: bool = False,
        n_train: dict[str, int] | None = None,
    ) -> None:
        super().__init__(aggregate, model, layer)
        if n_image_tokens is not None and (
            isinstance(n_image_tokens, bool)
            or not isinstance(n_image_tokens, int)
            or n_image_tokens < 1
        ):
            raise ValueError(f"n_image_tokens={n_image_tokens!r}: expected an int >= 1 or None")
        if (
            isinstance(C, bool)
            or not isinstance(C, (int, float))
            or not (math.isfinite(C) and C > 0)
        ):
            raise ValueError(f"C={C!r}: expected a finite number > 0")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter={max_iter!r}: expected an int >= 1")
        self.n_image_tokens, self.C, self.max_iter = n_image_tokens, float(C), max_iter
        self.trained_on = [str(k) for k in trained_on]
        self.use_last = bool(use_last)
        self.n_train = dict(n_train or {})

    # --- features -------------------------------------------------------------------------
    def _has_last(self, x: torch.Tensor) -> bool:
        return self.n_image_tokens is not None and x.shape[0] > self.n_image_tokens

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature vector of one validated decision (n × d): pooled image rows, then the
        last row when `use_last` (ValueError if the decision has no row after its image rows)."""
        n_img = self.n_image_tokens
        image = x if n_img is None else x[:n_img]
        pooled = image.mean(0) if self.aggregate == "mean" else image.max(0).values
        if not self.use_last:
            return pooled
        if not self._has_last(x):
            raise ValueError(
                f"decision of {x.shape[0]} rows: the probe was fitted with the last token after "
                f"{n_img} image rows; pass every row (image tokens and the last token)"
            )
        return torch.cat([pooled, x[-1]])

    @staticmethod
    def _decisions(decisions: Any, name: str, d: int | None) -> list[torch.Tensor]:
        if (
            decisions is None
            or isinstance(decisions, (torch.Tensor, np.ndarray))
            or len(decisions) == 0
        ):
            raise ValueError(f"{name}: expected a non-empty list of decisions (n_tokens × d each)")
        return [as_token_matrix(a, d, name=f"{name}[{i}]") for i, a in enumerate(decisions)]

    # --- fit and score --------------------------------------------------------------------
    def fit(  # type: ignore[override] - supervised: clean and perturbed decisions
        self,
        activations: Sequence[Any],
        perturbed: Sequence[Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> LinearProbeScorer:
        """Train on clean decisions (label 0) against perturbed decisions (label 1).

        Args:
            activations: the clean decisions, each an (n_tokens × d) tensor.
            perturbed: the perturbed decisions (after each attack's onset), same layout.
            kinds: the attack kinds the perturbed decisions come from (recorded as `trained_on`).

        Raises:
            ValueError: no perturbed decisions, an empty or malformed decision, or widths that
                differ.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        if perturbed is None:
            raise ValueError(
                "the probe is supervised: fit(clean, perturbed) needs perturbed decisions"
            )
        clean = self._decisions(activations, "activations", None)
        d = int(clean[0].shape[1])
        bad = self._decisions(perturbed, "perturbed", d)
        clean = self._decisions(clean, "activations", d)
        self.use_last = all(self._has_last(x) for x in clean + bad)
        x = torch.cat([torch.stack([self.features(a) for a in xs]) for xs in (clean, bad)])
        x = x.double().numpy()
        y = np.r_[np.zeros(len(clean)), np.ones(len(bad))]
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced")
        clf.fit(scaler.transform(x), y)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        self.mean = torch.from_numpy(scaler.mean_).float()
        self.scale = torch.from_numpy(scale).float()
        self.coef = torch.from_numpy(clf.coef_[0]).float()
        self.intercept = torch.tensor(float(clf.intercept_[0]))
        self.trained_on = [str(k) for k in (kinds or [])]
        self.n_train = {"clean": len(clean), "perturbed": len(bad)}
        self.d = d  # last: fitted only once every parameter is set
        return self

    def _token_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The probe scores a decision as a whole: one value, its logit of "perturbed"."""
        z = (self.features(x) - self.mean) / self.scale
        return (z @ self.coef + self.intercept).reshape(1)

    # --- persistence ----------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"n_image_tokens": self.n_image_tokens, "C": self.C, "max_iter": self.max_iter,
                "trained_on": self.trained_on, "use_last": self.use_last, "n_train": self.n_train}  # fmt: skip

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": self.intercept,
        }

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        self.mean, self.scale = tensors["mean"], tensors["scale"]
        self.coef, self.intercept = tensors["coef"], tensors["intercept"]
