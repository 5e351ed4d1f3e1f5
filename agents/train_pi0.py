"""Flow-matching training of a tiny π0 on demonstrations (agents.vla_data.Demonstrations).

The model is transformers' PI0ForConditionalGeneration, trained end to end (vision tower, VLM
and action expert) with its own loss: a chunk of the expert's clean actions, normalised by the
demonstrations' statistics and zero-padded to `max_action_dim`, is mixed with noise at a time
drawn from Beta(1.5, 1) (PI0's training schedule) and the expert predicts the velocity back.
Frames go through PI0Backend's own preprocessing, so the model trains on the pixels it will
see at run time. With `material_weight` > 0 the VLM is also taught the object's material (the
tiny VLM's recipe reads it from the pattern by answering a fragility question; PI0 has no text
head, so a training-only linear head reads the mean of the image tokens at the last VLM layer
any action attends to, with a logistic loss beside the flow's; the head is not saved).
Deterministic: the initial weights, the batches and the flow-matching draws are functions of
the seed.

    backend, history = train_pi0(demos, TrainPI0Config(steps=3000))
    save_pi0(backend, "runs/train-pi0/ckpt")
"""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.hooks import output_tensor
from agents.pi0_folder import ENV_ACTION_SIZE, STATS_FILE, PI0Stats
from agents.pi0_model import PI0Backend, load_pi0
from storage import atomic_dir, write_json

MIN_STD = 0.05  # statistics floor: a dimension that hardly varies is not blown up by 1/std
#: Learning-rate schedules after the linear warm-up: "constant", or "cosine" decay to zero over
#: the run's steps (the flow's velocity field is fitted finely at small steps at the end).
SCHEDULES = ("cosine", "constant")


def learning_rate(cfg: TrainPI0Config, step: int) -> float:
    """The learning rate of 0-based `step`: linear warm-up, then cfg.schedule."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.schedule == "constant" or step < cfg.warmup_steps:
        return cfg.lr * warm
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainPI0Config:
    """Model sizes and optimisation of the tiny π0 (all recorded in its training report)."""

    hidden: int = 128
    expert_hidden: int = 64
    layers: int = 3
    image_size: int = 128
    patch: int = 16
    chunk: int = 8
    denoise_steps: int = 5
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "cosine"
    seed: int = 0
    material_weight: float = 0.0

    def validate(self) -> None:
        """ValueError naming a bad setting."""
        for name in ("hidden", "expert_hidden", "layers", "image_size", "patch", "chunk", "denoise_steps",
                     "steps", "batch_size"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        if self.image_size % self.patch:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch={self.patch}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: choose one of {list(SCHEDULES)}")
        if not (math.isfinite(float(self.material_weight)) and self.material_weight >= 0):
            raise ValueError(f"material_weight={self.material_weight!r}: must be a number >= 0")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            raise ValueError(
                f"lr={self.lr} > 0, weight_decay={self.weight_decay} >= 0, warmup_steps >= 0"
            )


def demo_stats(demos: Any) -> PI0Stats:
    """State and action mean / std of the demonstrations (std floored at MIN_STD)."""
    states = np.asarray(demos.states, dtype=np.float64)
    actions = np.asarray(demos.labels, dtype=np.float64).reshape(-1, ENV_ACTION_SIZE)
    return PI0Stats(states.mean(0), np.maximum(states.std(0), MIN_STD), actions.mean(0),
                    np.maximum(actions.std(0), MIN_STD))  # fmt: skip


def new_pi0(cfg: TrainPI0Config, stats: PI0Stats) -> PI0Backend:
    """A random-weight π0 of cfg's sizes with `stats` (built through agents.pi0_build)."""
    from agents.pi0_build import build_pi0

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_pi0(Path(tmp) / "pi0", seed=cfg.seed, stats=stats, hidden=cfg.hidden,
                           expert_hidden=cfg.expert_hidden, layers=cfg.layers, image_size=cfg.image_size,
                           patch=cfg.patch, chunk=cfg.chunk, action_dim=ENV_ACTION_SIZE, steps=cfg.denoise_steps)  # fmt: skip
        return load_pi0(folder)


def chunk_targets(backend: PI0Backend, labels: np.ndarray) -> torch.Tensor:
    """(B × chunk × max_action_dim) normalised expert chunks, zero-padded."""
    s = backend.stats
    lab = (
        np.asarray(labels, dtype=np.float32)[:, : backend.chunk_size] - s.actions_mean
    ) / s.actions_std
    out = torch.zeros(len(lab), backend.chunk_size, backend.action_dim)
    out[:, : lab.shape[1], :ENV_ACTION_SIZE] = torch.from_numpy(lab.astype(np.float32))
    return out


def batch_inputs(
    backend: PI0Backend, prompts: dict[str, dict], texts: list[str], pixels: torch.Tensor
) -> dict:
    """PI0Backend.prepare's inputs for rows whose pixels and prompts were prepared once
    (prompts of different lengths left-padded as prepare pads them)."""
    ids = [prompts[t]["input_ids"][0] for t in texts]
    width = max(len(i) for i in ids)
    pad = backend.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, i in enumerate(ids):
        input_ids[r, width - len(i) :], mask[r, width - len(i) :] = i, 1
    d = backend.device
    return {"input_ids": input_ids.to(d), "attention_mask": mask.to(d), "pixel_values": pixels.to(d, backend.dtype),
            "pixel_attention_mask": torch.ones(len(ids), 1, dtype=torch.bool, device=d)}  # fmt: skip


def instruction_prompts(backend: PI0Backend, demos: Any) -> dict[str, dict]:
    """Each distinct instruction of `demos` prepared once (batch_inputs joins them to pixels)."""
    return {
        t: backend.prepare(np.zeros((1, 8, 8, 3), np.uint8), t)
        for t in set(map(str, demos.instructions))
    }


def batch_loss(backend: PI0Backend, prompts: dict[str, dict], demos: Any, labels: np.ndarray,
               rows: np.ndarray, pixels: torch.Tensor, material: MaterialHead | None = None) -> torch.Tensor:  # fmt: skip
    """PI0's flow-matching loss on `rows` of `demos` (their preprocessed `pixels`); with a
    `material` head, plus its weighted material loss on the same forward."""
    inputs = batch_inputs(backend, prompts, [str(demos.instructions[i]) for i in rows], pixels)
    targets = chunk_targets(backend, labels[rows]).to(backend.device, backend.dtype)
    reading = (
        nullcontext()
        if material is None
        else material.reading(inputs["input_ids"] == backend.image_token_id)
    )
    with reading:
        flow = backend.model(
            state=backend.state_input(demos.states[rows]), actions=targets, **inputs
        ).loss
    if material is None:
        return flow
    fragile = torch.as_tensor(np.asarray(demos.materials)[rows] == "fragile", dtype=torch.float32)
    return flow + material.weight * material.loss(fragile.to(backend.device))


class MaterialHead:
    """The training-only material reader (module docstring): a linear logit of fragile from the
    mean image token at the output of `backend.layers[-1]`, captured during the model's forward.
    `last_loss`: the material loss of the last batch (the training history reports it)."""

    def __init__(self, backend: PI0Backend, weight: float, seed: int) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.linear = torch.nn.Linear(backend.hidden_size, 1).to(backend.device)
        self.layer, self.weight = backend.layers[-1], float(weight)
        self.pooled: torch.Tensor | None = None
        self.last_loss = float("nan")

    def parameters(self) -> Any:
        """The head's own parameters (the model's are the optimiser's already)."""
        return self.linear.parameters()

    @contextmanager
    def reading(self, image_mask: torch.Tensor) -> Any:
        """While open, the layer's forward stores the mean of its image-token outputs."""

        def hook(_module: Any, _args: Any, out: Any) -> None:
            h = output_tensor(out)
            m = image_mask[..., None].to(h.dtype)
            self.pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)

        handle = self.layer.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def loss(self, fragile: torch.Tensor) -> torch.Tensor:
        """Logistic loss of the last captured forward against the true material."""
        logit = self.linear(self.pooled.float()).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, fragile)
        self.last_loss = float(loss.detach())
        return loss


def train_pi0(demos: Any, cfg: TrainPI0Config, backend: PI0Backend | None = None,
              progress: Any = None) -> tuple[PI0Backend, list[dict[str, float]]]:  # fmt: skip
    """Train (a new π0 from cfg, or `backend` further) on every row of `demos`; returns the model
    (eval mode) and the loss every 1/20 of the steps. `progress(step)` after each step."""
    cfg.validate()
    labels = np.asarray(demos.labels)
    if labels.ndim != 3 or labels.shape[1] < cfg.chunk:
        raise ValueError(
            f"labels of shape {labels.shape}: need (N, >= {cfg.chunk}, 4) action chunks"
        )
    backend = backend or new_pi0(cfg, demo_stats(demos))
    model = backend.model.train()
    pixels = torch.cat([backend.pixel_values(np.asarray(demos.frames[i : i + 256]))
                        for i in range(0, len(labels), 256)])  # fmt: skip  # once: the run-time preprocessing
    prompts = instruction_prompts(backend, demos)
    material = MaterialHead(backend, cfg.material_weight, cfg.seed) if cfg.material_weight else None
    params = [*model.parameters(), *(material.parameters() if material else ())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    draw = np.random.default_rng([cfg.seed, 11])
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, 12]).generate_state(1)[0]))
    history, window, material_window = [], [], []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        rows = np.sort(
            draw.choice(len(labels), size=min(cfg.batch_size, len(labels)), replace=False)
        )
        loss = batch_loss(backend, prompts, demos, labels, rows, pixels[rows], material)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        window.append(float(loss.detach()))
        if material is not None:
            material_window.append(material.last_loss)
        if (step + 1) % max(1, cfg.steps // 20) == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, "loss": float(np.mean(window))})
            if material is not None:
                history[-1]["material_loss"] = float(np.mean(material_window))
            window, material_window = [], []
        if progress is not None:
            progress(step + 1)
    model.eval()
    return backend, history


@torch.no_grad()
def flow_loss(backend: PI0Backend, demos: Any, n_rows: int | None = None, seed: int = 0,
              batch_size: int = 64) -> float:  # fmt: skip
    """The flow-matching loss over the first `n_rows` rows of `demos` (None: all; eval mode; the
    noise and times drawn from `seed`, so two checkpoints are compared on the same draws): the
    held-out figure of a training run."""
    labels = np.asarray(demos.labels)[: n_rows or len(demos)]
    prompts = instruction_prompts(backend, demos)
    backend.model.eval()
    total = 0.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(labels), batch_size):
            rows = np.arange(start, min(start + batch_size, len(labels)))
            pixels = backend.pixel_values(np.asarray(demos.frames[start : rows[-1] + 1]))
            total += float(batch_loss(backend, prompts, demos, labels, rows, pixels)) * len(rows)
    return total / len(labels)


def save_pi0(backend: PI0Backend, out_dir: str | Path, report: dict[str, Any] | None = None,
             n_action_steps: int | None = None, noise_scale: float | None = None,
             blend: float | None = None) -> Path:  # fmt: skip
    """The checkpoint folder (weights, tokenizer, statistics, training_report.json), atomically;
    `n_action_steps`: the actions an agent executes per decision by default (None: the chunk);
    `noise_scale`: its default starting-noise scale (None: 1, π0's own sampling); `blend`: its
    default share of the previous decision in each overlapping action (None: 0)."""
    with atomic_dir(out_dir) as tmp:
        backend.model.save_pretrained(tmp, safe_serialization=True)
        backend.tokenizer.save_pretrained(tmp)
        execute = {} if n_action_steps is None else {"n_action_steps": int(n_action_steps)}
        execute |= {} if noise_scale is None else {"noise_scale": float(noise_scale)}
        execute |= {} if blend is None else {"blend": float(blend)}
        write_json(Path(tmp) / STATS_FILE, {"processor_class": "PI0Processor", "chunk_size": backend.chunk_size,
                                            "max_state_dim": backend.state_dim, **execute, **backend.stats.to_dict()})  # fmt: skip
        if report is not None:
            write_json(Path(tmp) / "training_report.json", report)
    return Path(out_dir)
