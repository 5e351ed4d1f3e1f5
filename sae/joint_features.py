"""Is a joint feature shared? The tests of one latent index read on both sides of a paired SAE.

A latent i of a Joint SAE (or of any pair of SAEs whose latents are matched, or of one SAE read
on both modalities) is a **shared fragility feature** when, on data its SAE was not fitted on:

1. frames: its vision-side code separates fragile from rigid objects within each color
   (AUROC ≥ `min_auroc` in both colors, the same direction);
2. texts: swapping the material word of a description ("a fragile red cube" → "a rigid red
   cube") moves its language-side code in that same direction for every color, shape and word
   set, the held-out synonyms ("delicate" / "sturdy") included;
3. specificity: swapping the color word ("red" → "blue") moves it less than `max_color_share`
   of the material swap's mean movement;
4. effect size: its mean material move exceeds `min_material_move` (a floor a study takes from
   a null, e.g. studies.jsae_study's Joint SAEs on shuffled pairs: without it, a latent that
   carries the material on both sides of meaningless pairs passes 1–3).

Beside the per-latent tests, `material_retrieval`: how often a held-out frame's vision code is
nearer (cosine) to its own description's language code than to the same description with the
material word swapped (chance 0.5), on the held-out synonyms' descriptions: a retrieval that
color and shape words cannot win.

    report = shared_features(zv, materials, colors, text_codes, texts)
    report["passing"]          # latent indices that pass every test
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The per-latent checks, in the order of the module docstring.
CHECKS = ("frames", "texts", "held_out_synonyms", "color_swap", "effect")


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `positive` (0.5 when a class is missing)."""
    from sklearn.metrics import roc_auc_score

    if positive.all() or not positive.any():
        return 0.5
    return float(roc_auc_score(positive, scores))


def text_pairs(texts: list[dict[str, Any]], vary: str) -> list[tuple[int, int]]:
    """Index pairs of texts equal in everything but `vary` ("material" or "color"); the first
    of each pair is the fragile (or red) one. Each text: material, color, shape, word_set."""
    first = {"material": "fragile", "color": "red"}[vary]
    keys = [k for k in ("material", "color", "shape", "word_set") if k != vary]
    index = {tuple(t[k] for k in keys): i for i, t in enumerate(texts) if t[vary] == first}
    pairs = []
    for j, t in enumerate(texts):
        i = index.get(tuple(t[k] for k in keys))
        if t[vary] != first and i is not None:
            pairs.append((i, j))
    return pairs


def shared_features(
    zv: np.ndarray,
    materials: np.ndarray,
    colors: np.ndarray,
    text_codes: np.ndarray,
    texts: list[dict[str, Any]],
    min_auroc: float = 0.9,
    max_color_share: float = 0.5,
    min_material_move: float = 0.0,
) -> dict[str, Any]:
    """The tests of the module docstring for every latent active on both sides.

    Args:
        zv: (frames × latents) vision-side codes of held-out frames.
        materials, colors: each frame's material and color.
        text_codes: (texts × latents) language-side codes of descriptions.
        texts: per description, its material, color, shape and word_set ("trained" | "held-out").
        min_auroc: the within-color separation a latent needs in frames.
        max_color_share: largest color-swap movement, as a share of the material swap's.
        min_material_move: the mean material move a latent must exceed (0: any move).

    Returns:
        {"latents": per tested latent its figures, "passing": indices passing all tests,
         "n_tested": latents active on both sides}.
    """
    if len(zv) != len(materials) or len(zv) != len(colors):
        raise ValueError(
            f"{len(zv)} frames but {len(materials)} materials and {len(colors)} colors"
        )
    if not min_material_move >= 0:
        raise ValueError(f"min_material_move={min_material_move}: must be >= 0")
    if len(text_codes) != len(texts):
        raise ValueError(f"{len(text_codes)} text codes but {len(texts)} texts")
    fragile = np.asarray(materials) == "fragile"
    material_pairs, color_pairs = text_pairs(texts, "material"), text_pairs(texts, "color")
    if not material_pairs or not color_pairs:
        raise ValueError("the texts hold no material swap or no color swap to test")
    both = np.flatnonzero((zv > 0).any(0) & (text_codes > 0).any(0))
    rows, passing = [], []
    for i in both:
        aucs = [_auroc(zv[colors == c, i], fragile[colors == c]) for c in sorted(set(colors))]
        sign = 1.0 if np.mean(aucs) >= 0.5 else -1.0
        oriented = [a if sign > 0 else 1 - a for a in aucs]
        moves = np.array([text_codes[a, i] - text_codes[b, i] for a, b in material_pairs])
        color_moves = np.array([text_codes[a, i] - text_codes[b, i] for a, b in color_pairs])
        held = np.array([texts[a]["word_set"] == "held-out" for a, _ in material_pairs])
        material_size = float(np.abs(moves).mean())
        color_share = (
            float(np.abs(color_moves).mean() / material_size) if material_size > 0 else np.inf
        )
        ok = {
            "frames": min(oriented) >= min_auroc,
            "texts": bool((np.sign(moves) == sign).all()),
            "held_out_synonyms": bool((np.sign(moves[held]) == sign).all())
            if held.any()
            else False,
            "color_swap": color_share <= max_color_share,
            "effect": material_size > min_material_move,
        }
        rows.append({"latent": int(i), "direction": "fragile" if sign > 0 else "rigid",
                     "min_auroc": float(min(oriented)), "material_move": material_size,
                     "color_share": color_share, **ok})  # fmt: skip
        if all(ok.values()):
            passing.append(int(i))
    rows.sort(key=lambda r: (-sum(r[k] for k in CHECKS),
                             -r["min_auroc"]))  # fmt: skip
    return {"latents": rows, "passing": passing, "n_tested": len(both)}


def material_retrieval(
    zv: np.ndarray, own_text: np.ndarray, swapped_text: np.ndarray, text_codes: np.ndarray
) -> dict[str, float]:
    """Share of frames whose vision code is nearer (cosine) to their own description's language
    code than to the same description with the material word swapped (`own_text[f]`,
    `swapped_text[f]` index `text_codes`): the material, not color or shape, decides; chance
    0.5. A two-sided Wilson interval and a one-sided binomial test against chance. Frames that
    share a description share its two codes, so the interval counts frames, not descriptions:
    the per-latent swap tests of `shared_features` are the stricter check."""
    from scipy.stats import binomtest

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    v, t = unit(np.asarray(zv, float)), unit(np.asarray(text_codes, float))
    own = (v * t[np.asarray(own_text)]).sum(1)
    other = (v * t[np.asarray(swapped_text)]).sum(1)
    hits, n = int((own > other).sum()), len(v)  # a tie (identical codes) is no hit
    ci = binomtest(hits, n, 0.5).proportion_ci(confidence_level=0.95, method="wilson")
    p = binomtest(hits, n, 0.5, alternative="greater").pvalue
    return {"retrieval": hits / n, "low": float(ci.low), "high": float(ci.high), "chance": 0.5,
            "n": n, "ties": int((own == other).sum()), "p_above_chance": float(p)}  # fmt: skip
