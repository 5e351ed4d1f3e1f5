"""`physteer jsae-study`: is a Joint SAE's fragility feature shared across vision and language?

    physteer jsae-study --model runs/tiny-lang/vlm --alignment contrastive --weight 1

On one model's paired activations (studies.joint_sae.collect_pairs: a frame's image tokens
mean-pooled; its description's own tokens from a separate forward on a blank frame), every
candidate below is fitted on the same fit scenes and tested on the held-out ones with
sae.joint_features: a latent passes when it separates the materials within each color in
frames, moves with the material word of every description (held-out synonyms "delicate" /
"sturdy" included: they never occur in fitting pairs) and not with the color word, and moves
with the material word further than any latent of a null does (the effect-size floor: the
same Joint SAE on `null_shuffles` further shuffles of the pairs; the largest material move
among their latents that pass the other checks, 0 where none does). Beside
it, material retrieval: is each held-out frame's code nearer to its own held-out-synonym
description than to the one with the other material's word (chance 0.5)?

Candidates (one table):
- joint: the Joint SAE at the asked alignment and weight;
- baselines: two SAEs trained apart (weight 0) with latents matched after training
  (Hungarian on code correlation), and one Matryoshka SAE fitted on both sides' rows pooled;
- controls that should find nothing: the same Joint SAE on shuffled pairs (each frame with
  another scene's description; a shuffle other than the floor's null), on the random-weight
  model, and on `control_model` (the shipped tiny VLM, which never read a material word: no
  language side).

The tested Joint SAE is saved in saes/joint (the jsae-language / jsae-vision steering methods
read it). Refused before any work: an alignment weight < 0, a model whose vocabulary lacks the
descriptions' words (no language side to align), images < 16.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.language import HELD_OUT_MATERIAL, MATERIAL_WORDS, description
from sae.joint import ALIGNMENTS


@dataclass
class JSAEStudyConfig:
    """Settings of `physteer jsae-study` (saved in summary.json).

    Attributes:
        name, out: the run folder is out/name.
        model: the language-grounded VLM (a folder; "tiny" has no language side and is refused).
        control_model: the model without a language side, run as a control.
        layer: decoder layer read on both sides (None: 2/3 depth).
        images: labelled frames (one scene each).
        alignment, weight: the Joint SAE tested (weight > 0).
        steps, batch_size, lr, seed, held_out: the fit (sae.joint_trainer.JointTrainConfig).
        expansion: latents per unit of the residual width.
        min_auroc: the within-color AUROC a shared feature needs in frames.
        null_shuffles: Joint SAEs fitted on further shuffles of the pairs, whose largest material
            move among latents passing the other checks sets the effect-size floor (19: the
            shuffled-pairs control clears it by chance with probability ≤ 5%); 0: no floor.
    """

    name: str = "jsae-study"
    out: str = "runs"
    model: str = ""
    control_model: str = "tiny"
    layer: int | None = None
    images: int = 256
    alignment: str = "contrastive"
    weight: float = 1.0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    held_out: float = 0.25
    expansion: float = 4.0
    min_auroc: float = 0.9
    null_shuffles: int = 19
    vision_pool: str = "mean"  # what studies.joint_sae.collect_pairs reads

    @property
    def root(self) -> Path:
        return Path(self.out) / self.name

    def validate(self) -> None:
        """ValueError naming the first bad setting, before any work."""
        if not self.model:
            raise ValueError(
                "model='': give the language-grounded VLM's folder (physteer train-tiny --language)"
            )
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment={self.alignment!r}: choose from {list(ALIGNMENTS)}")
        if not self.weight >= 0:
            raise ValueError(f"weight={self.weight}: an alignment weight must be >= 0")
        for name, low in (("images", 16), ("null_shuffles", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: must be an int >= {low}")
        if not (0.5 < self.min_auroc <= 1 and self.expansion > 0):
            raise ValueError(
                f"min_auroc={self.min_auroc} must be in (0.5, 1], expansion={self.expansion} > 0"
            )
        self.train_config().validate()

    def train_config(self) -> Any:
        """The fit of every candidate (sae.joint_trainer.JointTrainConfig)."""
        from sae.joint_trainer import JointTrainConfig

        return JointTrainConfig(self.steps, self.batch_size, self.lr, self.seed, self.held_out)


def description_texts() -> list[dict[str, Any]]:
    """Every description: material × color × shape × word set (trained / held-out synonyms)."""
    from envs.objects import COLORS, SHAPES

    return [{"text": description(c, m, s, held_out=h), "material": m, "color": c, "shape": s,
             "word_set": "held-out" if h else "trained"}
            for h in (False, True) for m in MATERIAL_WORDS for c in COLORS for s in SHAPES]  # fmt: skip


def check_language_side(backend: Any, name: str) -> None:
    """ValueError when the model's vocabulary lacks a description word (no language side)."""
    vocab = backend.tokenizer.get_vocab()
    missing = [w for w in (*HELD_OUT_MATERIAL, "fragile", "rigid") if " " + w not in vocab]
    if missing:
        raise ValueError(f"model {name!r} has no language side for a Joint SAE study: its vocabulary "
                         f"lacks {missing}; train one with `physteer train-tiny --language`")  # fmt: skip


def _pairs(cfg: JSAEStudyConfig, backend: Any, layer: int, tag: str) -> dict[str, Any]:
    """Paired rows of one model (cached under root/tag) and its codes-to-be: language rows of
    every description."""
    from dataclasses import replace

    from studies.joint_sae import collect_pairs, language_rows

    sub = replace(cfg, name=f"{cfg.name}/{tag}")
    sub.root.mkdir(parents=True, exist_ok=True)
    pairs = collect_pairs(sub, backend, layer)
    texts = description_texts()
    rows = language_rows(backend, layer, [t["text"] for t in texts])
    pairs["text_rows"] = torch.stack([rows[t["text"]] for t in texts])
    return pairs


def _shared(zv: np.ndarray, codes: np.ndarray, labels: list[dict], cfg: JSAEStudyConfig,
            floor: float = 0.0) -> dict:  # fmt: skip
    """sae.joint_features.shared_features on held-out frames `labels` and every description."""
    from sae.joint_features import shared_features

    materials = np.array([lab["material"] for lab in labels])
    colors = np.array([lab["color"] for lab in labels])
    return shared_features(zv, materials, colors, codes, description_texts(),
                           min_auroc=cfg.min_auroc, min_material_move=floor)  # fmt: skip


def _evaluate(zv: np.ndarray, codes: np.ndarray, labels: list[dict], cfg: JSAEStudyConfig,
              floor: float = 0.0) -> dict:  # fmt: skip
    """`_shared`, and material retrieval on the held-out synonyms' descriptions."""
    from sae.joint_features import material_retrieval

    texts = description_texts()
    index = {(t["word_set"], t["material"], t["color"], t["shape"]): i for i, t in enumerate(texts)}
    swap = {"fragile": "rigid", "rigid": "fragile"}

    def text_of(lab: dict, material: str) -> int:
        return index[("held-out", material, lab["color"], lab.get("shape", "object"))]

    own = np.array([text_of(lab, lab["material"]) for lab in labels])
    swapped = np.array([text_of(lab, swap[lab["material"]]) for lab in labels])
    return {**_shared(zv, codes, labels, cfg, floor),
            "material_retrieval": material_retrieval(zv, own, swapped, codes)}  # fmt: skip


def run_jsae_study(cfg: JSAEStudyConfig, console: Any = None) -> dict[str, Any]:
    """Pairs of the model and the controls, every candidate fitted and tested; summary.json."""
    from rich.console import Console

    from agents.backend import VLMBackend, load_vlm
    from agents.vlm_agent import default_tap_layer
    from sae.joint import JointConfig
    from sae.joint_trainer import (
        match_latents,
        split_groups,
        train_joint,
        train_pooled,
    )
    from storage import write_json

    cfg.validate()
    console = console or Console()
    backend = load_vlm(cfg.model, "cpu", "float32")
    check_language_side(backend, cfg.model)  # before any frame is rendered
    layer = default_tap_layer(backend.n_layers) if cfg.layer is None else cfg.layer
    train = cfg.train_config()
    with torch.random.fork_rng():  # the same architecture and vocabulary, random weights
        torch.manual_seed(cfg.seed)
        random = VLMBackend(
            type(backend.model)(backend.model.config).eval(), backend.processor, name="random"
        )
    sources = {"model": backend, "random-weights": random,
               "no-language-side": load_vlm(cfg.control_model, "cpu", "float32")}  # fmt: skip
    pairs = {tag: _pairs(cfg, b, layer, tag) for tag, b in sources.items()}
    labels = pairs["model"]["labels"]
    fit, held = split_groups(pairs["model"]["groups"], cfg.held_out, cfg.seed)
    held_frames = [labels[g] for g in pairs["model"]["groups"][held]]

    def joint_codes(p: dict[str, Any], weight: float, shuffle: int = 0) -> tuple[Any, Any]:
        xv, xl = p["vision"], p["language"]
        if shuffle:  # each frame with another scene's description: pairs that mean nothing
            order = np.random.default_rng([cfg.seed, 4 + shuffle]).permutation(len(xl))
            xl = xl[torch.as_tensor(order)]
        config = JointConfig.default(
            xv.shape[1], xl.shape[1], cfg.expansion, alignment=cfg.alignment, weight=weight
        )
        joint, _ = train_joint(xv, xl, p["groups"], config, train)
        with torch.no_grad():
            return (
                joint.vision.encode(xv[held]).numpy(),
                joint.language.encode(p["text_rows"]),
                joint,
            )

    candidates: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    zv, zl, joint = joint_codes(pairs["model"], cfg.weight)
    joint.save(
        cfg.root / "saes" / "joint", {"model": cfg.model, "layer": layer}
    )  # for jsae-* steering
    candidates[f"joint ({cfg.alignment} × {cfg.weight:g})"] = ("method", zv, zl.numpy())
    p = pairs["model"]
    zv0, zl0, joint0 = joint_codes(p, 0.0)
    with torch.no_grad():
        match = match_latents(
            joint0.vision.encode(p["vision"][fit]), joint0.language.encode(p["language"][fit])
        )
    candidates["two SAEs, matched after training"] = ("baseline", zv0, zl0.numpy()[:, match])
    sae_config = JointConfig.default(
        p["vision"].shape[1], p["language"].shape[1], cfg.expansion
    ).vision
    pooled = train_pooled(p["vision"], p["language"], p["groups"], sae_config, train)
    with torch.no_grad():
        candidates["one Matryoshka SAE on both sides"] = (
            "baseline",
            pooled.encode(p["vision"][held]).numpy(),
            pooled.encode(p["text_rows"]).numpy(),
        )
    zv, zl, _ = joint_codes(pairs["model"], cfg.weight, shuffle=1)
    candidates["control: shuffled pairs"] = ("control", zv, zl.numpy())
    for tag in ("random-weights", "no-language-side"):
        zv, zl, _ = joint_codes(pairs[tag], cfg.weight)
        candidates[f"control: {tag}"] = ("control", zv, zl.numpy())  # fmt: skip

    # The effect-size floor, from nulls that are not candidates: null_shuffles more shuffles.
    # The control is one more shuffle, exchangeable with them, so it beats their largest passing
    # move with probability at most 1 / (null_shuffles + 1).
    null_moves = []
    for k in range(cfg.null_shuffles):
        zv, zl, _ = joint_codes(pairs["model"], cfg.weight, shuffle=2 + k)
        null = _shared(zv, zl.numpy(), held_frames, cfg)  # the floor needs no retrieval
        # (at floor 0 the effect check only asks for a move, which the texts check implies)
        null_moves.append(max((r["material_move"] for r in null["latents"]
                               if r["latent"] in null["passing"]), default=0.0))  # fmt: skip
        console.print(f"null {k + 1}/{cfg.null_shuffles} (shuffled pairs): largest passing "
                      f"material move {null_moves[-1]:.3g}")  # fmt: skip
    floor = max(null_moves, default=0.0)
    console.print(
        f"effect-size floor ({cfg.null_shuffles} more shuffles of the pairs): material move > {floor:.3g}"
    )
    rows = []
    for name, (role, zv, codes) in candidates.items():
        result = _evaluate(zv, codes, held_frames, cfg, floor)
        best = result["latents"][0] if result["latents"] else {}
        rows.append({"candidate": name, "role": role, "passing": result["passing"],
                     "n_tested": result["n_tested"], "best": best,
                     "material_retrieval": result["material_retrieval"]})  # fmt: skip
        r = result["material_retrieval"]
        console.print(f"{name}: {len(result['passing'])} shared fragility feature(s) of {result['n_tested']}; "
                      f"material retrieval (held-out synonyms) {r['retrieval']:.2f} [{r['low']:.2f}, {r['high']:.2f}] (chance {r['chance']:.2f})")  # fmt: skip
    doc = {"config": asdict(cfg), "layer": layer, "fit_scenes": len(fit), "held_scenes": len(held),
           "texts": description_texts(), "candidates": rows,
           "effect_floor": {"material_move": floor, "null_shuffles": cfg.null_shuffles,
                            "null_largest_moves": null_moves}}  # fmt: skip
    write_json(cfg.root / "summary.json", doc)
    return doc
