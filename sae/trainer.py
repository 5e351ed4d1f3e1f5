"""Minibatch Adam training of a Matryoshka SAE with checkpoints, resume and determinism.

Determinism: the initial weights come from `seed`, and the batch of step s is a pure function
of (seed, s): epoch e = s // batches_per_epoch shuffles with the seed (seed, e). A resumed run
restores weights, buffers, Adam state and step, and regenerates the same batch stream from
step s, so it ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file

from sae.config import SAEConfig
from sae.matryoshka import MatryoshkaSAE
from sae.store import ActivationStore
from storage import atomic_dir, write_json, write_safetensors

CKPT_DIR = "checkpoints"
LATEST = "latest.json"
# Fields that may differ between a run and its resumption without changing the trajectory.
_RESUME_FREE = {"steps", "tokens", "checkpoint_every", "out_dir", "log_every", "keep_checkpoints"}


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        lr: peak Adam learning rate. The default is the one that works on the embedded tiny
            model (d 128 -> 512 latents, k 16; 512 renders, 2000 steps): its low-rank
            activations leave 44% of the latents dead at 1e-3 and 5% at 2.5e-4, with the same
            FVE (0.999); `physteer train-sae` and `physteer demo` use it too.
        steps: optimisation steps; or give `tokens` (steps = ceil(tokens / batch_size)).
        tokens: training budget in activation rows.
        batch_size: rows per step.
        warmup_steps: linear warm-up from 0 to `lr`.
        decay_frac: final fraction of steps over which lr decays linearly to 0.
        seed: seeds initialisation and data order.
        checkpoint_every: steps between checkpoints (0: only the final one).
        out_dir: where checkpoints, `sae/` and `history.json` go (None: keep in memory only).
        log_every: steps between history entries / progress updates.
        init_rows: rows used to fit input normalisation and b_dec.
        window_shards: shards shuffled together when streaming from a store.
        keep_checkpoints: how many most recent checkpoints to keep.
    """

    lr: float = 2.5e-4
    steps: int | None = None
    tokens: int | None = None
    batch_size: int = 1024
    warmup_steps: int = 100
    decay_frac: float = 0.2
    seed: int = 0
    checkpoint_every: int = 0
    out_dir: str | None = None
    log_every: int = 10
    init_rows: int = 4096
    window_shards: int = 4
    keep_checkpoints: int = 1
    betas: tuple[float, float] = (0.9, 0.999)

    def total_steps(self) -> int:
        """Resolve the number of steps from `steps` or `tokens` (ValueError if neither or bad)."""
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.steps is not None:
            if self.steps <= 0:
                raise ValueError(f"steps must be positive, got {self.steps}")
            return int(self.steps)
        if self.tokens is not None and self.tokens > 0:
            return math.ceil(self.tokens / self.batch_size)
        raise ValueError(f"give steps or tokens (> 0), got steps={self.steps} tokens={self.tokens}")

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate at 0-based `step`: linear warm-up, constant, linear decay to 0."""
        factor = 1.0
        if self.warmup_steps > 0:
            factor = min(factor, (step + 1) / self.warmup_steps)
        decay_steps = int(self.decay_frac * total)
        if decay_steps > 0:
            factor = min(factor, (total - step) / decay_steps)
        return self.lr * max(factor, 0.0)


@dataclass
class TrainResult:
    """A trained SAE, its logged history and the last step."""

    sae: MatryoshkaSAE
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    out_dir: Path | None = None


class _Stream:
    """Deterministic infinite batch stream from a tensor or an ActivationStore."""

    def __init__(self, data: Any, batch_size: int, seed: int, window_shards: int) -> None:
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if isinstance(data, torch.Tensor):
            if data.ndim != 2:
                raise ValueError(f"training data must be (n, d), got shape {tuple(data.shape)}")
            self.x, self.store, self.n, self.d = data.float(), None, data.shape[0], data.shape[1]
        elif isinstance(data, ActivationStore):
            self.x, self.store, self.n, self.d = None, data, len(data), data.d
        else:
            raise ValueError(
                f"data must be a tensor, array or ActivationStore, got {type(data).__name__}"
            )
        if self.n < batch_size:
            raise ValueError(f"batch_size={batch_size} exceeds the {self.n} rows of training data")
        self.batch_size, self.seed, self.window = batch_size, seed, window_shards
        self.per_epoch = self.n // batch_size  # batches are always full (drop_last)

    def _epoch(self, e: int) -> Iterator[torch.Tensor]:
        epoch_seed = int(np.random.SeedSequence([self.seed, e]).generate_state(1)[0])
        if self.store is not None:
            yield from self.store.iter_minibatches(
                self.batch_size, seed=epoch_seed, window_shards=self.window, drop_last=True
            )
            return
        perm = torch.from_numpy(np.random.default_rng(epoch_seed).permutation(self.n))
        for b in range(self.per_epoch):
            yield self.x[perm[b * self.batch_size : (b + 1) * self.batch_size]]

    def batches(self, start_step: int) -> Iterator[torch.Tensor]:
        """Batches for steps start_step, start_step + 1, ... (skips into the right epoch)."""
        epoch, offset = divmod(start_step, self.per_epoch)
        while True:
            for i, xb in enumerate(self._epoch(epoch)):
                if i >= offset:
                    yield xb
            offset, epoch = 0, epoch + 1

    def init_sample(self, n: int) -> torch.Tensor:
        """Up to `n` rows for fitting normalisation (a stream independent of training batches)."""
        if self.store is None:
            idx = np.random.default_rng([self.seed, 2**31]).permutation(self.n)[:n]
            return self.x[torch.from_numpy(idx)]
        rows, got = [], 0
        for xb in self.store.iter_minibatches(
            min(n, self.n), seed=self.seed + 2**31, window_shards=self.window
        ):
            rows.append(xb)
            got += xb.shape[0]
            if got >= n:
                break
        return torch.cat(rows)[:n]


def _save_checkpoint(
    out: Path, sae: MatryoshkaSAE, opt: torch.optim.Optimizer, state: dict, keep: int
) -> None:
    """Write a complete checkpoint directory, then point latest.json at it (atomic switch)."""
    root = out / CKPT_DIR
    name = f"step_{state['step']:09d}"
    osd = opt.state_dict()
    tensors = {f"{pid}.{k}": v for pid, s in osd["state"].items() for k, v in s.items()}
    with atomic_dir(root / name) as tmp:
        sae.save(tmp)
        write_safetensors(tmp / "optim.safetensors", tensors)
        write_json(tmp / "state.json", {**state, "param_groups": osd["param_groups"]})
    write_json(root / LATEST, {"dir": name, "step": state["step"]})
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[: max(0, len(old) - keep)]:
        shutil.rmtree(p)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """Directory of the latest complete checkpoint under `out_dir`, or None."""
    path = Path(out_dir) / CKPT_DIR / LATEST
    if not path.is_file():
        return None
    return Path(out_dir) / CKPT_DIR / json.loads(path.read_text())["dir"]


def _load_checkpoint(ckpt: Path, config: SAEConfig, train: TrainConfig, d: int):
    """Restore (sae, optimizer, state) and check the run's settings match the checkpoint."""
    sae = MatryoshkaSAE.from_pretrained(ckpt, expected_d_in=d)
    a, b = sae.config.to_dict(), config.to_dict()
    a.pop("metadata"), b.pop("metadata")
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        raise ValueError(
            f"cannot resume {ckpt}: SAE config differs (checkpoint, requested): {diff}"
        )
    state = json.loads((ckpt / "state.json").read_text())
    saved = state["train_config"]
    now = json.loads(json.dumps(asdict(train)))
    tdiff = {
        k: (saved.get(k), now[k]) for k in now if k not in _RESUME_FREE and saved.get(k) != now[k]
    }
    if tdiff:
        raise ValueError(
            f"cannot resume {ckpt}: training settings differ (checkpoint, requested): {tdiff}"
        )
    if saved.get("steps") != now["steps"] or saved.get("tokens") != now["tokens"]:
        warnings.warn("resuming with a different budget changes the lr schedule", stacklevel=3)
    opt = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.betas)
    tensors = load_file(str(ckpt / "optim.safetensors"))
    per: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        per.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": per, "param_groups": state["param_groups"]})
    return sae, opt, state


def train_sae(
    data: ActivationStore | torch.Tensor | np.ndarray,
    config: SAEConfig,
    train: TrainConfig,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train a Matryoshka SAE on `data` (a store or an (n, d) tensor).

    With `train.out_dir`, writes checkpoints under `out_dir/checkpoints/`, the final model to
    `out_dir/sae/` and the logged history to `out_dir/history.json`. resume=True continues
    from the latest checkpoint there; resume=False refuses to overwrite an existing run.
    """
    total = train.total_steps()
    stream = _Stream(data, train.batch_size, train.seed, train.window_shards)
    if stream.d != config.d_in:
        raise ValueError(f"training data has d={stream.d} but config.d_in={config.d_in}")
    out = Path(train.out_dir) if train.out_dir else None
    ckpt = latest_checkpoint(out) if out else None
    if ckpt is not None and not resume:
        raise ValueError(
            f"{out} already holds a run (checkpoint {ckpt.name}); resume it or pick another out_dir"
        )
    if ckpt is not None:
        sae, opt, state = _load_checkpoint(ckpt, config, train, stream.d)
        start, history = int(state["step"]), list(state["history"])
    else:
        with torch.random.fork_rng():  # seeded init without disturbing the caller's RNG
            # A derived seed, so the init is not the stream torch.manual_seed(seed) gives to
            # anyone else (e.g. synthetic data generated with the same small seed).
            torch.manual_seed(int(np.random.SeedSequence([train.seed, 1]).generate_state(1)[0]))
            sae = MatryoshkaSAE(config)
        sae.init_from_data(stream.init_sample(train.init_rows))
        opt = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.betas)
        start, history = 0, []
    sae.train()
    columns = [TextColumn("train-sae"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[stats]}")]  # fmt: skip
    batches = stream.batches(start)
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=total, completed=start, stats="")
        for step in range(start, total):
            lr = train.lr_at(step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, parts = sae.loss(next(batches))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.project_decoder_grad()
            opt.step()
            sae.normalize_decoder()
            done = step + 1
            if done % train.log_every == 0 or done == total:
                history.append({"step": done, "lr": lr, **parts})
                bar.update(task, completed=done, stats=(
                    f"loss {parts['loss']:.4f}  FVE {parts['fve']:.3f}  "
                    f"L0 {parts['l0']:.1f}  dead {parts['dead_frac']:.1%}"))  # fmt: skip
            if out and (
                done == total or (train.checkpoint_every and done % train.checkpoint_every == 0)
            ):
                state = {"step": done, "train_config": asdict(train), "history": history}
                _save_checkpoint(out, sae, opt, state, max(1, train.keep_checkpoints))
    sae.eval()
    if out:
        sae.save(out / "sae")
        write_json(out / "history.json", history)
    return TrainResult(sae=sae, history=history, step=total, out_dir=out)
