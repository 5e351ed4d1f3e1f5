"""Training a Joint SAE on paired rows, and the figures that tell aligned from merely correlated.

Pairs are split by scene (`groups`) into fit and held-out rows before anything is fitted; every
figure is on the held-out pairs. Deterministic: the initial weights and the batch of each step
are functions of the seed (as sae.trainer's).

Figures (`joint_metrics`), from ../shared/reference/jsae-code-notes.md's pitfalls:
- per side: FVE, L0, dead latents (never active on the held-out rows) and one-sided latents
  (active on this side but never on the other: not shared);
- alignment: the mean code cosine of matched pairs against mismatched ones (each vision row
  with another scene's language row of another text), the gap between them, and retrieval:
  how often a vision code's nearest language code (cosine) is its own text's, against chance
  (the share of rows with the same text: 1 / n when every text is different);
- collapse: the entropy of the latents' usage (nats; low: a few always-on latents), and the
  share of the alignment that one always-on latent would give.

    joint, result = train_joint(x_vision, x_language, groups, JointTrainConfig(steps=2000))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sae.joint import SIDES, JointConfig, JointSAE, code_cosine


@dataclass
class JointTrainConfig:
    """Optimisation of a Joint SAE (recorded with its results)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2.5e-4
    seed: int = 0
    held_out: float = 0.2  # share of scenes (groups) held out for every figure

    def validate(self) -> None:
        """ValueError naming a bad setting."""
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name}={value!r}: must be an int >= 2")
        if not (self.lr > 0 and 0 < self.held_out < 1):
            raise ValueError(f"lr={self.lr} must be > 0 and held_out={self.held_out} in (0, 1)")


def split_groups(groups: np.ndarray, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): whole groups (scenes) on one side, drawn from `seed`."""
    ids = np.unique(groups)
    if len(ids) < 4:
        raise ValueError(f"{len(ids)} scenes: a Joint SAE needs at least 4 (fit and held out)")
    draw = np.random.default_rng([seed, 7]).permutation(ids)
    held = set(draw[: max(1, int(round(held_out * len(ids))))].tolist())
    mask = np.array([g in held for g in groups])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _seeded(build: Any, seed: int) -> Any:
    """`build()` under a torch seed drawn from `seed`, the global RNG left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
        return build()


def _optimise(module: torch.nn.Module, saes: list[Any], rows: np.ndarray, loss_of: Any,
              train: JointTrainConfig) -> list[dict[str, Any]]:  # fmt: skip
    """Adam over `module` for train.steps steps, each on a batch drawn from `rows` (seeded by
    train.seed), the decoders of `saes` kept unit-norm; returns the loss parts at 20 points."""
    opt = torch.optim.Adam(module.parameters(), lr=train.lr)
    draw = np.random.default_rng([train.seed, 2])
    history = []
    module.train()
    for step in range(train.steps):
        batch = torch.as_tensor(
            draw.choice(rows, size=min(train.batch_size, len(rows)), replace=False)
        )
        loss, parts = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for sae in saes:
            sae.project_decoder_grad()
        opt.step()
        for sae in saes:
            sae.normalize_decoder()
        if (step + 1) % max(1, train.steps // 20) == 0 or step + 1 == train.steps:
            history.append({"step": step + 1, **parts})
    module.eval()
    return history


def train_joint(xv: torch.Tensor, xl: torch.Tensor, groups: np.ndarray, config: JointConfig,
                train: JointTrainConfig) -> tuple[JointSAE, dict[str, Any]]:  # fmt: skip
    """Train on the fit pairs; returns the model and {"fit_rows", "held_rows", "history",
    "metrics" (joint_metrics on the held-out pairs)}."""
    train.validate()
    if not (len(xv) == len(xl) == len(groups)):
        raise ValueError(
            f"{len(xv)} vision rows, {len(xl)} language rows, {len(groups)} groups: one each per pair"
        )
    fit, held = split_groups(np.asarray(groups), train.held_out, train.seed)
    joint = _seeded(lambda: JointSAE(config), train.seed)
    xv, xl = xv.float(), xl.float()
    joint.vision.init_from_data(xv[fit])
    joint.language.init_from_data(xl[fit])
    history = _optimise(joint, [joint.side(name) for name in SIDES], fit,
                        lambda rows: joint.loss(xv[rows], xl[rows]), train)  # fmt: skip
    return joint, {"fit_rows": len(fit), "held_rows": len(held), "history": history,
                   "metrics": joint_metrics(joint, xv[held], xl[held])}  # fmt: skip


@torch.no_grad()
def joint_metrics(joint: JointSAE, xv: torch.Tensor, xl: torch.Tensor) -> dict[str, Any]:
    """The figures of the module docstring on paired rows (row i of each side is one scene)."""
    n = len(xv)
    if n < 2:
        raise ValueError(f"{n} pairs: the figures need at least 2")
    zv, zl = joint.vision.encode(xv), joint.language.encode(xl)
    out: dict[str, Any] = {}
    active = {"vision": (zv > 0).any(0), "language": (zl > 0).any(0)}
    for name, z, x in (("vision", zv, xv), ("language", zl, xl)):
        sae = joint.side(name)
        other = active["language" if name == "vision" else "vision"]
        out[name] = {"fve": float(1 - ((sae.decode(z) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12)),
                     "l0": float((z > 0).sum(1).float().mean()),
                     "dead": int((~active[name]).sum()),
                     "one_sided": int((active[name] & ~other).sum())}  # fmt: skip
    # rows with the same language input (one description for several frames) are one target
    ids = torch.unique(xl, dim=0, return_inverse=True)[1]
    matched = code_cosine(zv, zl)
    other = ids != ids.roll(1)  # mismatched: each vision row with the next row of another text
    mismatched = (
        code_cosine(zv, zl.roll(1, dims=0))[other] if bool(other.any()) else matched.new_zeros(1)
    )
    unit_v = torch.nn.functional.normalize(zv, dim=1, eps=1e-8)
    sims = unit_v @ torch.nn.functional.normalize(zl, dim=1, eps=1e-8).T
    retrieval = float((ids[sims.argmax(1)] == ids).float().mean())
    chance = float((torch.bincount(ids)[ids].float() / n).mean())
    usage = torch.cat([zv, zl]).gt(0).float().sum(0)
    p = usage / usage.sum().clamp_min(1)
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    top = int(usage.argmax())
    out.update(matched_cosine=float(matched.mean()), mismatched_cosine=float(mismatched.mean()),
               cosine_gap=float(matched.mean() - mismatched.mean()), retrieval=retrieval, chance=chance,
               usage_entropy=entropy, max_entropy=float(np.log(joint.config.vision.n_latents)),
               top_latent_share=float(usage[top] / usage.sum().clamp_min(1)), pairs=n)  # fmt: skip
    return out


def train_pooled(xv: torch.Tensor, xl: torch.Tensor, groups: np.ndarray, config: Any,
                 train: JointTrainConfig) -> Any:  # fmt: skip
    """The unaligned baseline: ONE MatryoshkaSAE (sae.config.SAEConfig `config`) fitted on the
    fit pairs' vision and language rows pooled (both sides must be one width, as two reads of
    one residual stream are), so latent i reads the same dictionary element on either side.
    Same split, seed rule and optimiser as `train_joint`."""
    from sae.matryoshka import MatryoshkaSAE

    train.validate()
    if xv.shape[1] != xl.shape[1]:
        raise ValueError(f"vision rows of width {xv.shape[1]} and language rows of width "
                         f"{xl.shape[1]}: one SAE reads both sides only at one width")  # fmt: skip
    fit, _ = split_groups(np.asarray(groups), train.held_out, train.seed)
    pooled = torch.cat([xv[fit], xl[fit]]).float()
    sae = _seeded(lambda: MatryoshkaSAE(config), train.seed)
    sae.init_from_data(pooled)
    _optimise(sae, [sae], np.arange(len(pooled)), lambda rows: sae.loss(pooled[rows]), train)
    return sae


@torch.no_grad()
def match_latents(zv: torch.Tensor, zl: torch.Tensor) -> np.ndarray:
    """For two SAEs trained apart: the language latent matched to each vision latent (a
    permutation maximising the summed correlation of paired codes, Hungarian), so that
    `zl[:, match]` lines up with `zv` index by index."""
    from scipy.optimize import linear_sum_assignment

    def standard(z: torch.Tensor) -> torch.Tensor:
        z = z.double() - z.double().mean(0)
        return z / z.norm(dim=0).clamp_min(1e-12)

    corr = (standard(zv).T @ standard(zl)).numpy()
    _, cols = linear_sum_assignment(-corr)
    return cols
