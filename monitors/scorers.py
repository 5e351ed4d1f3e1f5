"""Anomaly scorers of one decision's activations (n_tokens × d) → one float; higher = stranger.

Every scorer has the same interface, so the SAE score is always shown beside its baselines:

    scorer = MahalanobisScorer(model="tiny", layer=2).fit(clean_tokens)   # (N × d) rows
    scorer.score(tap.image_activations)                                   # float
    scorer.calibrate(clean_decision_scores, method="sigma", k=2)          # sets the threshold
    scorer.save("runs/x/mahalanobis"); load_scorer("runs/x/mahalanobis", model="tiny", layer=2)

This module is the interface and the registry; each kind lives in its own module and
registers itself (`register_scorer`), and `make_scorer` / `load_scorer` import a kind's module on
first use (built-ins by name, others through the "physteer.scorers" entry-point group):
- SAEReconstructionScorer (monitors.sae_scorer): normalised reconstruction error of a
  Matryoshka SAE (sae package).
- MahalanobisScorer, PCAReconstructionScorer (monitors.baselines).
- LinearProbeScorer (monitors.probe), CombinedScorer (monitors.combined).
- FailurePredictor (monitors.failure): a learned predictor of the policy's own failure over an
  episode's decisions (stateful: the monitor keeps its history per episode); SignalScorer
  (monitors.signals): the agent's own uncertainty (action-token entropy, chunk change).

Per-token scores are aggregated over the tokens by "mean" or "max".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from monitors.calibration import Calibration, calibrate, check_provenance
from storage import read_safetensors, write_json, write_safetensors

AGGREGATES = ("mean", "max")
SCORER_FILE = "scorer.json"
TENSOR_FILE = "scorer.safetensors"
FORMAT_VERSION = 1


def as_token_matrix(
    activations: Any, d: int | None = None, name: str = "activations"
) -> torch.Tensor:
    """Validate activations as a finite float32 (n × d) tensor (a (d,) vector becomes 1 × d).

    Raises ValueError naming the shape, width or the count of non-finite values.
    """
    if activations is None:
        raise ValueError(f"{name} is None: no activations to score")
    x = torch.as_tensor(activations).detach()
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} of shape {tuple(x.shape)}: expected (n_tokens × d) with n >= 1")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} have d={x.shape[1]} but the scorer was fitted on d={d}")
    x = x.to(device="cpu", dtype=torch.float32)
    if not all_finite(x):
        raise ValueError(f"{name} hold {count_nonfinite(x)} NaN/inf values of {x.numel()}")
    return x


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of `x` is finite (no NaN/inf).

    NaN and inf propagate through a sum, so a finite sum proves every value finite in one
    reduction; only a non-finite sum (which may also be an overflow of finite values) needs the
    elementwise check. `torch.isfinite(x).all()` is several kernels: about 4× slower on one
    decision's tokens in the control loop, and this check runs twice per scored decision
    (monitor and scorer).
    """
    if math.isfinite(float(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def count_nonfinite(x: torch.Tensor) -> int:
    """Number of NaN/inf values of `x` (for error messages: only called when there are some)."""
    return int((~torch.isfinite(x)).sum())


def stack_tokens(activations: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Rows of a (N × d) tensor, or of a sequence of (n_i × d) decisions stacked together."""
    if isinstance(activations, (torch.Tensor, np.ndarray)):
        return as_token_matrix(activations)
    if len(activations) == 0:
        raise ValueError("activations: empty sequence, nothing to fit")
    return torch.cat(
        [as_token_matrix(a, name=f"activations[{i}]") for i, a in enumerate(activations)]
    )


class Scorer:
    """Base class: fit on clean token rows, score a decision, calibrate, save and load.

    Args:
        aggregate: "mean" or "max" over the tokens of a decision.
        model, layer: provenance (model id and decoder layer) saved with the scorer.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self, aggregate: str = "mean", model: str | None = None, layer: int | None = None
    ) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r}: expected one of {AGGREGATES}")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
            raise ValueError(f"layer={layer!r}: expected an int or None")
        self.aggregate = aggregate
        self.model = None if model is None else str(model)
        self.layer = layer
        self.d: int | None = None
        self.calibration: Calibration | None = None

    # --- interface ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Short label, e.g. "sae/mean"."""
        return f"{self.kind}/{self.aggregate}"

    @property
    def fitted(self) -> bool:
        """Whether `fit` (or `load`) has run."""
        return self.d is not None

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold, or None before `calibrate`."""
        return None if self.calibration is None else self.calibration.threshold

    def fit(self, activations: torch.Tensor | Sequence[torch.Tensor]) -> Scorer:
        """Fit on clean activations: an (N × d) tensor of token rows or a list of decisions."""
        x = stack_tokens(activations)
        if x.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 token rows, got {x.shape[0]}")
        self._fit(x)
        self.d = int(x.shape[1])
        return self

    def token_scores(self, activations: Any) -> torch.Tensor:
        """Per-token scores (n,) of one decision's activations (n × d)."""
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit() or load_scorer()")
        return self._token_scores(as_token_matrix(activations, self.d))

    def score(self, activations: Any) -> float:
        """One decision's score: per-token scores aggregated by mean or max."""
        s = self.token_scores(activations)
        return float(s.mean() if self.aggregate == "mean" else s.max())

    def score_many(self, decisions: Sequence[Any]) -> np.ndarray:
        """Scores of several decisions (array of len(decisions))."""
        return np.array([self.score(a) for a in decisions], dtype=np.float64)

    def calibrate(self, clean_scores: Any, method: str = "sigma", k: float = 2.0, fpr: float = 0.05,
                  alpha: float = 0.1, seeds: list[int] | None = None) -> Calibration:  # fmt: skip
        """Set `calibration` from clean scores (monitors.calibration.calibrate; for scores kept
        per episode, set it to monitors.calibration.calibrate_episodes(...) instead)."""
        self.calibration = calibrate(clean_scores, method, k=k, fpr=fpr, alpha=alpha, seeds=seeds)
        return self.calibration

    # --- subclasses -----------------------------------------------------------------------
    def _fit(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _token_scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        """Constructor keyword arguments beyond aggregate/model/layer."""
        return {}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        raise NotImplementedError

    # --- persistence ----------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """{"model", "layer", "d"} of the activations this scorer belongs to."""
        return {"model": self.model, "layer": self.layer, "d": self.d}

    def save(self, directory: str | Path) -> Path:
        """Write scorer.json (kind, parameters, provenance, calibration) and scorer.safetensors."""
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_extra(directory)
        write_safetensors(directory / TENSOR_FILE, self._tensors())
        doc = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "aggregate": self.aggregate,
            "params": self._params(),
            "provenance": self.provenance(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }
        write_json(directory / SCORER_FILE, doc)  # last: a scorer.json means a complete save
        return directory

    def _save_extra(self, directory: Path) -> None:
        """Hook for scorers with files of their own (the SAE)."""


#: Kind → scorer class, filled as scorer modules are imported (each registers its own class).
SCORERS: dict[str, type[Scorer]] = {}
#: Where the built-in kinds live ("module:Class"); other packages add kinds through the
#: "physteer.scorers" entry-point group (name = kind, value = "module:Class").
BUILTIN_SCORERS = {
    "mahalanobis": "monitors.baselines:MahalanobisScorer",
    "pca": "monitors.baselines:PCAReconstructionScorer",
    "sae": "monitors.sae_scorer:SAEReconstructionScorer",
    "probe": "monitors.probe:LinearProbeScorer",
    "combined": "monitors.combined:CombinedScorer",
    "failure": "monitors.failure:FailurePredictor",
    "signal": "monitors.signals:SignalScorer",
}
ENTRY_POINT_GROUP = "physteer.scorers"


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Make `cls` known to make_scorer / load_scorer under `cls.kind` (use as a decorator)."""
    SCORERS[cls.kind] = cls
    return cls


def _plugin_paths() -> dict[str, str]:
    """Every known kind and where its class lives: the built-ins, then installed entry points."""
    from importlib.metadata import entry_points

    paths = dict(BUILTIN_SCORERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        paths.setdefault(ep.name, ep.value)
    return paths


def scorer_kinds() -> list[str]:
    """The kinds make_scorer accepts (registered, built-in and entry-point ones)."""
    return sorted(set(SCORERS) | set(_plugin_paths()))


def scorer_class(kind: str) -> type[Scorer]:
    """The class of a scorer kind, importing its module on first use (a plug-in, not an import
    of this module's: the plug-ins import this module, never the reverse).

    Raises:
        ValueError: no such kind (the message lists the known ones).
    """
    if kind not in SCORERS:
        path = _plugin_paths().get(kind)
        if path is None:
            raise ValueError(f"scorer kind {kind!r}: expected one of {scorer_kinds()}")
        import importlib

        module, _, name = path.partition(":")
        register_scorer(getattr(importlib.import_module(module), name))
    return SCORERS[kind]


def make_scorer(kind: str, **kwargs: Any) -> Scorer:
    """Build a scorer by kind ("sae", "mahalanobis", "pca", "probe", "combined")."""
    return scorer_class(kind)(**kwargs)


def load_scorer(
    directory: str | Path, model: str | None = None, layer: int | None = None, d: int | None = None
) -> Scorer:
    """Load a saved scorer (with its calibration); check that it belongs to model/layer/d.

    Raises:
        FileNotFoundError: no scorer.json / scorer.safetensors in `directory`.
        ValueError: the file was made for another model, layer or d (the message names which),
            or it is not a scorer file this version reads.
    """
    directory = Path(directory)
    doc_path, t_path = directory / SCORER_FILE, directory / TENSOR_FILE
    for p in (doc_path, t_path):
        if not p.is_file():
            raise FileNotFoundError(f"no saved scorer file {p}")
    try:
        doc = json.loads(doc_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{doc_path} is not valid JSON: {exc}") from exc
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{doc_path}: format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in scorer_kinds():
        raise ValueError(f"{doc_path}: scorer kind {kind!r}, expected one of {scorer_kinds()}")
    prov = doc.get("provenance") or {}
    check_provenance(prov, str(doc_path), model=model, layer=layer, d=d)
    scorer = scorer_class(kind)(aggregate=doc["aggregate"], model=prov.get("model"), layer=prov.get("layer"),
                           **doc.get("params", {}))  # fmt: skip
    scorer.d = None if prov.get("d") is None else int(prov["d"])
    scorer._restore(read_safetensors(t_path), directory)
    if doc.get("calibration") is not None:
        scorer.calibration = Calibration.from_dict(doc["calibration"])
    return scorer
