"""Behaviour cloning of the tiny VLA from demonstrations (`physteer train-vla`).

Starts from a trained VLM (default the shipped tiny VLM), adds action / state / slot tokens
(agents.vla_model.build_vla) and fine-tunes the text decoder, its embeddings and lm_head on
`agents.vla_data.Demonstrations`:

- action loss: at each slot `<slot_hH_D>`, cross-entropy of the full-vocabulary softmax
  (OpenVLA's loss) against a discretised Gaussian of width `label_sigma` bins around the expert's
  clean action (see ActionTokenizer.soft_targets), for every chunk step;
- `<slot_frag>` answers " yes" / " no" for the true material (P(fragile) in the same forward);
- co-training (`cotrain_weight`): the plain VLM prompt (frame + one question) answers the
  fragility question (" yes" / " no") and three handling questions whose answers are the
  handling words (gently / firmly, slowly / quickly, low / high; the expert's gentle profile
  for fragile objects, firm for rigid), so the model still answers the yes/no question and the
  handling words' embeddings are tied to what the model sees. Co-training uses only rows where
  the material can be seen (gripper open, not holding).

The vision tower and connector stay frozen (as SmolVLA keeps its VLM's vision encoder): the
image features that encode fragility are computed once per frame and cached, which makes an
epoch a text-model pass, and keeps the image-token pathway the SAEs were trained on. The
held-out split is by episode; figures go to `training_report.json` beside the checkpoint.
Deterministic under `seed` at a fixed thread count.
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.backend import VLMBackend
from agents.tiny_model import FRAGILE_QUESTION
from agents.train_vla_config import TrainVLAConfig
from agents.vla_data import Demonstrations
from agents.vla_features import folder_features, image_features
from agents.vla_model import PromptBuilder, VLASpec, build_vla, load_vla, save_vla
from storage import write_json

#: Packages whose versions a checkpoint's numbers depend on (recorded in training_report.json).
VERSIONED = (
    "torch",
    "transformers",
    "tokenizers",
    "numpy",
    "pybullet",
    "safetensors",
    "pillow",
    "gymnasium",
)

#: Co-trained plain-prompt questions: (question, answer if fragile, answer if rigid).
COTRAIN_QUESTIONS = (
    (FRAGILE_QUESTION, " yes", " no"),
    ("Hold the object gently or firmly?", " gently", " firmly"),
    ("Move it slowly or quickly?", " slowly", " quickly"),
    ("Release it low or high?", " low", " high"),
)


def split_episodes(
    episodes: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, held-out) over rows, holding out whole episodes.

    Each episode's side is drawn from its own id and `seed`, so the split of an episode does not
    change when data are added (DAgger rounds): nothing trained on is held out later.
    """
    ids = np.unique(episodes)
    if len(ids) < 2:
        raise ValueError(f"{len(ids)} episode(s): need >= 2 for a held-out split")
    draws = np.array([np.random.default_rng([seed, int(i)]).random() for i in ids])
    held = ids[draws < fraction]
    if len(held) == 0 or len(held) == len(ids):  # tiny sets: keep one episode on each side
        held = ids[[int(np.argmin(draws))]]
    mask = np.isin(episodes, held)
    return ~mask, mask


def _forward(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, feats: torch.Tensor, keep: int
) -> torch.Tensor:
    """Logits (B × keep × V) of the last `keep` positions, image features spliced in."""
    inner = model.model
    embeds = inner.get_input_embeddings()(ids)
    embeds = inner.inputs_merger(
        input_ids=ids, inputs_embeds=embeds, image_hidden_states=feats.reshape(-1, feats.shape[-1])
    )
    return model(
        inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=keep
    ).logits


class _Batches:
    """Token ids and targets of every row, built once."""

    def __init__(
        self, backend: VLMBackend, spec: VLASpec, demos: Demonstrations, cfg: TrainVLAConfig
    ) -> None:
        tok = backend.tokenizer
        self.builder = PromptBuilder(backend, spec, demos.frames.shape[1:])
        texts = [
            self.builder.text(str(i), "", s, float(e))
            for i, s, e in zip(demos.instructions, demos.states, demos.efforts, strict=True)
        ]
        self.ids, self.mask = self.builder.ids(texts)
        labels = demos.labels
        if labels.shape[1] < spec.horizon:
            raise ValueError(
                f"labels hold {labels.shape[1]} steps; the model predicts {spec.horizon}"
            )
        self.labels = labels[:, : spec.horizon]
        self.targets = torch.from_numpy(spec.action.soft_targets(self.labels, cfg.label_sigma))
        self.fragile = torch.from_numpy(demos.materials == "fragile")
        yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " no"))
        self.frag_ids = torch.where(self.fragile, yes, no)
        self.slot_table = spec.action.token_ids(tok).repeat(spec.horizon, 1)  # (H·D) × K
        self.visible = (demos.efforts <= 0) & (demos.states[:, 16] < 0.5)
        self.held = (demos.efforts > 0) & (demos.states[:, 16] >= 0.5)
        blank = np.zeros(demos.frames.shape[1:], dtype=np.uint8)
        self.questions = []
        for question, pos, neg in COTRAIN_QUESTIONS:
            q_ids = backend.prepare([blank], question)["input_ids"][0]
            answers = [tok(a, add_special_tokens=False)["input_ids"] for a in (pos, neg)]
            if any(len(a) != 1 or a[0] == tok.unk_token_id for a in answers):
                raise ValueError(f"answers {pos!r}/{neg!r} must be single known tokens")
            self.questions.append((q_ids, answers[0][0], answers[1][0]))

    def action_logp(self, logits: torch.Tensor, spec: VLASpec) -> torch.Tensor:
        """(B × H × D × K) log-probabilities (full-vocabulary softmax) of each slot's bins."""
        logp = torch.log_softmax(logits[:, 1:].float(), dim=-1)
        table = self.slot_table.unsqueeze(0).expand(len(logp), -1, -1)
        return logp.gather(2, table).view(len(logp), spec.horizon, spec.action.n_dims, -1)


def _held_pools(data: _Batches, train_rows: np.ndarray) -> dict[bool, np.ndarray]:
    """The held-object training rows of each material (keyed by "is fragile")."""
    held = train_rows[data.held[train_rows]]
    fragile = data.fragile.numpy()[held]
    return {True: held[fragile], False: held[~fragile]}


def _swap_held_frames(
    data: _Batches,
    idx: np.ndarray,
    pools: dict[bool, np.ndarray],
    share: float,
    gen: np.random.Generator,
) -> np.ndarray:
    """Row of the image features each batch row trains on: its own, except for a `share` of
    held-object rows, which get a held row of the other material (`pools`: `_held_pools`; see
    TrainVLAConfig.holding_swap)."""
    source = idx.copy()
    if share <= 0:
        return source
    fragile = data.fragile.numpy()
    for j, row in enumerate(idx):
        other = pools[not fragile[row]]
        if data.held[row] and len(other) and gen.random() < share:
            source[j] = other[gen.integers(len(other))]
    return source


def _loss(
    model, spec, data: _Batches, feats, idx, cfg, q_rows, q_index, source=None
) -> tuple[torch.Tensor, dict]:
    source = idx if source is None else source
    logits = _forward(model, data.ids[idx], data.mask[idx], feats[source], spec.n_slots)
    act = -(data.targets[idx] * data.action_logp(logits, spec)).sum(-1).mean()
    own = source == idx  # <slot_frag> reads the frame: rows given another's frame do not train it
    if bool(own.all()):
        frag = torch.nn.functional.cross_entropy(logits[:, 0].float(), data.frag_ids[idx])
    elif bool(own.any()):
        frag = torch.nn.functional.cross_entropy(logits[own, 0].float(), data.frag_ids[idx][own])
    else:  # every row of the batch got another's frame
        frag = logits.new_zeros(())
    loss = act + cfg.frag_weight * frag
    parts = {"action": act.item(), "frag_slot": frag.item()}
    if cfg.cotrain_weight > 0 and len(q_rows):
        q_ids, pos, neg = data.questions[q_index]
        ids = q_ids.unsqueeze(0).expand(len(q_rows), -1)
        q_logits = _forward(model, ids, torch.ones_like(ids), feats[q_rows], 1)[:, -1]
        target = torch.where(data.fragile[q_rows], pos, neg)
        co = torch.nn.functional.cross_entropy(q_logits.float(), target)
        loss = loss + cfg.cotrain_weight * co
        parts["cotrain"] = co.item()
    return loss, parts


@torch.no_grad()
def evaluate_vla(
    backend: VLMBackend, spec: VLASpec, demos: Demonstrations, rows: np.ndarray, batch: int = 32
) -> dict[str, Any]:
    """Held-out figures through the agent's own inference path (frames → processor → model)."""
    builder = PromptBuilder(backend, spec, demos.frames.shape[1:])
    exp, arg, bins, p_frag = [], [], [], []
    for start in range(0, len(rows), batch):
        r = rows[start : start + batch]
        texts = [
            builder.text(str(demos.instructions[i]), "", demos.states[i], float(demos.efforts[i]))
            for i in r
        ]
        out = backend.forward(builder.inputs(np.ascontiguousarray(demos.frames[r]), texts))
        b, frag = builder.read_slots(out.logits)
        exp.append(spec.action.decode_logits(b, "expectation"))
        arg.append(spec.action.decode_logits(b, "argmax"))
        bins.append(b.argmax(-1).numpy())
        p_frag.append(backend.answer_probs(frag, ("yes", "no"))[:, 0].numpy())
    exp, arg, bins, p_frag = map(np.concatenate, (exp, arg, bins, p_frag))
    labels = demos.labels[rows, : spec.horizon]
    true_bins = spec.action.encode(labels)
    fragile = demos.materials[rows] == "fragile"
    train_mean = labels.reshape(-1, 4).mean(0)
    report: dict[str, Any] = {
        "rows": int(len(rows)),
        "episodes": int(len(np.unique(demos.episodes[rows]))),
    }
    for d, name in enumerate(spec.action.dims):
        report[name] = {
            "bin_acc": float((bins[:, 0, d] == true_bins[:, 0, d]).mean()),
            "within_1_bin": float((np.abs(bins[:, 0, d] - true_bins[:, 0, d]) <= 1).mean()),
            "bin_acc_all_steps": float((bins[..., d] == true_bins[..., d]).mean()),
            "mse_expectation": float(((exp[:, 0, d] - labels[:, 0, d]) ** 2).mean()),
            "mse_argmax": float(((arg[:, 0, d] - labels[:, 0, d]) ** 2).mean()),
            "mse_constant": float(((train_mean[d] - labels[:, 0, d]) ** 2).mean()),
        }
    closed = labels[:, 0, 3] > 0
    for material, sel in (("fragile", fragile & closed), ("rigid", ~fragile & closed)):
        report[f"grip_when_closing_{material}"] = {
            "n": int(sel.sum()),
            "label_mean": float(labels[sel, 0, 3].mean()) if sel.any() else None,
            "decoded_mean": float(exp[sel, 0, 3].mean()) if sel.any() else None,
        }
    report["frag_slot_acc"] = float(((p_frag >= 0.5) == fragile).mean())
    visible = rows[(demos.efforts[rows] <= 0) & (demos.states[rows, 16] < 0.5)]
    if len(visible):
        truth = demos.materials[visible] == "fragile"
        for question, pos, neg in COTRAIN_QUESTIONS:
            p = backend.batched_answers(
                demos.frames[visible], question, (pos.strip(), neg.strip()), batch
            )[:, 0]
            report.setdefault("cotrain_acc", {})[question] = float(((p >= 0.5) == truth).mean())
        report["cotrain_rows"] = int(len(visible))
    return report


def train_vla(
    demos: Demonstrations,
    cfg: TrainVLAConfig,
    log: Callable[[str], None] = print,
    feature_folders: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Fine-tune a VLA on `demos`, evaluate on held-out episodes, save; returns the report.

    Args:
        demos: the rows to train on (several folders' joined with Demonstrations.concat).
        cfg: the settings.
        log: progress lines.
        feature_folders: the Demonstrations folders `demos` was loaded from, in its row order:
            their frames' image features are read from (or cached into) them
            (agents.vla_features.folder_features) instead of recomputed. Empty: computed.

    Raises:
        ValueError: a bad setting, bad demonstrations, or folders whose frames do not add up to
            `demos` (before any work).
    """
    cfg.validate()
    demos.validate()
    folder_rows = [len(np.load(Path(f) / "frames.npy", mmap_mode="r")) for f in feature_folders]
    if feature_folders and sum(folder_rows) != len(demos):
        raise ValueError(f"feature_folders {[str(f) for f in feature_folders]} hold {sum(folder_rows)} frames; "
                         f"the demonstrations have {len(demos)} rows")  # fmt: skip
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    if cfg.init:  # continue fine-tuning a VLA (a DAgger round starts from the last round's)
        backend, spec = load_vla(cfg.init, "cpu", "float32")
        have = (spec.action.k_bins, spec.state.k_bins, spec.horizon)
        if have != (cfg.k_bins, cfg.state_bins, demos.horizon):
            raise ValueError(f"init={cfg.init!r} has (k_bins, state_bins, horizon) {have}; the config and "
                             f"demonstrations ask for {(cfg.k_bins, cfg.state_bins, demos.horizon)}")  # fmt: skip
    else:
        backend, spec = build_vla(
            cfg.base, cfg.k_bins, cfg.state_bins, demos.horizon, seed=cfg.seed
        )
    model = backend.model
    inner = model.model
    for module in (inner.vision_model, inner.connector):
        module.requires_grad_(False)
    train_rows, eval_rows = (
        np.flatnonzero(m) for m in split_episodes(demos.episodes, cfg.eval_fraction, cfg.seed)
    )
    if feature_folders:
        feats = folder_features(backend, feature_folders, cfg.feature_batch, log)
    else:
        feats = image_features(backend, demos.frames, cfg.feature_batch)
    t_feats = time.time() - t0
    log(
        f"image features of {len(demos)} frames in {t_feats:.0f}s; train {len(train_rows)} rows, held out {len(eval_rows)}"
    )
    data = _Batches(backend, spec, demos, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 0.5 * (
            1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = np.random.default_rng(cfg.seed)
    visible = train_rows[data.visible[train_rows]]
    swap_gen = np.random.default_rng([cfg.seed, 1])  # its own stream: holding_swap 0 draws nothing
    pools = _held_pools(data, train_rows) if cfg.holding_swap > 0 else {}
    history, step = [], 0
    model.train()
    for epoch in range(cfg.epochs):
        order = gen.permutation(train_rows)
        running: dict[str, list[float]] = {}
        for start in range(0, len(order), cfg.batch_size):
            idx = torch.from_numpy(np.sort(order[start : start + cfg.batch_size]))
            q_rows = (
                torch.from_numpy(
                    np.sort(
                        gen.choice(visible, min(cfg.cotrain_batch, len(visible)), replace=False)
                    )
                )
                if len(visible)
                else torch.zeros(0, dtype=torch.long)
            )
            source = torch.from_numpy(
                _swap_held_frames(data, idx.numpy(), pools, cfg.holding_swap, swap_gen)
            )
            loss, parts = _loss(
                model, spec, data, feats, idx, cfg, q_rows, step % len(COTRAIN_QUESTIONS), source
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            for k, v in parts.items():
                running.setdefault(k, []).append(v)
        history.append({"epoch": epoch, **{k: float(np.mean(v)) for k, v in running.items()}})
        log(
            f"epoch {epoch}: "
            + " ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if k != "epoch")
            + f" ({time.time() - t0:.0f}s)"
        )
    model.eval()
    t_train = time.time() - t0 - t_feats
    report = {
        "config": asdict(cfg),
        "vla": spec.to_dict(),
        "parameters_trained": int(sum(p.numel() for p in params)),
        "rows": {"train": int(len(train_rows)), "held_out": int(len(eval_rows))},
        "held_out_episodes": sorted(int(e) for e in np.unique(demos.episodes[eval_rows])),
        "feature_seconds": round(t_feats, 1),
        "train_seconds": round(t_train, 1),
        "history": history,
        "eval": evaluate_vla(backend, spec, demos, eval_rows),
        "torch": torch.__version__,
        # The recipe is deterministic in one environment, not across versions of these (the
        # shipped round 0, made when only torch was recorded, did not reproduce on a newer stack).
        "versions": {name: importlib.metadata.version(name) for name in VERSIONED},
        "threads": cfg.threads,
    }
    out = save_vla(backend, cfg.out_dir)
    write_json(out / "training_report.json", report)
    log(f"saved to {out} ({time.time() - t0:.0f}s total)")
    return report
