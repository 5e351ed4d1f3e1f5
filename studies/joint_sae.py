"""`physteer train-jsae`: Joint SAEs on paired vision and language activations of one model,
every alignment at every weight (0 included) side by side, on held-out scenes.

    physteer train-jsae --images 256 --alignments cosine,contrastive,cross --weights 0,0.1,1

1. Pairs (cached in the folder): `images` labelled frames (rollouts.frames); the vision side is
   the frame's image tokens at `layer` under the fragility question, mean-pooled per frame
   (`vision_pool` "mean", as the paper pools) or one row per image token ("token", each paired
   with its frame's description); the language side is the frame's description ("a fragile red
   cube") read at the description's own tokens only, mean-pooled, from a SEPARATE forward whose
   frame is blank (mid-gray): nothing of the scene's pixels reaches it, and no chat-template
   token is in its pool (the pitfalls of the public JSAE code: ../shared/reference/).
2. One Joint SAE per (alignment, weight), the same seed, the same fit and held-out scenes
   (sae.joint_trainer): per side FVE, L0, dead and one-sided latents; matched against
   mismatched code cosine, retrieval against chance, usage entropy.
3. summary.json (last) and a terminal table.

On the shipped tiny VLM the descriptions' material words were never in its training data, so
this measures what alignment does to a model with no language side of fragility: the baseline
the language-grounded model is to be compared with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae.joint import ALIGNMENTS

COLLECT_SEED = 2_300_000
DESCRIBE = "Describe the object."


@dataclass
class JointSAEStudyConfig:
    """Settings of `physteer train-jsae` (saved in summary.json).

    Attributes:
        name: folder name under `out`.
        out: parent folder.
        model: the VLM ("tiny", a local folder or a cached hub id).
        layer: decoder layer read on both sides (None: 2/3 depth).
        images: labelled frames (one scene each).
        vision_pool: "mean" (one row per frame) or "token" (one row per image token).
        alignments: alignment terms to compare (sae.joint.ALIGNMENTS).
        weights: each alignment's weights (0: two independent SAEs, the ablation).
        steps, batch_size, lr, seed, held_out: sae.joint_trainer.JointTrainConfig.
        expansion: latents per unit of the wider side's width.
        k: active latents per row (None: the scaled reference).
    """

    name: str = "jsae"
    out: str = "runs"
    model: str = "tiny"
    layer: int | None = None
    images: int = 256
    vision_pool: str = "mean"
    alignments: list[str] = field(default_factory=lambda: list(ALIGNMENTS))
    weights: list[float] = field(default_factory=lambda: [0.0, 0.1, 1.0])
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    held_out: float = 0.25
    expansion: float = 4.0
    k: int | None = None

    @property
    def root(self) -> Path:
        return Path(self.out) / self.name

    def validate(self) -> None:
        """ValueError naming the first bad setting, before any work."""

        if isinstance(self.images, bool) or not isinstance(self.images, int) or self.images < 16:
            raise ValueError(f"images={self.images!r}: must be an int >= 16")
        if self.vision_pool not in ("mean", "token"):
            raise ValueError(f"vision_pool={self.vision_pool!r}: choose 'mean' or 'token'")
        bad = [a for a in self.alignments if a not in ALIGNMENTS]
        if bad or not self.alignments:
            raise ValueError(f"alignments={self.alignments}: choose from {list(ALIGNMENTS)}")
        if not self.weights or any(not (w >= 0) for w in self.weights):
            raise ValueError(f"weights={self.weights}: give weights >= 0 (0: no alignment)")
        if not self.expansion > 0 or (self.k is not None and self.k < 1):
            raise ValueError(f"expansion={self.expansion} must be > 0 and k={self.k} >= 1")
        self.train_config().validate()

    def train_config(self) -> Any:
        from sae.joint_trainer import JointTrainConfig

        return JointTrainConfig(self.steps, self.batch_size, self.lr, self.seed, self.held_out)


def description(label: dict[str, Any]) -> str:
    """The scene's description in words: "a fragile red cube" (envs.language)."""
    from envs.language import description as words

    return words(label["color"], label["material"], label.get("shape", "object"))


def token_span(ids: list[int], part: list[int]) -> list[int]:
    """Positions of the last occurrence of the id sequence `part` in `ids`."""
    for start in range(len(ids) - len(part), -1, -1):
        if ids[start : start + len(part)] == part:
            return list(range(start, start + len(part)))
    raise ValueError("the description's tokens were not found in its prompt")


@torch.no_grad()
def language_rows(backend: Any, layer: int, texts: list[str]) -> dict[str, torch.Tensor]:
    """Each text → the mean of layer `layer`'s output over the text's own tokens, from a forward
    with a blank frame (no scene pixel reaches it)."""
    blank = np.full((384, 384, 3), 128, np.uint8)
    tok, out = backend.tokenizer, {}
    seen: list[torch.Tensor] = []
    hook = backend.layers[layer].register_forward_hook(
        lambda m, a, o: seen.append((o if torch.is_tensor(o) else o[0]).detach())
    )
    try:
        for text in sorted(set(texts)):
            inputs = backend.prepare([blank], text)
            ids = inputs["input_ids"][0].tolist()
            for variant in (" " + text, text):  # the word-piece form inside the prompt
                part = tok(variant, add_special_tokens=False)["input_ids"]
                try:
                    span = token_span(ids, part)
                    break
                except ValueError:
                    continue
            else:
                raise ValueError(f"description {text!r}: its tokens are not in the prompt")
            seen.clear()
            backend.model(**inputs)
            out[text] = seen[-1][0, span].float().mean(0).cpu()
    finally:
        hook.remove()
    return out


def collect_pairs(cfg: JointSAEStudyConfig, backend: Any, layer: int) -> dict[str, Any]:
    """(vision rows, language rows, groups, labels), cached in the folder as pairs.safetensors."""
    from agents.taps import ResidualTap
    from rollouts.frames import render_labeled_frames
    from storage import write_json, write_safetensors

    path = cfg.root / "pairs.safetensors"
    if path.is_file() and (cfg.root / "pairs.json").is_file():
        from safetensors.torch import load_file

        t = load_file(str(path))
        meta = json.loads((cfg.root / "pairs.json").read_text())
        return {
            "vision": t["vision"],
            "language": t["language"],
            "groups": t["groups"].numpy(),
            **meta,
        }
    images, labels = render_labeled_frames(cfg.images, COLLECT_SEED)
    texts = [description(lab) for lab in labels]
    vision, groups = [], []
    with ResidualTap(layer, include_last=False).attach(backend) as tap:
        for start, batch in backend.batches(images, 16):
            backend.prob_yes(batch)
            acts = tap.latest_batch.float().cpu()  # B × tokens × d
            for i, frame_acts in enumerate(acts):
                rows = frame_acts.mean(0, keepdim=True) if cfg.vision_pool == "mean" else frame_acts
                vision.append(rows)
                groups += [start + i] * len(rows)
    lang = language_rows(backend, layer, texts)
    language = torch.stack([lang[texts[g]] for g in groups])
    vision_t, groups_t = torch.cat(vision), torch.as_tensor(groups)
    write_safetensors(path, {"vision": vision_t, "language": language, "groups": groups_t})
    meta = {"descriptions": sorted(set(texts)), "layer": layer, "labels": labels}
    write_json(cfg.root / "pairs.json", meta)
    return {"vision": vision_t, "language": language, "groups": groups_t.numpy(), **meta}


def run_joint_sae_study(cfg: JointSAEStudyConfig, console: Any = None) -> dict[str, Any]:
    """Pairs, then one Joint SAE per (alignment, weight); writes summary.json; returns it."""
    from rich.console import Console

    from agents.backend import load_vlm
    from agents.vlm_agent import default_tap_layer
    from sae.joint import JointConfig
    from sae.joint_trainer import train_joint
    from storage import write_json

    cfg.validate()
    console = console or Console()
    backend = load_vlm(cfg.model, "cpu", "float32")
    layer = default_tap_layer(backend.n_layers) if cfg.layer is None else cfg.layer
    cfg.root.mkdir(parents=True, exist_ok=True)
    pairs = collect_pairs(cfg, backend, layer)
    xv, xl = pairs["vision"], pairs["language"]
    console.print(f"{len(xv)} pairs ({cfg.vision_pool} vision rows of {cfg.images} frames; "
                  f"{len(pairs['descriptions'])} descriptions) at layer {layer}")  # fmt: skip
    runs = []
    # weight 0 is the same model whatever the alignment: two independent SAEs, run once
    grid = ([("none", 0.0)] if 0 in cfg.weights else []) + [
        (a, float(w)) for a in cfg.alignments for w in cfg.weights if w > 0
    ]
    for alignment, weight in grid:
        kind = cfg.alignments[0] if alignment == "none" else alignment  # unused at weight 0
        config = JointConfig.default(
            xv.shape[1], xl.shape[1], cfg.expansion, cfg.k, alignment=kind, weight=weight
        )
        joint, result = train_joint(xv, xl, pairs["groups"], config, cfg.train_config())
        joint.save(
            cfg.root / "saes" / f"{alignment}-{weight:g}", {"model": cfg.model, "layer": layer}
        )
        runs.append({"alignment": alignment, "weight": weight, **result["metrics"],
                     "fit_rows": result["fit_rows"], "held_rows": result["held_rows"]})  # fmt: skip
        console.print(f"{alignment} × {weight:g}: retrieval {runs[-1]['retrieval']:.2f} (chance "
                      f"{runs[-1]['chance']:.2f}), cosine gap {runs[-1]['cosine_gap']:+.2f}")  # fmt: skip
    doc = {
        "config": asdict(cfg),
        "layer": layer,
        "pairs": len(xv),
        "descriptions": pairs["descriptions"],
        "runs": runs,
    }
    write_json(cfg.root / "summary.json", doc)
    return doc
