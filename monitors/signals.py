"""Scorers of a policy's own output uncertainty, the failure-prediction baselines that read no
activations: the VLA's action-token entropy, the chunk change of the VLA and the π0
(agents.vla_agent, agents.pi0_agent), and the π0's sample variance across noise draws.

    entropy = SignalScorer("action_entropy", model="tiny-vla", layer=2).fit(decisions)
    entropy.score_signals({"action_entropy": 0.31, "chunk_change": 0.02})   # 0.31

The SARM monitor gives a scorer whose `reads` is "signals" the signals of the decision it
judges (rollouts.recorders.TapView.signals); episode logs carry them as step columns
(rollouts.episode.SIGNAL_COLUMNS), where offline evaluation reads them. A decision without the
signal (an agent that does not report it, the planner) cannot be scored: the monitor fails
closed, as for missing activations. Sample variance across decodings, the third published
uncertainty baseline, needs a stochastic policy: the π0 reports it when asked for extra noise
draws (`variance_draws`); physteer's token VLA decodes deterministically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitors.scorers import Scorer, register_scorer

SIGNALS = ("action_entropy", "chunk_change", "sample_variance")
#: A signal scorer's name (its `name`, and how studies list it) → the signal it reads.
SIGNAL_SCORERS = {signal.replace("_", "-"): signal for signal in SIGNALS}
#: The signal scorers each agent's decisions can feed (the π0's sample variance only with
#: extra noise draws, `variance_draws`; the planner reports none).
AGENT_SIGNAL_SCORERS = {"vla": ("action-entropy", "chunk-change"), "pi0": ("chunk-change", "sample-variance"),
                        "vlm": ()}  # fmt: skip


@register_scorer
class SignalScorer(Scorer):
    """The value of one of the agent's uncertainty signals at a decision (higher = less sure).

    Args:
        signal: "action_entropy" (mean normalised entropy of the action tokens),
            "chunk_change" (how far a forward strays from the previous one's prediction) or
            "sample_variance" (the spread of a π0's chunks across noise draws).
        aggregate, model, layer: as in Scorer (aggregate is unused: one value per decision).
        oriented: the score is `sign` × the signal, its sign learned from failure labels
            (`orient`): the one-parameter learned version of the baseline, for a signal that
            may fall rather than rise before a failure. Its name ends in "-oriented".
        sign: +1 or -1 (set by `orient`, saved).
    """

    kind = "signal"
    #: the monitor passes `score_signals` the decision's signals instead of its activations
    reads = "signals"

    def __init__(self, signal: str = "action_entropy", aggregate: str = "mean", model: str | None = None,
                 layer: int | None = None, oriented: bool = False, sign: float = 1.0) -> None:  # fmt: skip
        super().__init__(aggregate, model, layer)
        if signal not in SIGNALS:
            raise ValueError(f"signal={signal!r}: expected one of {list(SIGNALS)}")
        if sign not in (1.0, -1.0):
            raise ValueError(f"sign={sign!r}: expected 1 or -1")
        self.signal, self.oriented, self.sign = signal, bool(oriented), float(sign)
        self.orientation: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """e.g. "action-entropy" (or "action-entropy-oriented")."""
        return self.signal.replace("_", "-") + ("-oriented" if self.oriented else "")

    def orient(self, episodes: list[list[dict[str, Any]]], failed: list[bool]) -> SignalScorer:
        """Learn the sign: the one under which each episode's largest score (its decisions before
        the failure) ranks the failed episodes above the successful ones (ROC-AUC; +1 on a tie).

        Raises:
            ValueError: not an oriented scorer, or labels of one kind only.
        """
        from sklearn.metrics import roc_auc_score

        if not self.oriented:
            raise ValueError(f"{self.name} is not oriented: build it with oriented=True")
        if len(episodes) != len(failed) or len(set(failed)) < 2:
            raise ValueError(f"orienting {self.name} needs failed and successful episodes, one label each "
                             f"(got {len(episodes)} episodes, {sum(map(bool, failed))} failed)")  # fmt: skip
        kept = [(e, f) for e, f in zip(episodes, failed, strict=True) if e]
        values = [np.array([float(d[self.signal]) for d in e]) for e, _ in kept]
        labels = [bool(f) for _, f in kept]
        auroc = {
            s: float(roc_auc_score(labels, [np.nanmax(s * v) for v in values])) for s in (1.0, -1.0)
        }
        self.sign = 1.0 if auroc[1.0] >= auroc[-1.0] else -1.0
        self.orientation = {"sign": self.sign, "fit_auroc": auroc[self.sign], "episodes": len(kept)}
        return self

    def fit(self, activations: Any) -> SignalScorer:
        """Nothing to learn: records the width d of the decisions it will watch (provenance:
        the monitor loads it only beside the same model and layer)."""
        if activations is None or len(activations) == 0:
            raise ValueError(
                "pass the decisions the scorer will watch (their model, layer and width are its provenance)"
            )
        first = activations if torch.is_tensor(activations) else activations[0]
        self.d = int(torch.as_tensor(first).shape[-1])
        return self

    def score_signals(self, signals: dict[str, Any] | None) -> float:
        """The decision's signal value; ValueError where the decision does not carry it."""
        value = (signals or {}).get(self.signal)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(
                f"the decision carries no {self.signal!r} signal (got {value!r}): the agent does not report it"
            )
        return self.sign * float(value)

    def score_many(self, decisions: Any) -> np.ndarray:
        """Scores of several decisions given as signal dicts."""
        return np.array([self.score_signals(s) for s in decisions], dtype=np.float64)

    def score(self, activations: Any) -> float:
        raise ValueError(
            f"{self.name} reads the agent's signals, not activations: call score_signals"
        )

    def _params(self) -> dict[str, Any]:
        return {"signal": self.signal, "oriented": self.oriented, "sign": self.sign}

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        """Nothing to restore (no parameters)."""
