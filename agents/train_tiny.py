"""Train the embedded tiny VLM on fresh env renders (`physteer train-tiny`).

The model learns to answer two questions about a frame with one word:
"Is the object fragile? Answer yes or no." → " yes" / " no" and
"What color is the object? Answer red or blue." → " red" / " blue" (each followed by
<end_of_utterance>). Frames come from the `render` callable (`rollouts.frames.render_labeled_frames` from the CLI): balanced over
color × material × shade × shape with random pose, lighting and arm configuration. Each image is
encoded once per step and both questions are answered from the same image features.

Evaluation uses renders from env seeds disjoint from the training seeds, per
(color, material, shade) cell, and a linear probe (logistic regression, stratified 5-fold CV)
for fragility on the layer-L image-token activations (mean over image tokens) of the trained
model and of the same architecture with random weights.

Augmentation: horizontal flips, and zooms of 1–`max_zoom`× on the object for a share
`zoom_prob` of the images, so the material pattern is also seen at coarser scales than the
14-px patches; evaluation always uses unzoomed frames.

Auxiliary loss (`aux_weight`): a training-only linear head scores each of the 81 image tokens,
log-sum-exp pooled, with a BCE loss on fragility. Without it the language model sat at exactly
chance on fragility for 5+ epochs although a probe on the random-init vision tokens already
separates the materials (std-pooled 0.94): the plateau is in learning to read a few object
tokens. The head is discarded; the saved model is a plain Idefics3 checkpoint.

Deterministic under `seed` at a fixed thread count (torch seeds, a seeded data order and seeded
flips; the renders are deterministic in their env seeds).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.backend import VLMBackend
from agents.language_tasks import LanguageItem, draw_item
from agents.taps import ResidualTap
from agents.tiny_model import (
    COLOR_QUESTION,
    FRAGILE_QUESTION,
    build_tiny_model,
    count_parameters,
    save_tiny,
)
from agents.train_language import LanguageSequences, language_eval, language_loss
from agents.train_tiny_config import TrainConfig
from storage import atomic_dir, atomic_path, write_json

CELL_KEYS = ("color", "material", "shade")


Renderer = Callable[..., tuple[np.ndarray, list[dict[str, Any]]]]


def load_frames(
    n: int,
    seed: int,
    cache_dir: str | Path | None,
    render: Renderer,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render (or load cached) labelled frames from env seeds seed..seed+n-1 with
    `render(n, seed=seed, image_size=384)` (rollouts.frames.render_labeled_frames)."""
    path = Path(cache_dir) / f"frames_{n}_{seed}.npz" if cache_dir else None
    if path is not None and path.is_file():
        data = np.load(path, allow_pickle=False)
        return data["images"], json.loads(str(data["labels"]))
    t0 = time.time()
    images, labels = render(n, seed=seed, image_size=384)
    log(f"rendered {n} frames from seed {seed} in {time.time() - t0:.0f}s")
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=images, labels=json.dumps(labels))
    return images, labels


def pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 B×H×W×3 → the processor's pixel_values (B×1×3×H×W, (x/255 − 0.5)/0.5)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    return ((x - 0.5) / 0.5).unsqueeze(1)


def object_centers(images: np.ndarray) -> np.ndarray:
    """(N × 2) pixel centre (x, y) of the saturated (red/blue) object, NaN when none is visible.

    The scene is grey/beige apart from the object, so saturation locates it.
    """
    centers = np.full((len(images), 2), np.nan)
    for i, img in enumerate(images):
        x = img.astype(np.int16)
        hi, lo = x.max(-1), x.min(-1)
        mask = ((hi - lo) * 4 > hi) & (hi > 40)  # saturation > 0.25
        ys, xs = np.nonzero(mask)
        if len(xs) >= 20:
            centers[i] = (np.median(xs), np.median(ys))
    return centers


def zoom_on(image: np.ndarray, center: np.ndarray, zoom: float) -> np.ndarray:
    """Crop a (size/zoom)² window around `center` (kept inside the frame), resize to size²."""
    from PIL import Image

    size = image.shape[0]
    crop = int(round(size / zoom))
    if crop >= size or np.isnan(center).any():
        return image
    x0 = int(np.clip(round(center[0] - crop / 2), 0, size - crop))
    y0 = int(np.clip(round(center[1] - crop / 2), 0, size - crop))
    window = Image.fromarray(np.ascontiguousarray(image[y0 : y0 + crop, x0 : x0 + crop]))
    return np.asarray(window.resize((size, size), Image.BILINEAR))


class _Prompts:
    """Token ids of the two training sequences: prompt + answer + <end_of_utterance>."""

    def __init__(self, backend: VLMBackend) -> None:
        tok = backend.tokenizer
        self.eou = tok.convert_tokens_to_ids("<end_of_utterance>")
        self.questions = {}
        for key, question, answers in (
            ("fragile", FRAGILE_QUESTION, (" yes", " no")),
            ("color", COLOR_QUESTION, (" red", " blue")),
        ):
            # The processor expands <image> into the 81 image tokens and their delimiters.
            blank = np.zeros((384, 384, 3), dtype=np.uint8)
            ids = backend.prepare([blank], question)["input_ids"][0].tolist()
            answer_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
            if any(len(a) != 1 for a in answer_ids):
                raise ValueError(f"answers {answers} must be single tokens of the tokenizer")
            self.questions[key] = (torch.tensor(ids), [a[0] for a in answer_ids])


def _batch_loss(
    model: torch.nn.Module,
    prompts: _Prompts,
    pix: torch.Tensor,
    labels: list[dict[str, Any]],
    aux_head: torch.nn.Module | None = None,
    aux_weight: float = 0.0,
    language: tuple[LanguageSequences, LanguageItem, float] | None = None,
) -> torch.Tensor:
    """Cross-entropy on answer + <end_of_utterance> for both questions, one image encoding.

    With `language` (sequences, the batch's item, weight), adds weight × the item's answer loss
    from the same image features (agents.train_language).

    With `aux_head`, adds `aux_weight` × a multiple-instance fragility loss on the image tokens
    (a linear score per token, log-sum-exp pooled over the 81 tokens of an image): a training-only
    shortcut for gradients into the vision tower; the head is not part of the saved model.
    """
    inner = model.model
    feats = inner.get_image_features(pix, return_dict=True).pooler_output
    feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats
    loss = torch.zeros(())
    if aux_head is not None and aux_weight > 0:
        scores = aux_head(feats.view(len(labels), -1, feats.shape[-1])).squeeze(-1)
        pooled = torch.logsumexp(scores, dim=1) - math.log(scores.shape[1])
        target = torch.tensor([float(lab["material"] == "fragile") for lab in labels])
        loss = loss + aux_weight * torch.nn.functional.binary_cross_entropy_with_logits(
            pooled, target
        )
    for key, (prompt_ids, (pos_id, neg_id)) in prompts.questions.items():
        positive = [
            lab["material"] == "fragile" if key == "fragile" else lab["color"] == "red"
            for lab in labels
        ]
        answers = torch.tensor([pos_id if p else neg_id for p in positive])
        batch = len(labels)
        ids = torch.cat(
            [
                prompt_ids.expand(batch, -1),
                answers[:, None],
                torch.full((batch, 1), prompts.eou),
            ],
            dim=1,
        )
        embeds = inner.get_input_embeddings()(ids)
        embeds = inner.inputs_merger(input_ids=ids, inputs_embeds=embeds, image_hidden_states=feats)
        logits = model(inputs_embeds=embeds, use_cache=False).logits
        n = prompt_ids.numel()
        pred = logits[:, n - 1 : n + 1].reshape(-1, logits.shape[-1])
        target = ids[:, n : n + 2].reshape(-1)
        loss = loss + torch.nn.functional.cross_entropy(pred, target)
    if language is not None:
        seqs, item, weight = language
        loss = loss + weight * language_loss(model, seqs, feats, item, labels)
    return loss


def evaluate(
    backend: VLMBackend, images: np.ndarray, labels: list[dict[str, Any]], batch_size: int = 16
) -> dict[str, Any]:
    """Fragility and color accuracy overall and per (color, material, shade) cell."""
    p_yes = backend.batched_answers(images, FRAGILE_QUESTION, ("yes", "no"), batch_size)[:, 0]
    p_red = backend.batched_answers(images, COLOR_QUESTION, ("red", "blue"), batch_size)[:, 0]
    frag_ok = (p_yes >= 0.5) == np.array([lab["material"] == "fragile" for lab in labels])
    color_ok = (p_red >= 0.5) == np.array([lab["color"] == "red" for lab in labels])
    cells: dict[str, dict[str, float]] = {}
    keys = ["/".join(lab[k] for k in CELL_KEYS) for lab in labels]
    for cell in sorted(set(keys)):
        idx = np.array([k == cell for k in keys])
        cells[cell] = {
            "n": int(idx.sum()),
            "fragility_acc": float(frag_ok[idx].mean()),
            "color_acc": float(color_ok[idx].mean()),
        }
    return {
        "fragility_acc": float(frag_ok.mean()),
        "color_acc": float(color_ok.mean()),
        "min_cell_fragility_acc": min(c["fragility_acc"] for c in cells.values()),
        "min_cell_color_acc": min(c["color_acc"] for c in cells.values()),
        "cells": cells,
    }


def pooled_activations(
    backend: VLMBackend, images: np.ndarray, layer: int, batch_size: int = 16
) -> np.ndarray:
    """(N × d) layer-`layer` residual stream, mean over image tokens, fragility prompt."""
    tap = ResidualTap(layer, include_last=False).attach(backend)
    rows = []
    try:
        for _, batch in backend.batches(images, batch_size):
            backend.forward(backend.prepare(batch, FRAGILE_QUESTION))
            rows.append(tap.pooled().cpu().numpy())
    finally:
        tap.remove()
    return np.concatenate(rows)


def probe_accuracy(features: np.ndarray, target: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Stratified 5-fold CV accuracy of a standardised logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_score(probe, features, target, cv=folds)
    return {"mean": float(scores.mean()), "std": float(scores.std()), "folds": scores.tolist()}


def probe_report(
    trained: VLMBackend,
    random: VLMBackend,
    images: np.ndarray,
    labels: list[dict[str, Any]],
    layer: int,
) -> dict[str, Any]:
    """Fragility (and color, shade) probes on trained vs random-weight activations."""
    out: dict[str, Any] = {"layer": layer, "n": len(labels)}
    feats = {
        "trained": pooled_activations(trained, images, layer),
        "random": pooled_activations(random, images, layer),
    }
    for factor, positive in (("material", "fragile"), ("color", "red"), ("shade", "pale")):
        y = np.array([lab[factor] == positive for lab in labels], dtype=int)
        out[factor] = {name: probe_accuracy(x, y) for name, x in feats.items()}
    return out


def train_tiny(
    cfg: TrainConfig, render: Renderer, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, evaluate, probe and save the tiny model; returns the report (also saved as JSON).

    `render(n, seed=..., image_size=...)` gives labelled frames: rollouts.frames.render_labeled_frames
    (passed in because agents/ may not import the closed loop in rollouts/)."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    images, labels = load_frames(cfg.n_train, cfg.train_seed, cfg.cache_dir, render, log)
    ev_images, ev_labels = load_frames(cfg.n_eval, cfg.eval_seed, cfg.cache_dir, render, log)
    overlap = {lab["seed"] for lab in labels} & {lab["seed"] for lab in ev_labels}
    if overlap:
        raise ValueError(f"evaluation frames reuse training seeds {sorted(overlap)[:5]}")
    t_render = time.time() - t_start

    model, processor = build_tiny_model(seed=cfg.seed, language=cfg.language)
    random_model = build_tiny_model(seed=cfg.seed, language=cfg.language)[0]
    random_backend = VLMBackend(random_model, processor, name="random")
    backend = VLMBackend(model, processor, name="tiny")
    prompts = _Prompts(backend)
    seqs = LanguageSequences(backend) if cfg.language else None
    # the language items' own generator: the default recipe's draws stay as they were
    lang_gen = np.random.default_rng([cfg.seed, 31])
    log(f"tiny model: {count_parameters(model):,} parameters")

    steps_per_epoch = math.ceil(cfg.n_train / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    aux_head = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    params = list(model.parameters()) + (list(aux_head.parameters()) if cfg.aux_weight > 0 else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = np.random.default_rng(cfg.seed)
    centers = object_centers(images)
    history = []
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        order = gen.permutation(cfg.n_train)
        running = []
        for start in range(0, cfg.n_train, cfg.batch_size):
            idx = np.sort(order[start : start + cfg.batch_size])
            batch = images[idx].copy()
            flips = gen.random(len(idx)) < cfg.flip_prob
            zooms = np.where(
                gen.random(len(idx)) < cfg.zoom_prob, gen.uniform(1.0, cfg.max_zoom, len(idx)), 1.0
            )
            for j, i in enumerate(idx):
                batch[j] = zoom_on(batch[j], centers[i], zooms[j])
            batch = np.where(flips[:, None, None, None], batch[:, :, ::-1], batch)
            language = None if seqs is None else (seqs, draw_item(lang_gen), cfg.language_weight)
            loss = _batch_loss(
                model, prompts, pixels(batch), [labels[i] for i in idx], aux_head, cfg.aux_weight,
                language,
            )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running.append(loss.item())
            step += 1
            if step % 25 == 0:
                log(
                    f"epoch {epoch} step {step}/{total} loss {np.mean(running[-25:]):.4f} "
                    f"({time.time() - t_start:.0f}s)"
                )
        model.eval()
        quick = evaluate(backend, ev_images[:64], ev_labels[:64])
        model.train()
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(running)),
                "val_fragility_acc": quick["fragility_acc"],
                "val_color_acc": quick["color_acc"],
            }
        )
        log(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f} held-out(64) fragility "
            f"{quick['fragility_acc']:.3f} color {quick['color_acc']:.3f} ({time.time() - t_start:.0f}s)"
        )
    model.eval()
    t_train = time.time() - t_start - t_render

    report: dict[str, Any] = {
        "config": asdict(cfg),
        "parameters": count_parameters(model),
        "train_seeds": [cfg.train_seed, cfg.train_seed + cfg.n_train - 1],
        "eval_seeds": [cfg.eval_seed, cfg.eval_seed + cfg.n_eval - 1],
        "render_seconds": round(t_render, 1),
        "train_seconds": round(t_train, 1),
        "history": history,
        "eval": evaluate(backend, ev_images, ev_labels),
        "eval_random_weights": evaluate(random_backend, ev_images, ev_labels),
        "probe": probe_report(backend, random_backend, ev_images, ev_labels, cfg.probe_layer),
    }
    if cfg.language:
        report["language"] = language_eval(backend, ev_images, ev_labels)
        report["language_random_weights"] = language_eval(random_backend, ev_images, ev_labels)
    report |= {
        "torch": torch.__version__,
    }
    with atomic_dir(
        cfg.out_dir
    ) as tmp:  # the checkpoint and its report replace the old pair together
        save_tiny(model, processor, tmp)
        write_json(tmp / "training_report.json", report)
    out = Path(cfg.out_dir)
    log(f"saved to {out} ({time.time() - t_start:.0f}s total)")
    return report
