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

from envs import FrankaPickEnv
from envs.expert import HandlingProfile, ScriptedExpert

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


def collect_probe_data(backend: Any, layer: int, n_episodes: int, seed: int = 2_000_000,
                       heights: tuple[float, float] = (0.04, 0.30), progress: Any = None) -> ProbeData:
    """Run `n_episodes` release episodes and collect h_t and S_{t+1} (see module docstring)."""
    from agents.taps import ResidualTap

    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state")
    rng = np.random.default_rng([seed, 17])
    rows: dict[str, list] = {k: [] for k in ProbeData.__dataclass_fields__}

    def embed(frame: np.ndarray) -> np.ndarray:
        backend.prob_yes([frame])
        return tap.image_activations.mean(0).cpu().numpy()

    with ResidualTap(layer, include_last=False).attach(backend) as tap:
        for ep in range(n_episodes):
            height = float(rng.uniform(*heights))
            expert = ScriptedExpert(HandlingProfile("probe", grip=0.15, speed=0.5, release_height=height))
            _, info = env.reset(seed=seed + ep)
            h_frames, released_at, next_emb, done = [], None, None, False
            while not done:
                phase = expert.phase
                if info["holding"] and phase == "lower" and not h_frames:
                    h_frames.append(embed(env.render()))
                if info["holding"] and phase == "release" and len(h_frames) == 1:
                    h_frames.append(embed(env.render()))
                    released_at = info["step"]
                if released_at is not None and next_emb is None and info["step"] >= released_at + 4:
                    next_emb = embed(env.render())
                _, _, term, trunc, info = env.step(expert.act(info))
                done = term or trunc or (released_at is not None and info["step"] > released_at + 25)
            if len(h_frames) < 2:
                continue  # never held the object over the bin: no holding state to probe
            if next_emb is None:
                next_emb = embed(env.render())
            for h in h_frames:
                rows["h"].append(h)
                rows["groups"].append(ep)
                rows["color"].append(info["object"]["color"])
                rows["material"].append(info["object"]["material"])
                rows["release_height"].append(height)
                rows["broken"].append(bool(info["broken"]))
                rows["impact_speed"].append(float(info["impact_speed"]))
                rows["final_height"].append(float(info["object_pos"][2]))
                rows["next_embedding"].append(next_emb)
            if progress is not None:
                progress(ep + 1)
    env.close()
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
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def _oof(make, X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int, classify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions (grouped by episode) and in-sample predictions."""
    from sklearn.model_selection import GroupKFold

    oof = np.zeros(y.shape, dtype=float)
    for train, test in GroupKFold(n_splits=n_splits).split(X, y, groups):
        if classify and len(np.unique(y[train])) < 2:
            oof[test] = y[train].mean()  # a fold without both outcomes can only predict the base rate
            continue
        model = make().fit(X[train], y[train])
        oof[test] = model.predict_proba(X[test])[:, 1] if classify else model.predict(X[test])
    full = make().fit(X, y)
    fit = full.predict_proba(X)[:, 1] if classify else full.predict(X)
    return oof, fit


def _bootstrap(metric, y, pred, groups, n_boot=500, seed=0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    episodes = np.unique(groups)
    index = {g: np.flatnonzero(groups == g) for g in episodes}
    vals = []
    for _ in range(n_boot):
        pick = np.concatenate([index[g] for g in rng.choice(episodes, len(episodes))])
        v = metric(y[pick], pred[pick])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def fit_probes(data: ProbeData, n_splits: int = 5, seed: int = 0) -> list[ProbeRow]:
    """Probe every target with h_t and with each baseline; see the module docstring."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
    for target in TARGETS:
        y = np.asarray(getattr(data, target), dtype=float)
        classify = target == "broken"
        if classify and not 0 < y.sum() < len(y):
            rows.append(ProbeRow(target, "all", "AUROC", float("nan"), float("nan"), float("nan"), n_eps,
                                 notes=[f"not estimable: broken is {'always' if y.sum() else 'never'} true in {n_eps} episodes"]))
            continue
        metric = _auc if classify else _r2
        name = "AUROC" if classify else "R²"
        y_shuf = np.concatenate([y[groups == remap[g]][:1].repeat((groups == g).sum(), 0) for g in np.unique(groups)]) if y.ndim == 1 else None
        order = np.concatenate([np.flatnonzero(groups == g) for g in np.unique(groups)])
        if y.ndim > 1:
            y_shuf = np.concatenate([y[groups == remap[g]][:1].repeat((groups == g).sum(), 0) for g in np.unique(groups)])
        for pname, X in [*predictors.items(), ("shuffled-label control", data.h)]:
            yy = y_shuf if pname.startswith("shuffled") else y[order]
            XX = X[order]
            gg = groups[order]
            if pname == "mean" and classify:
                oof = fit = np.full(len(yy), yy.mean())  # a constant score: AUROC 0.5 by definition
            elif pname == "mean":
                oof = np.full(yy.shape, yy.mean(0))
                # the mean predictor is cross-validated too: each fold predicts the training mean
                from sklearn.model_selection import GroupKFold

                for train, test in GroupKFold(n_splits=n_splits).split(XX, yy, gg):
                    oof[test] = yy[train].mean(0)
                fit = np.full(yy.shape, yy.mean(0))
            elif classify:
                make = lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))  # noqa: E731
                oof, fit = _oof(make, XX, yy, gg, n_splits, True)
            else:
                alpha = _choose_alpha(XX, yy, gg, n_splits)
                make = lambda a=alpha: make_pipeline(StandardScaler(), Ridge(alpha=a))  # noqa: E731
                oof, fit = _oof(make, XX, yy, gg, n_splits, False)
            value = metric(yy, oof)
            low, high = _bootstrap(metric, yy, oof, gg, seed=seed)
            row = ProbeRow(target, pname, name, value, low, high, n_eps, train_value=metric(yy, fit))
            if not classify and np.isfinite(value) and value < 0:
                row.notes.append(_explain_negative(XX, yy, gg, n_splits, row.train_value))
            rows.append(row)
    return rows


def _choose_alpha(X, y, groups, n_splits) -> float:
    """Ridge penalty with the best grouped-CV R² (the regularisation path's argmax)."""
    path = regularisation_path(X, y, groups, n_splits)
    return float(ALPHAS[int(np.nanargmax(path))]) if np.isfinite(path).any() else 1.0


def regularisation_path(X, y, groups, n_splits) -> np.ndarray:
    """Grouped-CV R² for each ridge penalty in ALPHAS."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = []
    for a in ALPHAS:
        oof, _ = _oof(lambda a=a: make_pipeline(StandardScaler(), Ridge(alpha=a)), X, y, groups, n_splits, False)
        out.append(_r2(y, oof))
    return np.array(out)


def _explain_negative(X, y, groups, n_splits, train_r2) -> str:
    path = regularisation_path(X, y, groups, n_splits)
    best = float(np.nanmax(path)) if np.isfinite(path).any() else float("nan")
    return (
        f"negative test R² with train R² {train_r2:.2f}: the probe predicts held-out episodes worse than "
        f"their mean (overfitting or no signal). Best test R² along the ridge path "
        f"(α = {ALPHAS[0]:g}…{ALPHAS[-1]:g}) is {best:.2f}."
    )


def probe_table_markdown(rows: list[ProbeRow]) -> str:
    """The probe results as a Markdown table (with notes)."""
    lines = ["| target | predictor | metric | test value [95% CI] | train value | episodes |", "|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        lines.append(f"| {r.target} | {r.predictor} | {r.metric} | {r.value:.3f} [{r.low:.3f}, {r.high:.3f}] | {r.train_value:.3f} | {r.n_episodes} |")
        notes += [f"- {r.target} / {r.predictor}: {n}" for n in r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def broken_verdict(rows: list[ProbeRow]) -> str:
    """One sentence: is broken predicted above the labels-only baseline?"""
    get = {(r.target, r.predictor): r for r in rows}
    h, lab = get.get(("broken", "h_t (activations)")), get.get(("broken", "labels only"))
    if h is None or lab is None or not np.isfinite(h.value):
        return "Breakage after release could not be evaluated (no variation in the outcome)."
    above = h.low > lab.value
    return (
        f"Breakage after release is predicted from h_t with AUROC {h.value:.2f} [{h.low:.2f}, {h.high:.2f}] vs "
        f"{lab.value:.2f} [{lab.low:.2f}, {lab.high:.2f}] from labels only: "
        + ("h_t predicts breakage ABOVE the labels-only baseline." if above else "h_t does NOT predict breakage clearly above the labels-only baseline.")
    )
