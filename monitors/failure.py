"""Learned failure predictors: will this episode fail? From the time series of a policy's own
decision activations, trained on the success/failure labels of its rollouts (SAFE, NeurIPS 2025).

    mlp = FailurePredictor(arch="mlp", model="tiny-vla", layer=2)
    mlp.fit_episodes(episodes, failed)     # episodes: per episode, its decisions (n_tokens × d each)
    mlp.set_time_profile(successful)       # per-decision-index mean and spread on successes
    state = mlp.new_state()                # per episode (the monitor keeps one per lane)
    mlp.score_step(tap.latest, state)      # the failure score so far, normalised for its time

Each decision is pooled to one vector (its image tokens' mean) and standardised. Two heads:
- "mlp": a two-layer MLP gives each decision a failure probability; the score at decision t is
  the running mean of those probabilities over decisions 1..t (SAFE's MLP);
- "lstm": a one-layer LSTM reads the decisions in order; the score at t is its output at t.
Both are trained with binary cross-entropy at every decision against the episode's label (Adam,
full batch, classes weighted equally, a fixed seed: the same data give the same predictor),
with early stopping: a quarter of the episodes (stratified by label) is held out and the
weights of the epoch with the lowest held-out loss are kept, as a few hundred episodes are
easily memorised (an LSTM reached training AUROC 1.0 and test AUROC 0.43 on a planted signal).

Time-varying thresholds (SAFE's functional conformal prediction): raw scores drift with the
decision index (an MLP's running mean starts noisy), so `set_time_profile` records the mean and
spread of the raw score at each decision index over successful episodes, and the score the
monitor sees is (raw − mean_t) / spread_t. A conformal-episode calibration of that score on
other successful episodes (monitors.calibration) gives one λ, i.e. the threshold
mean_t + λ · spread_t per decision index: a successful episode crosses it anywhere with
probability at most alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monitors.scorers import Scorer, as_token_matrix, register_scorer

ARCHS = ("mlp", "lstm")


class _Head(nn.Module):
    """Per-decision failure logits of a (B × T × d) batch of pooled decision sequences."""

    def __init__(self, arch: str, d: int, hidden: int) -> None:
        super().__init__()
        self.arch = arch
        if arch == "mlp":
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.lstm = nn.LSTM(d, hidden, batch_first=True)
            self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "mlp":
            return self.net(x).squeeze(-1)
        h, _ = self.lstm(x)
        return self.out(h).squeeze(-1)


class _State:
    """One episode's history inside a predictor (the pooled decisions so far)."""

    def __init__(self) -> None:
        self.pooled: list[torch.Tensor] = []


@register_scorer
class FailurePredictor(Scorer):
    """A learned failure predictor over the decisions of an episode (module docstring).

    Args:
        arch: "mlp" or "lstm".
        hidden: hidden units.
        epochs: full-batch training steps.
        lr: Adam learning rate.
        seed: training seed.
        aggregate: pooling over a decision's tokens ("mean" or "max").
        model, layer: provenance, as in Scorer.

    Attributes:
        n_train: {"episodes", "failed", "decisions"} it was trained on.
    """

    kind = "failure"
    #: the monitor keeps one history per episode (`new_state`) and calls `score_step`
    stateful = True

    def __init__(self, arch: str = "mlp", hidden: int = 16, epochs: int = 200, lr: float = 3e-3, seed: int = 0,
                 aggregate: str = "mean", model: str | None = None, layer: int | None = None,
                 n_train: dict[str, int] | None = None) -> None:  # fmt: skip
        super().__init__(aggregate, model, layer)
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r}: expected one of {list(ARCHS)}")
        for name, value in (("hidden", hidden), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an int >= 1")
        if not (isinstance(lr, (int, float)) and 0 < lr < 1):
            raise ValueError(f"lr={lr!r}: expected a number in (0, 1)")
        self.arch, self.hidden, self.epochs, self.lr, self.seed = (
            arch,
            hidden,
            epochs,
            float(lr),
            int(seed),
        )
        self.n_train = n_train or {}
        self.head: _Head | None = None
        self.mean = self.std = None  # feature standardisation
        self.profile_mean = self.profile_std = None  # raw score per decision index (successes)

    @property
    def name(self) -> str:
        """e.g. "failure-lstm/mean"."""
        return f"failure-{self.arch}/{self.aggregate}"

    # --- training -------------------------------------------------------------------------
    def _fit(self, x: torch.Tensor) -> None:
        raise ValueError(
            "a failure predictor learns from labelled episodes: call fit_episodes(episodes, failed)"
        )

    def pool(self, decision: Any) -> torch.Tensor:
        """One decision's feature vector (d,): its token rows pooled by `aggregate`."""
        x = as_token_matrix(decision, self.d)
        return x.mean(0) if self.aggregate == "mean" else x.max(0).values

    def fit_episodes(
        self, episodes: Sequence[Sequence[Any]], failed: Sequence[bool]
    ) -> FailurePredictor:
        """Train on episodes (each a list of decisions, n_tokens × d) and their failure labels.

        Raises:
            ValueError: no failed or no successful episode among them (a predictor of failure
                needs both), an episode without decisions, or mismatched lengths.
        """
        failed = [bool(f) for f in failed]
        if len(episodes) != len(failed):
            raise ValueError(f"{len(episodes)} episodes but {len(failed)} labels")
        if not any(failed) or all(failed):
            raise ValueError(f"a failure predictor needs failed and successful episodes to learn from; got "
                             f"{sum(failed)} failed of {len(failed)}: run conditions the policy fails in (a shift suite)")  # fmt: skip
        if any(len(e) == 0 for e in episodes):
            raise ValueError("an episode without decisions: every episode needs at least one")
        seqs = [torch.stack([self.pool(a) for a in e]) for e in episodes]
        self.d = int(seqs[0].shape[1])
        rows = torch.cat(seqs)
        self.mean, self.std = rows.mean(0), rows.std(0).clamp_min(1e-6)
        gen = torch.Generator().manual_seed(self.seed)
        held = _stratified_holdout(failed, gen)
        train = [i for i in range(len(seqs)) if i not in held]
        x, mask, y, w = self._labelled([seqs[i] for i in train], [failed[i] for i in train])
        held_out = (
            self._labelled([seqs[i] for i in sorted(held)], [failed[i] for i in sorted(held)])
            if held
            else None
        )
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            self.head = _Head(self.arch, self.d, self.hidden)
        opt = torch.optim.Adam(self.head.parameters(), lr=self.lr, weight_decay=1e-3)

        def loss(
            xb: torch.Tensor, mb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor
        ) -> torch.Tensor:
            logits = self.head(xb)
            return (
                nn.functional.binary_cross_entropy_with_logits(
                    logits, yb, weight=wb, reduction="sum"
                )
                / mb.sum()
            )

        best, best_state, stopped_at = (
            math.inf,
            None,
            self.epochs,
        )  # no held-out set: the last epoch
        for epoch in range(self.epochs):
            self.head.train()
            opt.zero_grad()
            loss(x, mask, y, w).backward()
            opt.step()
            self.head.eval()
            if held_out is None:
                continue
            with torch.no_grad():
                val = float(loss(*held_out))
            if val < best:
                best, stopped_at = val, epoch + 1
                best_state = {k: v.clone() for k, v in self.head.state_dict().items()}
        if best_state is not None:
            self.head.load_state_dict(best_state)
        self.head.eval()
        self.n_train = {"episodes": len(failed), "failed": sum(failed), "decisions": int(rows.shape[0]),
                        "held_out": len(held), "epochs": stopped_at}  # fmt: skip
        return self

    def _labelled(
        self, seqs: Sequence[torch.Tensor], failed: Sequence[bool]
    ) -> tuple[torch.Tensor, ...]:
        """Batch, mask, per-decision labels and class-balanced weights (each class half the loss)."""
        x, mask = self._batch(seqs)
        y = torch.tensor(failed, dtype=torch.float32)[:, None].expand_as(mask).contiguous()
        share = y[mask].mean().clamp(1e-6, 1 - 1e-6)
        return x, mask, y, torch.where(y > 0, 0.5 / share, 0.5 / (1 - share)) * mask

    def _batch(self, seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised, zero-padded (B × T × d) batch and its (B × T) mask."""
        t = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), t, self.d)
        mask = torch.zeros(len(seqs), t, dtype=torch.bool)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = (s - self.mean) / self.std
            mask[i, : len(s)] = True
        return x, mask

    # --- scoring --------------------------------------------------------------------------
    @torch.no_grad()
    def raw_scores(self, decisions: Sequence[Any]) -> np.ndarray:
        """Raw failure scores of an episode's decisions, in order (probabilities in [0, 1])."""
        if self.head is None:
            raise ValueError("FailurePredictor is not fitted: call fit_episodes() or load_scorer()")
        if len(decisions) == 0:
            return np.zeros(0)
        return self._raw_from_pooled([self.pool(a) for a in decisions])

    @torch.no_grad()
    def _raw_from_pooled(self, pooled: Sequence[torch.Tensor]) -> np.ndarray:
        x, _ = self._batch([torch.stack(list(pooled))])
        p = torch.sigmoid(self.head(x))[0]
        if self.arch == "mlp":  # SAFE's MLP: the running mean of per-decision probabilities
            p = p.cumsum(0) / torch.arange(1, len(p) + 1)
        return p.double().numpy()

    def set_time_profile(self, successful: Sequence[Sequence[Any]]) -> None:
        """Record the raw score's mean and spread per decision index over successful episodes
        (the functional threshold's shape; later indices reuse the last one seen)."""
        scores = [self.raw_scores(e) for e in successful if len(e)]
        if len(scores) < 2:
            raise ValueError(
                f"a time profile needs at least 2 successful episodes, got {len(scores)}"
            )
        t = max(len(s) for s in scores)
        mean, std = np.zeros(t), np.zeros(t)
        for i in range(t):
            col = np.array([s[min(i, len(s) - 1)] for s in scores])
            mean[i], std[i] = col.mean(), max(col.std(ddof=1), 1e-3)
        self.profile_mean, self.profile_std = torch.tensor(mean), torch.tensor(std)

    def normalised(self, raw: np.ndarray) -> np.ndarray:
        """(raw − mean_t) / spread_t per decision index (raw itself before set_time_profile)."""
        if self.profile_mean is None:
            return raw
        last = len(self.profile_mean) - 1
        idx = np.minimum(np.arange(len(raw)), last)
        return (raw - self.profile_mean.numpy()[idx]) / self.profile_std.numpy()[idx]

    def score_many(self, decisions: Sequence[Any]) -> np.ndarray:
        """The scores of one episode's decisions, in order (what the monitor sees step by step)."""
        return self.normalised(self.raw_scores(decisions))

    def new_state(self) -> _State:
        """A fresh per-episode history."""
        return _State()

    def score_step(self, activations: Any, state: _State) -> float:
        """Add a decision to the episode's history and return its score (the monitor's call):
        the history keeps each decision pooled, so a step costs one pooling and a pass of the
        head over the pooled history (a few dozen d-vectors)."""
        state.pooled.append(self.pool(activations))
        return float(self.normalised(self._raw_from_pooled(state.pooled))[-1])

    def score(self, activations: Any) -> float:
        """A decision scored as the first of an episode (the monitor calls `score_step`)."""
        return float(self.score_many([activations])[-1])

    def token_scores(self, activations: Any) -> torch.Tensor:
        raise ValueError(
            "a failure predictor scores decisions in an episode's order, not tokens: use score_many"
        )

    # --- persistence ----------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"arch": self.arch, "hidden": self.hidden, "epochs": self.epochs, "lr": self.lr, "seed": self.seed,
                "n_train": self.n_train}  # fmt: skip

    def _tensors(self) -> dict[str, torch.Tensor]:
        assert self.head is not None
        out = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        out.update(mean=self.mean, std=self.std)
        if self.profile_mean is not None:
            out.update(profile_mean=self.profile_mean, profile_std=self.profile_std)
        return {k: v.contiguous() for k, v in out.items()}

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        self.mean, self.std = tensors["mean"], tensors["std"]
        self.d = int(self.mean.numel())
        self.head = _Head(self.arch, self.d, self.hidden)
        self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        self.head.eval()
        self.profile_mean, self.profile_std = (
            tensors.get("profile_mean"),
            tensors.get("profile_std"),
        )


def _stratified_holdout(failed: Sequence[bool], gen: torch.Generator) -> set[int]:
    """A quarter of the episodes of each label (at least one of each), for early stopping; empty
    (no early stopping) unless both labels keep an episode for training and one held out."""
    held: set[int] = set()
    for label in (True, False):
        idx = [i for i, f in enumerate(failed) if f == label]
        if len(idx) < 2:
            return set()
        order = torch.randperm(len(idx), generator=gen).tolist()
        held |= {idx[j] for j in order[: max(1, len(idx) // 4)]}
    return held
