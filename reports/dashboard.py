"""SAE feature dashboard: what each discovered feature fires on, measured and shown in one page.

`build_dashboard` encodes every row of an activation store with the SAE (streaming) and, for the
features discovery ranks (fragility features first), gathers:

* the top-activating frames, re-rendered from the env seed and expert step each store row
  carries (the recipe of `rollouts.frames.render_labeled_frames`; the re-render's object labels
  must equal the row's), with the feature's activation over the image tokens as a heatmap
  (81 tokens = a 9 × 9 grid after pixel shuffle: token (r, c) covers pixels [42r, 42r + 42) ×
  [42c, 42c + 42) of a 384² frame, 3 × 3 patches of 14 px);
* the object check: the object's pixels come from the env's segmentation render; a token
  overlaps the object when ≥ 10% of its pixels are object. The share of the feature's
  activation mass (summed over its top frames) on those tokens, beside the share of tokens that
  overlap the object (what a feature blind to the object would get), says whether the feature
  looks at the object (where its pattern is) or elsewhere (gripper, table);
* its activation distribution per color × shade × material cell (per-image mean, as discovery
  uses images as units), its effect sizes with CIs from discovery, and where a run steered it,
  the paired effect from the run's summary.json.

`reports.dashboard_html.render_html` turns the result into one self-contained HTML page.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reports.dashboard_frames import IMAGE_SIZE, FrameRenderer, cell_overlap, heatmap_png

OVERLAP_MIN = 0.10  # a token overlaps the object when this share of its pixels is object
ON_OBJECT = 0.5  # activation-mass share on object tokens for "on the object"
SPREAD = 0.5  # a feature firing on this share of its top frames' tokens is "spread over the frame"


@dataclass
class TopFrame:
    """One top-activating frame of a feature."""

    image_id: int
    labels: dict[str, Any]
    max_act: float
    grid: np.ndarray | None  # g × g activations (None if the tokens do not form a square)
    png: bytes | None = None  # frame with the heatmap, None if it could not be re-rendered
    object_share: float | None = None  # this frame's activation mass on object tokens
    object_area: float | None = None  # share of tokens overlapping the object
    note: str = ""

    @property
    def coverage(self) -> float | None:
        """Share of this frame's tokens on which the feature fires."""
        return None if self.grid is None else float((self.grid > 0).mean())


@dataclass
class FeatureCard:
    """Everything the page shows about one feature."""

    feature: int
    effect: dict[str, Any]  # the discovery entry (kind, material_score, CIs, cell_means, ...)
    fire_rate: float
    frames: list[TopFrame] = field(default_factory=list)
    cells: dict[str, np.ndarray] = field(default_factory=dict)  # cell -> per-image mean activation
    object_share: float | None = None
    object_area: float | None = None
    steering: list[dict[str, Any]] = field(default_factory=list)

    @property
    def coverage(self) -> float | None:
        """Mean share of tokens the feature fires on in its top frames."""
        values = [fr.coverage for fr in self.frames if fr.coverage is not None]
        return float(np.mean(values)) if values else None

    @property
    def verdict(self) -> str:
        """Where the feature's top-frame activation mass lies.

        'on the object' (>= ON_OBJECT of it on object tokens), 'partly on the object' (at least
        twice the object's share of tokens), 'spread over the frame' (neither, and it fires on
        SPREAD or more of the tokens), 'off the object' (concentrated elsewhere), or 'not checked'.
        """
        if self.object_share is None:
            return "not checked"
        if self.object_share >= ON_OBJECT:
            return "on the object"
        if self.object_share >= 2 * (self.object_area or 0):
            return "partly on the object"
        return "spread over the frame" if (self.coverage or 0) >= SPREAD else "off the object"


@dataclass
class Dashboard:
    """The dashboard's data: sources, design, the index of features and the detailed cards."""

    store: str
    sae: str
    sae_config: dict[str, Any]
    discovery: dict[str, Any]
    discovery_source: str
    n_rows: int
    n_images: int
    grid: int | None
    fire_rate: np.ndarray
    cards: list[FeatureCard]
    run: str | None = None
    notes: list[str] = field(default_factory=list)


def resolve_sae_dir(path: str | Path) -> Path:
    """The SAE checkpoint folder: `path` itself or its `sae/` (a train-sae output folder)."""
    p = Path(path)
    if not (p / "config.json").is_file() and (p / "sae" / "config.json").is_file():
        return p / "sae"
    return p


def _image_layout(meta: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(row order grouped by image then token, image id per group, tokens per image)."""
    img = np.asarray(meta.column("image_id").to_numpy(zero_copy_only=False), dtype=np.float64)
    if np.isnan(img).any():
        raise ValueError("the store's rows need an image_id (write stores with `physteer collect`)")
    tok_col = "token_index" if "token_index" in meta.column_names else "token_position"
    tok = np.asarray(meta.column(tok_col).to_numpy(zero_copy_only=False), dtype=np.float64)
    tok = np.where(np.isnan(tok), np.arange(len(tok)), tok)
    order = np.lexsort((tok, img))
    ids, counts = np.unique(img[order], return_counts=True)
    if len(set(counts.tolist())) != 1:
        raise ValueError(
            f"images have different numbers of tokens ({sorted(set(counts.tolist()))}); cannot draw a token grid"
        )
    return order.reshape(len(ids), counts[0]), ids.astype(np.int64), int(counts[0])


def _encode(
    sae: Any, store: Any, panel: list[int], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fire rate of every latent and the panel latents' activations for every row (store order)."""
    fires = torch.zeros(sae.config.n_latents, dtype=torch.float64)
    z_panel = np.zeros((len(store), len(panel)), dtype=np.float32)
    cols = torch.tensor(panel, dtype=torch.long)
    with torch.no_grad():
        for x, ix in store.iter_minibatches(batch_size, shuffle=False, return_index=True):
            z = sae.encode(x)
            fires += (z > 0).sum(0).double()
            z_panel[ix.numpy()] = z[:, cols].numpy()
    return (fires / max(len(store), 1)).numpy(), z_panel


def _cell_name(levels: dict[str, list[str]], row: dict[str, Any]) -> str:
    shaded = len(levels.get("shade", [])) > 1
    parts = [row.get("color")] + ([row.get("shade")] if shaded else []) + [row.get("material")]
    return "/".join(str(p) for p in parts)


def load_discovery(path: str | Path, n_latents: int) -> dict[str, Any]:
    """A discovery.json, checked against the SAE's size (ValueError names the bad latent)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"discovery file {p} does not exist (run `physteer discover`)")
    data = json.loads(p.read_text())
    if "features" not in data or "levels" not in data:
        raise ValueError(f"{p} is not a discovery.json (no 'features' / 'levels')")
    bad = [e["feature"] for e in data["features"] if not 0 <= int(e["feature"]) < n_latents]
    if bad:
        raise ValueError(
            f"{p} names latents {bad[:5]} but the SAE has latents 0..{n_latents - 1}: another SAE's discovery?"
        )
    return data


def steering_effects(
    run_dir: str | Path, discovery: dict[str, Any], sae_dir: Path
) -> tuple[dict[int, list[dict]], list[str]]:
    """Per latent, the run's SAE conditions that set it and their paired effects (summary.json)."""
    from rollouts.conditions import parse_condition
    from rollouts.resources import FRAGILITY_TOP

    run = Path(run_dir)
    for name in ("summary.json", "config.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(
                f"{run / name} does not exist: give a finished run folder as --run"
            )
    summary, config = (
        json.loads((run / "summary.json").read_text()),
        json.loads((run / "config.json").read_text()),
    )
    notes = []
    if config.get("sae") and resolve_sae_dir(config["sae"]).resolve() != sae_dir.resolve():
        notes.append(
            f"The run steered the SAE {config['sae']}, not {sae_dir}: its latent numbers may mean other features."
        )
    fragility = discovery.get("fragility", [])
    if config.get("discovery") and Path(config["discovery"]).is_file():
        fragility = json.loads(Path(config["discovery"]).read_text()).get("fragility", [])
    elif config.get("discovery"):
        notes.append(
            f"The run's discovery file {config['discovery']} is gone; sae:fragility:* is read as this page's fragility list."
        )
    out: dict[int, list[dict]] = {}
    for res in summary.get("conditions", []):
        name = res.get("condition")
        try:
            cond = parse_condition(name)
        except (ValueError, TypeError):
            continue
        if name == summary.get("baseline") or cond.kind != "sae":
            continue
        latents = (
            [int(f) for f in fragility[:FRAGILITY_TOP]]
            if cond.feature == "fragility"
            else [int(cond.feature)]
        )
        entry = {"condition": name, "baseline": summary.get("baseline"), "n_features": len(latents),
                 "n_paired": res.get("n_paired"), **{k: res.get(k) for k in res if k.endswith(("_diff", "_p"))}}  # fmt: skip
        for f in latents:
            out.setdefault(f, []).append(entry)
    return out, notes


def build_dashboard(
    store_dir: str | Path,
    sae_dir: str | Path,
    discovery: str | Path | None = None,
    run: str | Path | None = None,
    max_panels: int = 24,
    top_frames: int = 6,
    n_boot: int = 200,
    batch_size: int = 1024,
    render_frames: bool = True,
) -> Dashboard:
    """Gather the dashboard's data (see the module docstring).

    Args:
        store_dir: an ActivationStore with image_id, token_index/token_position, color,
            material (shade) and episode (env seed) / step metadata.
        sae_dir: the SAE checkpoint folder (or a train-sae output folder).
        discovery: a discovery.json of this SAE on this store; None runs discovery here.
        run: a run folder whose summary.json holds the effects of SAE steering conditions.
        max_panels: features with a detailed card (fragility first, then by |d|).
        top_frames: top-activating frames per card.
        n_boot: bootstrap resamples when discovery runs here.
        batch_size: rows per SAE forward.
        render_frames: re-render the frames (False: heatmaps over a blank grid, object unchecked).

    Raises:
        FileNotFoundError / ValueError: a missing or mismatched input, before any encoding.
    """
    from sae import ActivationStore, MatryoshkaSAE
    from sae.discovery import discover_store
    from sae.discovery_report import result_to_dict

    if max_panels < 1 or top_frames < 1:
        raise ValueError(f"max_panels ({max_panels}) and top_frames ({top_frames}) must be >= 1")
    store = ActivationStore.open(store_dir)
    sae_path = resolve_sae_dir(sae_dir)
    sae = MatryoshkaSAE.from_pretrained(sae_path, expected_d_in=store.d).eval()
    meta = store.load_metadata()
    layout, image_ids, n_tok = _image_layout(meta)
    if discovery is not None:
        disc, source = load_discovery(discovery, sae.config.n_latents), str(discovery)
    else:
        disc = result_to_dict(discover_store(sae, store, n_boot=n_boot))
        source = f"computed here (threshold 0.5, {n_boot} bootstrap resamples of images)"
    steer, notes = steering_effects(run, disc, sae_path) if run is not None else ({}, [])
    by_id = {int(e["feature"]): e for e in disc["features"]}
    order = [int(f) for f in disc.get("fragility", [])] + sorted(
        by_id, key=lambda f: -abs(by_id[f]["material_score"] or 0)
    )
    panel = list(dict.fromkeys(f for f in order if f in by_id))[:max_panels]
    fire_rate, z = _encode(sae, store, panel, batch_size)
    first = layout[:, 0]  # one metadata row per image: its first token's
    columns = [
        c
        for c in ("color", "material", "shade", "shape", "episode", "step")
        if c in meta.column_names
    ]
    rows = dict(zip(first.tolist(), meta.select(columns).take(first).to_pylist(), strict=True))
    grid = math.isqrt(n_tok) if math.isqrt(n_tok) ** 2 == n_tok else None
    acts = z[layout]  # images × tokens × panel
    per_image_max, per_image_mean = acts.max(1), acts.mean(1)
    cells = [_cell_name(disc["levels"], rows[r]) for r in first]
    if render_frames and any(
        rows[r].get("episode") is None or rows[r].get("step") is None for r in first
    ):
        notes.append(
            "The store's rows carry no env seed / step: frames cannot be re-rendered, the object check is not done."
        )
        render_frames = False
    renderer = FrameRenderer() if render_frames else None
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, dict]] = {}
    cards = []
    try:
        for j, f in enumerate(panel):
            card = FeatureCard(f, by_id[f], float(fire_rate[f]), steering=steer.get(f, []))
            for cell in dict.fromkeys(sorted(cells)):
                card.cells[cell] = per_image_mean[[c == cell for c in cells], j]
            top = [
                i
                for i in np.argsort(-per_image_max[:, j], kind="stable")[:top_frames]
                if per_image_max[i, j] > 0
            ]
            vmax = float(per_image_max[top, j].max()) if top else 1.0
            for i in top:
                row = rows[first[i]]
                labels = {k: row.get(k) for k in ("color", "material", "shade", "shape")}
                g = acts[i, :, j].reshape(grid, grid) if grid else None
                frame = TopFrame(int(image_ids[i]), {**labels, "seed": row.get("episode"), "step": row.get("step")},
                                 float(per_image_max[i, j]), g)  # fmt: skip
                if renderer is not None and g is not None:
                    _fill_frame(frame, renderer, cache, row, labels, g, vmax)
                elif g is not None:  # no frame: the heatmap over grey, the object check not done
                    frame.png = heatmap_png(
                        np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8), g, vmax, None
                    )
                    frame.note = "frame not re-rendered"
                card.frames.append(frame)
            _pool_object_share(card)
            cards.append(card)
    finally:
        if renderer is not None:
            renderer.close()
    if grid is None:
        notes.append(
            f"{n_tok} tokens per image do not form a square grid: no heatmaps, the object check is not done."
        )
    return Dashboard(str(store_dir), str(sae_path), asdict(sae.config), disc, source, len(store), len(image_ids),
                     grid, fire_rate, cards, str(run) if run is not None else None, notes)  # fmt: skip


def _fill_frame(
    frame: TopFrame,
    renderer: FrameRenderer,
    cache: dict,
    row: dict,
    labels: dict,
    g: np.ndarray,
    vmax: float,
) -> None:
    key = (int(row["episode"]), int(row["step"]))
    if key not in cache:
        cache[key] = renderer.render(*key)
    img, mask, got = cache[key]
    wrong = {k: (v, got.get(k)) for k, v in labels.items() if v is not None and got.get(k) != v}
    if wrong:
        frame.note = f"re-render differs from the store (store, render): {wrong}; frame not shown"
        return
    overlap = cell_overlap(mask, g.shape[0]) >= OVERLAP_MIN
    frame.png = heatmap_png(img, g, vmax, mask)
    total = float(g.sum())
    frame.object_share = float(g[overlap].sum() / total) if total > 0 else None
    frame.object_area = float(overlap.mean())


def _pool_object_share(card: FeatureCard) -> None:
    """Activation mass on object tokens over all checked top frames, and their mean object area."""
    checked = [fr for fr in card.frames if fr.object_share is not None]
    if not checked:
        return
    mass = sum(float(fr.grid.sum()) for fr in checked)
    on = sum(fr.object_share * float(fr.grid.sum()) for fr in checked)
    card.object_share = on / mass if mass > 0 else None
    card.object_area = float(np.mean([fr.object_area for fr in checked]))
