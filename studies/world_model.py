"""World-model probe: do holding-state activations h_t predict what happens after release?

Data: episodes in which the scripted expert holds the object over the bin and lets go from a
random height (so some fragile objects break on impact). Two holding frames per episode (while
lowering, and just before release) go through the VLM; the tap gives h_t (mean over image
tokens). After release we record S_{t+1}: broken, impact speed, final height, and the
embedding of the frame a few steps later.

Fit: logistic regression (broken; AUROC) and ridge (R²) with cross-validation grouped by
episode, so the two frames of an episode never sit on both sides of a split. Baselines in the
same table: a mean predictor, labels only (color, material one-hot), and a shuffled-label
control; every figure has a bootstrap 95% CI over episodes. A negative R² comes with its
train R² and the regularisation path, so it can be read rather than just reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.expert import HandlingProfile
from rollouts.recorders import Recorder, StepView

TARGETS = ("broken", "impact_speed", "final_height", "next_embedding")
ALPHAS = np.logspace(-2, 4, 13)


@dataclass
class ProbeData:
    """One row per holding frame. `groups` holds the episode of each row."""

    h: np.ndarray  # rows × d
    groups: np.ndarray
    color: np.ndarray
    material: np.ndarray
    release_height: np.ndarray
    broken: np.ndarray
    impact_speed: np.ndarray
    final_height: np.ndarray
    next_embedding: np.ndarray  # rows × d

    def labels_matrix(self) -> np.ndarray:
        """One-hot color and material: the labels-only baseline's features."""
        return np.stack([self.color == "red", self.material == "fragile"], axis=1).astype(float)


class ReleaseProbe(Recorder):
    """Records h_t at two holding frames (first frame lowering into the bin, and at release),
    the embedding of the frame 4 steps after release, and ends the episode 25 steps after it.
    Its forwards go through its own tap on `backend` (the acting agent is the model-free expert)."""

    name = "probe"

    def __init__(self, backend: Any, tap: Any) -> None:
        self.backend, self.tap = backend, tap
        self.h: list[np.ndarray] = []
        self.released_at: int | None = None
        self.next_embedding: np.ndarray | None = None

    def _embed(self, frame: np.ndarray) -> np.ndarray:
        self.backend.prob_yes([frame])
        return self.tap.image_activations.mean(0).cpu().numpy()

    def after_act(self, view: StepView) -> None:
        """Embed the holding frames and the frame after release."""
        info, phase = view.info, view.agent.phase_for(view.lane)
        if info["holding"] and phase == "lower" and not self.h:
            self.h.append(self._embed(view.frame()))
        if info["holding"] and phase == "release" and len(self.h) == 1:
            self.h.append(self._embed(view.frame()))
            self.released_at = info["step"]
        if (
            self.released_at is not None
            and self.next_embedding is None
            and info["step"] >= self.released_at + 4
        ):
            self.next_embedding = self._embed(view.frame())

    def after_step(self, view: StepView) -> bool:
        """Stop 25 steps after the release."""
        return self.released_at is not None and view.next_info["step"] > self.released_at + 25

    def finish(self, view: StepView) -> None:
        """The last frame stands in for the frame after release when the episode ended first."""
        if len(self.h) == 2 and self.next_embedding is None:
            self.next_embedding = self._embed(view.frame())

    def result(self) -> dict[str, Any] | None:
        """h_t frames and the next embedding, or None (never held the object over the bin)."""
        if len(self.h) < 2:
            return None
        return {"h": self.h, "next_embedding": self.next_embedding}


def collect_probe_data(
    backend: Any,
    layer: int,
    n_episodes: int,
    seed: int = 2_000_000,
    heights: tuple[float, float] = (0.04, 0.30),
    progress: Any = None,
) -> ProbeData:
    """Run `n_episodes` release episodes (the one closed loop, a scripted expert releasing from a
    random height) and collect h_t and S_{t+1} (see module docstring)."""
    from agents.protocol import ExpertAgent
    from agents.taps import ResidualTap
    from rollouts.episode import ClosedLoop, EpisodeSpec

    rng = np.random.default_rng([seed, 17])
    rows: dict[str, list] = {k: [] for k in ProbeData.__dataclass_fields__}
    agent = ExpertAgent()
    with ResidualTap(layer, include_last=False).attach(backend) as tap:
        loop = ClosedLoop(
            agent, record_decisions=False, recorders=lambda spec: [ReleaseProbe(backend, tap)]
        )
        try:
            for ep in range(n_episodes):
                height = float(rng.uniform(*heights))
                agent.profile = HandlingProfile(
                    "probe", grip=0.15, speed=0.5, release_height=height
                )
                (record,) = loop.run([EpisodeSpec(seed + ep)])
                probe, row = record.extra["probe"], record.row
                if probe is not None:  # else: never held the object over the bin, nothing to probe
                    for h in probe["h"]:
                        rows["h"].append(h)
                        rows["groups"].append(ep)
                        rows["color"].append(row["color"])
                        rows["material"].append(row["material"])
                        rows["release_height"].append(height)
                        rows["broken"].append(bool(row["broken"]))
                        rows["impact_speed"].append(float(row["impact_speed"]))
                        rows["final_height"].append(float(row["final_object_z"]))
                        rows["next_embedding"].append(probe["next_embedding"])
                if progress is not None:
                    progress(ep + 1)
        finally:
            loop.close()
    if not rows["h"]:
        raise ValueError("no episode reached a holding state; nothing to probe")
    return ProbeData(**{k: np.asarray(v) for k, v in rows.items()})


@dataclass
class ProbeRow:
    """One target × predictor result."""

    target: str
    predictor: str
    metric: str
    value: float
    low: float
    high: float
    n_episodes: int
    train_value: float = float("nan")
    notes: list[str] = field(default_factory=list)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    y = y.reshape(len(y), -1)
    pred = pred.reshape(len(pred), -1)
    ss_res = ((y - pred) ** 2).sum()
    ss_tot = ((y - y.mean(0)) ** 2).sum()
    return float(1 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC as the Mann–Whitney statistic (average ranks for ties: equal to roc_auc_score)."""
    from scipy.stats import rankdata

    pos = np.asarray(y, dtype=bool)
    n_pos = int(pos.sum())
    if not 0 < n_pos < len(pos):
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(pos) - n_pos)))


def ridge_predictions(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, alphas: Any
) -> np.ndarray:
    """Predictions of a standardised ridge for every penalty at once (one SVD).

    The same model as scikit-learn's `make_pipeline(StandardScaler(), Ridge(alpha))` (features
    scaled to zero mean and unit variance on the training rows, an unpenalised intercept), in
    closed form: w = V diag(s / (s² + α)) Uᵀ (y − ȳ) for X_std = U diag(s) Vᵀ. Choosing a
    penalty inside every fold of a nested CV fits hundreds of ridges; this makes it cheap.

    Args:
        X_train: rows × features.
        y_train: targets (rows, or rows × outputs).
        X_test: rows × features to predict.
        alphas: penalties (> 0).

    Returns:
        predictions, shape (len(alphas), len(X_test)) + y_train.shape[1:].
    """
    alphas = np.atleast_1d(np.asarray(alphas, dtype=float))
    mean, scale = X_train.mean(0), X_train.std(0)
    scale[scale < 10 * np.finfo(float).eps * np.maximum(np.abs(mean), 1.0)] = (
        1.0  # constant features
    )
    xs = (X_train - mean) / scale
    y_mean = y_train.mean(0)
    u, sv, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y_train - y_mean).reshape(len(y_train), -1)  # k × outputs
    shrink = sv[None, :] / (sv[None, :] ** 2 + alphas[:, None])  # A × k
    xt = ((X_test - mean) / scale) @ vt.T  # n_test × k
    pred = np.einsum("tk,ak,ko->ato", xt, shrink, uty) + np.reshape(y_mean, (1, 1, -1))
    return pred.reshape((len(alphas), len(X_test)) + y_train.shape[1:])


def _oof(
    make, X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int, classify: bool
) -> np.ndarray:
    """Out-of-fold predictions, grouped by episode."""
    from sklearn.model_selection import GroupKFold

    oof = np.zeros(y.shape, dtype=float)
    for train, test in GroupKFold(n_splits=n_splits).split(X, y, groups):
        if classify and len(np.unique(y[train])) < 2:
            oof[test] = y[
                train
            ].mean()  # a fold without both outcomes can only predict the base rate
            continue
        model = make().fit(X[train], y[train])
        oof[test] = model.predict_proba(X[test])[:, 1] if classify else model.predict(X[test])
    return oof


def nested_ridge_oof(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold ridge predictions with the penalty chosen inside each outer fold (nested CV).

    The outer GroupKFold splits episodes into `n_splits` folds. For each, the penalty is the
    one in ALPHAS with the best grouped-CV R² on the outer training episodes alone (inner
    GroupKFold with min(n_splits, their episode count) folds); the ridge with that penalty is
    fitted on the outer training rows and predicts the outer test fold. The test fold never
    takes part in choosing, so the pooled R² of these predictions is not biased upward by the
    choice (choosing on the reported folds is: it keeps the luckiest of 13 penalties).

    Args:
        X: rows × features.
        y: targets (rows, or rows × outputs).
        groups: episode of each row.
        n_splits: outer folds (2 <= n_splits <= episodes).

    Returns:
        (predictions shaped like `y`, the penalty chosen in each outer fold).
    """
    from sklearn.model_selection import GroupKFold

    oof = np.zeros(y.shape, dtype=float)
    alphas: list[float] = []
    for train, test in GroupKFold(n_splits=n_splits).split(X, y, groups):
        alpha = _choose_alpha(X[train], y[train], groups[train], n_splits)
        alphas.append(alpha)
        oof[test] = ridge_predictions(X[train], y[train], X[test], [alpha])[0]
    return oof, alphas


def fit_probes(data: ProbeData, n_splits: int = 5, seed: int = 0) -> list[ProbeRow]:
    """Probe every target with h_t and with each baseline; see the module docstring.

    Cross-validation is grouped by episode. Ridge penalties are chosen inside each outer fold
    (`nested_ridge_oof`); the train R² refits on all rows with the median of the folds'
    penalties. Intervals are percentile bootstraps over episodes (`reports.stats.cluster_bootstrap`).

    Args:
        data: the probe rows (`collect_probe_data`).
        n_splits: outer folds (at most the number of episodes).
        seed: seeds the shuffled-label control and the bootstrap.

    Raises:
        ValueError: fewer than 2 episodes with a holding state.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from reports.stats import cluster_bootstrap

    groups = data.groups
    n_eps = len(np.unique(groups))
    n_splits = min(n_splits, n_eps)
    if n_splits < 2:
        raise ValueError(f"need at least 2 episodes with a holding state, got {n_eps}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.unique(groups))
    remap = dict(zip(np.unique(groups), shuffled, strict=True))  # shuffle targets across episodes
    rows: list[ProbeRow] = []
    predictors = {
        "h_t (activations)": data.h,
        "labels only": data.labels_matrix(),
        "mean": np.zeros((len(groups), 1)),
    }
    order = np.concatenate([np.flatnonzero(groups == g) for g in np.unique(groups)])
    gg = groups[order]
    for target in TARGETS:
        y = np.asarray(getattr(data, target), dtype=float)
        classify = target == "broken"
        if classify and not 0 < y.sum() < len(y):
            rows.append(
                ProbeRow(
                    target,
                    "all",
                    "AUROC",
                    float("nan"),
                    float("nan"),
                    float("nan"),
                    n_eps,
                    notes=[
                        f"not estimable: broken is {'always' if y.sum() else 'never'} true in {n_eps} episodes"
                    ],
                )
            )
            continue
        metric = _auc if classify else _r2
        name = "AUROC" if classify else "R²"
        y_shuf = np.concatenate(
            [y[groups == remap[g]][:1].repeat((groups == g).sum(), 0) for g in np.unique(groups)]
        )
        for pname, X in [*predictors.items(), ("shuffled-label control", data.h)]:
            yy = y_shuf if pname.startswith("shuffled") else y[order]
            XX = X[order]
            alphas: list[float] = []
            if pname == "mean" and classify:
                oof = fit = np.full(len(yy), yy.mean())  # a constant score: AUROC 0.5 by definition
            elif pname == "mean":
                oof = np.full(yy.shape, yy.mean(0))
                # the mean predictor is cross-validated too: each fold predicts the training mean
                for train, test in GroupKFold(n_splits=n_splits).split(XX, yy, gg):
                    oof[test] = yy[train].mean(0)
                fit = np.full(yy.shape, yy.mean(0))
            elif classify:

                def make():
                    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))

                oof = _oof(make, XX, yy, gg, n_splits, True)
                fit = make().fit(XX, yy).predict_proba(XX)[:, 1]
            else:
                oof, alphas = nested_ridge_oof(XX, yy, gg, n_splits)
                fit = ridge_predictions(XX, yy, XX, [float(np.median(alphas))])[0]
            value = metric(yy, oof)
            low, high = cluster_bootstrap(metric, gg, yy, oof, n_boot=500, seed=seed)
            row = ProbeRow(
                target, pname, name, value, low, high, n_eps, train_value=metric(yy, fit)
            )
            if not classify and np.isfinite(value) and value < 0:
                row.notes.append(_explain_negative(XX, yy, gg, n_splits, row.train_value, alphas))
            rows.append(row)
    return rows


def _choose_alpha(X, y, groups, n_splits) -> float:
    """Ridge penalty with the best grouped-CV R² on these rows (1.0 when not estimable)."""
    n_inner = min(n_splits, len(np.unique(groups)))
    if n_inner < 2:
        return 1.0
    path = regularisation_path(X, y, groups, n_inner)
    return float(ALPHAS[int(np.nanargmax(path))]) if np.isfinite(path).any() else 1.0


def regularisation_path(X, y, groups, n_splits) -> np.ndarray:
    """Grouped-CV R² (pooled out-of-fold predictions) for each ridge penalty in ALPHAS."""
    from sklearn.model_selection import GroupKFold

    oof = np.zeros((len(ALPHAS),) + y.shape, dtype=float)
    for train, test in GroupKFold(n_splits=n_splits).split(X, y, groups):
        oof[:, test] = ridge_predictions(X[train], y[train], X[test], ALPHAS)
    return np.array([_r2(y, p) for p in oof])


def _explain_negative(X, y, groups, n_splits, train_r2, alphas=()) -> str:
    path = regularisation_path(X, y, groups, n_splits)
    best = float(np.nanmax(path)) if np.isfinite(path).any() else float("nan")
    chosen = (
        f" α chosen inside each outer fold: {', '.join(f'{a:g}' for a in alphas)}."
        if alphas
        else ""
    )
    return (
        f"negative test R² with train R² {train_r2:.2f}: the probe predicts held-out episodes worse than "
        f"their mean (overfitting or no signal). Best test R² along the ridge path "
        f"(α = {ALPHAS[0]:g}…{ALPHAS[-1]:g}, chosen on these same folds, so optimistic) is {best:.2f}.{chosen}"
    )
