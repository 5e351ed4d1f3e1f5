"""Decorrelated feature discovery over the color x material (x shade) design.

The reference protocol ranks features by the raw group-mean difference fragile - rigid. That
number alone cannot separate a fragility feature from a color feature that happens to
correlate with material, nor tell a real effect from noise. Here:

* Within every context (each color, and each shade if labelled) the material effect is a
  standardised mean difference (Cohen's d, pooled SD). A fragility feature has the same sign
  in every context and |d| >= threshold in each; its score is the weakest context's d.
* A color feature shows a consistent color effect within every material (and shade); a shade
  feature a consistent shade effect within every color x material. Both are listed apart and
  excluded from the fragility list.
* Effects carry bootstrap CIs that resample images, not tokens, when an image_id is given
  (tokens of one image are not independent), stratified by cell so the design stays
  balanced; with `require_ci` a fragility feature's CI must exclude 0.
* The reference's raw "activation delta" is reported beside d, and n per cell everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

MATERIAL_LEVELS = ("fragile", "rigid")


@dataclass
class FeatureEffect:
    """Effects of one latent. Scores are the weakest context's signed Cohen's d (0 if signs differ)."""

    feature: int
    kind: str  # "fragility", "color", "shade" or "none"
    prefix: int | None
    material_score: float
    material_score_ci: tuple[float, float]
    material_d: dict[str, float]
    delta: float  # raw mean fragile - rigid, averaged over contexts (the reference's number)
    delta_ci: tuple[float, float]
    color_score: float
    color_score_ci: tuple[float, float]
    shade_score: float | None
    cell_means: dict[str, float]


@dataclass
class DiscoveryResult:
    """Ranked features (by |material_score|) plus the design's levels and cell counts."""

    threshold: float
    unit: str  # "image" (cluster bootstrap) or "token"
    aggregate: str
    n_rows: int
    n_units: int
    n_dropped: int
    levels: dict[str, list[str]]
    cell_counts: dict[str, dict[str, int]]  # cell -> {"rows": .., "units": ..}
    features: list[FeatureEffect]
    fragility: list[int]
    color: list[int]
    shade: list[int]
    n_boot: int
    ci: float
    notes: list[str] = field(default_factory=list)


def _column(labels: Any, name: str, n: int) -> list | None:
    if isinstance(labels, pa.Table):
        return labels.column(name).to_pylist() if name in labels.column_names else None
    if name not in labels:
        return None
    col = labels[name]
    col = col.tolist() if hasattr(col, "tolist") else list(col)
    if len(col) != n:
        raise ValueError(f"label column {name!r} has {len(col)} rows but latents have {n}")
    return col


class _Design:
    """Row -> cell and row -> unit mapping for the color x shade x material design."""

    def __init__(self, labels: Any, n: int, material_levels: tuple[str, str]) -> None:
        color, material = _column(labels, "color", n), _column(labels, "material", n)
        if color is None or material is None:
            raise ValueError("labels need 'color' and 'material' columns")
        shade = _column(labels, "shade", n)
        if shade is not None and all(s is None for s in shade):
            shade = None
        image = _column(labels, "image_id", n)
        if image is not None and any(i is None for i in image):
            image = None  # partial image ids cannot define clusters; fall back to tokens
        keep = np.array([c is not None and m is not None and (shade is None or shade[i] is not None)
                         for i, (c, m) in enumerate(zip(color, material, strict=True))])  # fmt: skip
        self.keep, self.n_dropped = keep, int((~keep).sum())
        rows = np.flatnonzero(keep)
        if len(rows) == 0:
            raise ValueError(f"none of the {n} rows has both a color and a material label")
        mats = sorted({str(material[i]) for i in rows})
        if set(mats) != set(material_levels):
            raise ValueError(
                f"material levels found {mats}, expected exactly {list(material_levels)}"
            )
        colors = sorted({str(color[i]) for i in rows})
        if len(colors) != 2:
            raise ValueError(f"color must have exactly 2 levels, found {colors}")
        shades = sorted({str(shade[i]) for i in rows}) if shade is not None else [""]
        self.levels = {"color": colors, "material": list(material_levels), "shade": shades}
        if shade is None:
            self.levels.pop("shade")
        self.shaded = shade is not None and len(shades) > 1
        # cell index = ((color * n_shade) + shade) * 2 + material (0 = fragile, 1 = rigid)
        ci = {c: i for i, c in enumerate(colors)}
        si = {s: i for i, s in enumerate(shades)}
        mi = {m: i for i, m in enumerate(material_levels)}
        self.n_shade = len(shades)
        cell = np.full(n, -1)
        for i in rows:
            s = si[str(shade[i])] if shade is not None else 0
            cell[i] = (ci[str(color[i])] * self.n_shade + s) * 2 + mi[str(material[i])]
        self.cell = cell
        self.n_cells = 2 * self.n_shade * 2
        key = [(image[i], cell[i]) if image is not None else i for i in rows]
        self.unit_kind = "image" if image is not None else "token"
        uniq: dict[Any, int] = {}
        unit = np.full(n, -1)
        for i, kk in zip(rows, key, strict=True):
            unit[i] = uniq.setdefault(kk, len(uniq))
        self.unit = unit
        self.unit_cell = np.zeros(len(uniq), dtype=int)
        self.unit_cell[unit[rows]] = cell[rows]

    def cell_name(self, c: int) -> str:
        m, rest = c % 2, c // 2
        s, col = rest % self.n_shade, rest // self.n_shade
        parts = [self.levels["color"][col]] + ([self.levels["shade"][s]] if self.shaded else [])
        return "/".join(parts + [self.levels["material"][m]])


def _unit_stats(batches, design: _Design, aggregate: str, n_features: int):
    """Per-unit (count, sum, sum of squares) in float64 from (row_index, z) batches.

    aggregate="image" replaces each unit by its mean (count 1), so images weigh equally.
    """
    U = len(design.unit_cell)
    cnt = torch.zeros(U, dtype=torch.float64)
    s = torch.zeros(U, n_features, dtype=torch.float64)
    q = torch.zeros(U, n_features, dtype=torch.float64)
    for rows, z in batches:
        unit = torch.from_numpy(design.unit[rows.numpy()])
        ok = unit >= 0  # rows dropped for missing labels have unit -1
        unit, z = unit[ok], z[ok].double()
        cnt.index_add_(0, unit, torch.ones(len(unit), dtype=torch.float64))
        s.index_add_(0, unit, z)
        q.index_add_(0, unit, z * z)
    if aggregate == "image":
        s = s / cnt.clamp_min(1)[:, None]
        return torch.ones_like(cnt), s, s * s
    return cnt, s, q


def _effects(N: np.ndarray, S: np.ndarray, Q: np.ndarray, design: _Design) -> dict[str, np.ndarray]:
    """Cohen's d per context and signed weakest-context scores from cell stats.

    N: (..., cells); S, Q: (..., cells, F) with leading (bootstrap) dims broadcast. Cells
    reshape to a (color, shade, material) grid: axes -4, -3, -2 before the feature axis.
    """
    n = N[..., None]
    mean = S / np.maximum(n, 1)
    var = np.maximum(Q - n * mean**2, 0) / np.maximum(n - 1, 1)
    grid = N.shape[:-1] + (2, design.n_shade, 2)
    mean, var = mean.reshape(grid + mean.shape[-1:]), var.reshape(grid + mean.shape[-1:])
    n = n.reshape(grid + (1,))

    def contrast(axis: int, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        ma, va, na = (np.take(x, i, axis) for x in (mean, var, n))
        mb, vb, nb = (np.take(x, j, axis) for x in (mean, var, n))
        pooled = np.sqrt(((na - 1) * va + (nb - 1) * vb) / np.maximum(na + nb - 2, 1))
        return (ma - mb) / np.maximum(pooled, 1e-8), ma - mb

    def score(dd: np.ndarray) -> np.ndarray:
        # Same nonzero sign in every context, else 0; magnitude of the weakest context.
        flat = dd.reshape(dd.shape[:-3] + (-1, dd.shape[-1]))
        first = flat[..., 0, :]
        same = (np.sign(flat) == np.sign(first)[..., None, :]).all(-2) & (first != 0)
        return np.where(same, np.sign(first) * np.abs(flat).min(-2), 0.0)

    m_d, m_delta = contrast(-2, 0, 1)  # (..., color, shade, F): fragile - rigid
    c_d, _ = contrast(-4, 0, 1)  # (..., shade, material, F): color0 - color1
    out = {"material_d": m_d, "material_score": score(m_d),
           "delta": m_delta.mean((-3, -2)), "color_score": score(c_d)}  # fmt: skip
    if design.shaded:
        s_d, _ = contrast(-3, 0, design.n_shade - 1)  # first vs last shade, within color x material
        out["shade_score"] = score(s_d)
    return out


def _cell_stats(cnt, s, q, unit_cell, n_cells):
    idx = torch.from_numpy(unit_cell)
    N = torch.zeros(n_cells, dtype=torch.float64).index_add_(0, idx, cnt)
    S = torch.zeros(n_cells, s.shape[1], dtype=torch.float64).index_add_(0, idx, s)
    Q = torch.zeros(n_cells, s.shape[1], dtype=torch.float64).index_add_(0, idx, q)
    return N.numpy(), S.numpy(), Q.numpy()


def _bootstrap(cnt, s, q, design, n_boot, seed, chunk=50):
    """Bootstrap effects: resample units with replacement within each cell."""
    rng = np.random.default_rng(seed)
    cells = [np.flatnonzero(design.unit_cell == c) for c in range(design.n_cells)]
    outs: dict[str, list[np.ndarray]] = {}
    for b0 in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - b0)
        N = np.zeros((nb, design.n_cells))
        S = np.zeros((nb, design.n_cells, s.shape[1]))
        Q = np.zeros_like(S)
        for c, u in enumerate(cells):
            if len(u) == 0:
                continue
            w = torch.from_numpy(
                rng.multinomial(len(u), np.full(len(u), 1 / len(u)), size=nb).astype(np.float64)
            )
            N[:, c] = (w @ cnt[u]).numpy()
            S[:, c] = (w @ s[u]).numpy()
            Q[:, c] = (w @ q[u]).numpy()
        for k, v in _effects(N, S, Q, design).items():
            outs.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in outs.items()}


def discover(
    latents: torch.Tensor | np.ndarray,
    labels: dict[str, Any] | pa.Table,
    threshold: float = 0.5,
    top: int = 20,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    aggregate: str = "token",
    material_levels: tuple[str, str] = MATERIAL_LEVELS,
    prefixes: tuple[int, ...] | None = None,
    require_ci: bool = True,
) -> DiscoveryResult:
    """Find fragility features in `latents` (n x n_latents) labelled by color/material(/shade).

    labels: columns color, material, optional shade and image_id (dict or pyarrow Table).
    aggregate: "token" uses every token; "image" first averages the tokens of each image.
    prefixes: the SAE's Matryoshka prefixes, to report the coarsest prefix holding a feature.
    Returns features ranked by |material score|; `fragility` lists those passing the test.
    """
    z = torch.as_tensor(np.asarray(latents) if not isinstance(latents, torch.Tensor) else latents)
    if z.ndim != 2:
        raise ValueError(f"latents must be 2-D (n, n_latents), got shape {tuple(z.shape)}")
    design = _Design(labels, z.shape[0], material_levels)
    rows = torch.arange(z.shape[0])
    stats = _unit_stats([(rows, z.detach().cpu())], design, aggregate, z.shape[1])
    return _discover(
        stats, design, threshold, top, n_boot, ci, seed, aggregate, prefixes, require_ci
    )


@torch.no_grad()
def discover_store(sae: Any, store: Any, batch_size: int = 2048, **kwargs: Any) -> DiscoveryResult:
    """Encode every row of an ActivationStore with `sae` and run `discover` on the latents.

    Latents are reduced to per-unit sums while streaming, so memory is
    (units x n_latents), not (tokens x n_latents), when the store has image ids.
    kwargs are those of `discover` (threshold, top, n_boot, aggregate, ...).
    """
    if store.d != sae.config.d_in:
        raise ValueError(
            f"store {store.root} has d={store.d} but the SAE has d_in={sae.config.d_in}"
        )
    labels = store.load_metadata()
    design = _Design(labels, labels.num_rows, kwargs.pop("material_levels", MATERIAL_LEVELS))
    aggregate = kwargs.pop("aggregate", "token")
    kwargs.setdefault("prefixes", sae.config.prefixes)
    sae.eval()
    batches = (
        (ix, sae.encode(x))
        for x, ix in store.iter_minibatches(batch_size, shuffle=False, return_index=True)
    )
    stats = _unit_stats(batches, design, aggregate, sae.config.n_latents)
    opts = {
        "threshold": 0.5,
        "top": 20,
        "n_boot": 1000,
        "ci": 0.95,
        "seed": 0,
        "prefixes": None,
        "require_ci": True,
    }
    unknown = set(kwargs) - set(opts)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; allowed: {sorted(opts)}")
    opts.update(kwargs)
    return _discover(stats, design, aggregate=aggregate, **opts)


def _discover(
    stats, design, threshold, top, n_boot, ci, seed, aggregate, prefixes, require_ci
) -> DiscoveryResult:
    """Classification, bootstrap and ranking from per-unit stats (shared by both entry points)."""
    if aggregate not in ("token", "image"):
        raise ValueError(f"aggregate must be 'token' or 'image', got {aggregate!r}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if aggregate == "image" and design.unit_kind != "image":
        raise ValueError("aggregate='image' needs an image_id label column without nulls")
    cnt, s, q = stats
    N, S, Q = _cell_stats(cnt, s, q, design.unit_cell, design.n_cells)
    units_per_cell = np.bincount(design.unit_cell, minlength=design.n_cells)
    empty = [design.cell_name(c) for c in range(design.n_cells) if units_per_cell[c] < 2]
    if empty:
        raise ValueError(f"every cell needs >= 2 units; too few in {empty}")
    point = _effects(N, S, Q, design)
    ms, cs = point["material_score"], point["color_score"]
    ss = point.get("shade_score", np.zeros_like(ms))
    is_color, is_shade = np.abs(cs) >= threshold, np.abs(ss) >= threshold
    is_frag = (np.abs(ms) >= threshold) & ~is_color & ~is_shade
    ranked = np.argsort(-np.abs(ms), kind="stable")[:top]
    color_rank = [int(f) for f in np.argsort(-np.abs(cs), kind="stable") if is_color[f]][:top]
    shade_rank = [int(f) for f in np.argsort(-np.abs(ss), kind="stable") if is_shade[f]][:top]
    chosen = sorted(
        set(ranked.tolist())
        | set(np.flatnonzero(is_frag).tolist())
        | set(color_rank)
        | set(shade_rank)
    )
    boot = _bootstrap(cnt, s[:, chosen], q[:, chosen], design, n_boot, seed) if n_boot else {}
    alpha = (1 - ci) / 2

    def interval(key: str, j: int) -> tuple[float, float]:
        if not boot:
            return (float("nan"), float("nan"))
        lo, hi = np.quantile(boot[key][:, j], [alpha, 1 - alpha])
        return (float(lo), float(hi))

    effects: dict[int, FeatureEffect] = {}
    contexts = [design.cell_name(2 * c).rsplit("/", 1)[0] for c in range(design.n_cells // 2)]
    means = S / np.maximum(N[:, None], 1)
    fragility = []
    for j, f in enumerate(chosen):
        score_ci = interval("material_score", j)
        frag = bool(is_frag[f]) and (
            not require_ci or not boot or score_ci[0] > 0 or score_ci[1] < 0
        )
        kind = (
            "fragility" if frag else "color" if is_color[f] else "shade" if is_shade[f] else "none"
        )
        prefix = next((p for p in (prefixes or ()) if f < p), None)
        effects[f] = FeatureEffect(
            feature=int(f), kind=kind, prefix=prefix,
            material_score=float(ms[f]), material_score_ci=score_ci,
            material_d=dict(zip(contexts, point["material_d"][..., f].ravel().tolist(), strict=True)),
            delta=float(point["delta"][f]), delta_ci=interval("delta", j),
            color_score=float(cs[f]), color_score_ci=interval("color_score", j),
            shade_score=float(ss[f]) if design.shaded else None,
            cell_means={design.cell_name(c): float(means[c, f]) for c in range(design.n_cells)},
        )  # fmt: skip
        if frag:
            fragility.append(int(f))
    fragility.sort(key=lambda f: -abs(ms[f]))
    order = [int(f) for f in ranked] + [f for f in fragility if f not in ranked]
    order += [f for f in color_rank + shade_rank if f not in order]
    notes = []
    if design.n_dropped:
        notes.append(f"{design.n_dropped} rows without complete labels were dropped")
    if design.unit_kind == "token":
        notes.append(
            "no image_id: bootstrap resamples tokens, CIs are too narrow if tokens share images"
        )
    return DiscoveryResult(
        threshold=threshold, unit=design.unit_kind, aggregate=aggregate,
        n_rows=int(design.keep.sum()), n_units=len(design.unit_cell), n_dropped=design.n_dropped,
        levels=design.levels,
        cell_counts={design.cell_name(c): {"rows": int(np.bincount(design.cell[design.keep], minlength=design.n_cells)[c]),
                                           "units": int(units_per_cell[c])} for c in range(design.n_cells)},
        features=[effects[f] for f in order], fragility=fragility, color=color_rank, shade=shade_rank,
        n_boot=n_boot, ci=ci, notes=notes,
    )  # fmt: skip
