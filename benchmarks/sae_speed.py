"""SAE training speed and quality: ours vs dense PyTorch baselines and SAELens, measured in one run.

Shapes: the reference width 2048 -> 8192 (k 16; timed over a few steps only) and the tiny
model's width 128 -> 512 (default_config(128): k 16, prefixes 16/64/256/512), batch 4096, on
synthetic planted-dictionary data. For each: training tokens/s and held-out FVE after the same
token budget, over a learning-rate grid, for

  ours             sae.train_sae (Matryoshka top-k + AuxK: native exact top-k, sparse encoder
                   backward, one bag-sum decoder for all prefixes)
  dense-matryoshka the same Matryoshka top-k objective written with dense matmuls (the usual
                   implementation: dense code z, z @ W_dec per prefix)
  dense-topk       a plain dense TopK SAE (single prefix, no AuxK): the simplest baseline
  sae_lens         SAELens' MatryoshkaBatchTopKTrainingSAE trained by its own SAETrainer.fit()
                   (only if `import sae_lens` works: pip install -c constraints.txt -e '.[bench]')

and prints ratios ours / baseline, FVE per learning rate and each variant's best FVE.
Targets (issue #4): >= 3x SAELens' tokens/s at the reference width, >= 4x at the tiny width,
with FVE no lower than SAELens' at the same token budget.

    python benchmarks/sae_speed.py                       # ~5 minutes on 2 cores
    python benchmarks/sae_speed.py --skip-big --tokens-small 8388608 --lrs 3e-3
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import statistics
import time
from unittest import mock

import torch
from rich.console import Console
from rich.table import Table

from sae import SAEConfig, TrainConfig, default_config, fve, train_sae


def synthetic(n: int, d: int, n_atoms: int, s: int, seed: int) -> torch.Tensor:
    """Sums of s random unit atoms (Zipf-like frequencies) plus small noise.

    The atoms are fixed (their own generator seed, distinct from any seed used to initialise a
    model: with the same seed, a model's random init would *be* the planted dictionary);
    `seed` draws the codes, so a different seed gives held-out samples of the same dictionary.
    """
    atoms = torch.randn(n_atoms, d, generator=torch.Generator().manual_seed(987_654_321))
    atoms /= atoms.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed + 1)
    p = 1.0 / torch.arange(1, n_atoms + 1).float() ** 0.5
    idx = torch.multinomial((p / p.sum()).expand(n, -1), s, replacement=False, generator=g)
    z = torch.zeros(n, n_atoms).scatter(1, idx, torch.rand(n, s, generator=g) + 0.5)
    return z @ atoms + 0.01 * torch.randn(n, d, generator=g)


class StepClock:
    """Time stamps taken as each training batch is handed out: one interval is one full step.

    tokens/s is the batch over the median step, steps 2.. (the first carries warm-up): a
    median is robust to the other jobs that come and go on a shared machine, so variants
    timed minutes apart stay comparable.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def wrap(self, batches):
        """Yield from `batches`, stamping the time of each hand-out."""
        for b in batches:
            self.stamps.append(time.perf_counter())
            yield b

    def tokens_per_s(self, batch: int) -> float:
        """batch / median step time over steps 2.. (nan with fewer than 3 steps)."""
        steps = [b - a for a, b in itertools.pairwise(self.stamps[1:])]
        return batch / statistics.median(steps) if steps else float("nan")


def baseline_batches(x: torch.Tensor, batch: int, steps: int | None = None):
    """The baselines' training batches: consecutive slices of `x`, wrapping around."""
    for step in range(steps) if steps is not None else itertools.count():
        yield x[(step * batch) % (x.shape[0] - batch + 1) :][:batch]


class DenseSAE(torch.nn.Module):
    """Dense top-k SAE: dense pre-activations, dense code, dense decode per prefix."""

    def __init__(self, d: int, n: int, k: int, prefixes: tuple[int, ...], x: torch.Tensor) -> None:
        super().__init__()
        w = torch.randn(n, d)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w)
        self.W_enc = torch.nn.Parameter(w.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.mean = x.mean(0)
        self.scale = float(((x - self.mean) ** 2).sum(1).mean().sqrt() / math.sqrt(d))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        self.k, self.prefixes = k, prefixes

    def code(self, xn: torch.Tensor) -> torch.Tensor:
        pre = (xn - self.b_dec) @ self.W_enc + self.b_enc
        v, i = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter(1, i, v.relu())

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        xn = (x - self.mean) / self.scale
        z = self.code(xn)
        den = ((xn - xn.mean(0)) ** 2).sum()
        return sum(
            ((xn - self.b_dec - z[:, :m] @ self.W_dec[:m]) ** 2).sum() / den for m in self.prefixes
        ) / len(self.prefixes)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        xn = (x - self.mean) / self.scale
        return (self.b_dec + self.code(xn) @ self.W_dec) * self.scale + self.mean


def train_dense(model: DenseSAE, x: torch.Tensor, steps: int, batch: int, tc: TrainConfig) -> float:
    """Adam with unit-norm decoder rows and our lr schedule; returns tokens/s (`StepClock`)."""
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    clock = StepClock()
    batches = clock.wrap(baseline_batches(x, batch, steps))
    for step, xb in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = tc.lr_at(step, steps)
        loss = model.loss(xb)
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            g, w = model.W_dec.grad, model.W_dec
            g.sub_((g * w).sum(1, keepdim=True) * w)
        opt.step()
        with torch.no_grad():
            model.W_dec.div_(model.W_dec.norm(dim=1, keepdim=True))
    return clock.tokens_per_s(batch)


def train_sae_lens(
    x: torch.Tensor,
    held: torch.Tensor,
    n: int,
    k: int,
    prefixes: tuple[int, ...],
    steps: int,
    batch: int,
    tc: TrainConfig,
    ours: SAEConfig,
) -> tuple[float, float]:
    """SAELens' own Matryoshka BatchTopK SAE and `SAETrainer.fit()`, fed the same batches.

    Matched to ours: widths = our prefixes, k (mean active latents), batch, peak lr, steps,
    warm-up and linear decay to 0 over the last `decay_frac` of steps, and the dead-latent
    window (steps). Everything else is SAELens' default (decoder init norm 0.1, AuxK coefficient
    1, decoder-norm rescaling, grad clipping at 1, no input normalisation: on this data
    `expected_average_only_in` gave slightly lower FVE at 64 -> 256). No wandb, no checkpoints.
    Held-out FVE uses the training SAE's own `decode(encode(held))`, i.e. BatchTopK over the
    held-out batch (mean L0 = k, like ours); the JumpReLU threshold SAELens saves for inference
    is an EMA that has not settled after a few dozen steps.
    Raises ImportError when sae_lens is not installed. Returns (tokens/s over steps 2.., FVE).
    """
    from sae_lens import (
        LoggingConfig,
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training import sae_trainer

    clock = StepClock()
    batches = clock.wrap(baseline_batches(x, batch))  # exactly the baselines' training batches

    torch.manual_seed(tc.seed)
    sae = MatryoshkaBatchTopKTrainingSAE(
        MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=x.shape[1], d_sae=n, k=k, matryoshka_widths=list(prefixes)
        )
    )
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=tc.lr, lr_end=tc.lr,
        lr_scheduler_name="constant", lr_warm_up_steps=tc.warmup_steps, lr_decay_steps=int(tc.decay_frac * steps),
        adam_beta1=tc.betas[0], adam_beta2=tc.betas[1], dead_feature_window=ours.dead_steps_threshold,
        logger=LoggingConfig(log_to_wandb=False),
    )  # fmt: skip
    with mock.patch.object(sae_trainer, "tqdm", functools.partial(sae_trainer.tqdm, disable=True)):
        sae_trainer.SAETrainer(cfg, sae, batches).fit()
    sae.eval()
    with torch.no_grad():
        return clock.tokens_per_s(batch), fve(held, sae.decode(sae.encode(held)))


def _train_ours(
    x: torch.Tensor, held: torch.Tensor, cfg: SAEConfig, steps: int, tc: dict
) -> tuple[float, float]:
    """tokens/s (`StepClock` on the trainer's own batch stream) and held-out FVE of sae.train_sae."""
    from sae import trainer

    clock, batches = StepClock(), trainer._Stream.batches
    with mock.patch.object(
        trainer._Stream, "batches", lambda self, start: clock.wrap(batches(self, start))
    ):
        res = train_sae(x, cfg, TrainConfig(steps=steps, **tc), progress=False)
    with torch.no_grad():
        return clock.tokens_per_s(tc["batch_size"]), fve(held, res.sae(held))


def _run_variant(
    name: str, x: torch.Tensor, held: torch.Tensor, cfg: SAEConfig, steps: int, tc: dict
):
    """Train one variant for `steps` steps: (tokens/s, held-out FVE), or None without sae_lens."""
    d, n, k, prefixes, batch = cfg.d_in, cfg.n_latents, cfg.k, cfg.prefixes, tc["batch_size"]
    if name == "ours":
        return _train_ours(x, held, cfg, steps, tc)
    if name == "sae_lens":
        try:
            return train_sae_lens(
                x, held, n, k, prefixes, steps, batch, TrainConfig(steps=steps, **tc), cfg
            )
        except ImportError:
            return None
    torch.manual_seed(0)
    model = DenseSAE(d, n, k, prefixes if name == "dense-matryoshka" else (n,), x[:4096])
    tps = train_dense(model, x, steps, batch, TrainConfig(steps=steps, **tc))
    return tps, fve(held, model.reconstruct(held))


def bench_shape(
    d: int,
    n: int,
    k: int,
    prefixes: tuple[int, ...],
    tokens: int,
    batch: int,
    lrs: tuple[float, ...],
    rounds: int = 0,
    round_steps: int = 32,
) -> dict:
    """Train every variant at every learning rate on the same data and token budget.

    Learning rates are a grid because the trainers parametrise differently (ours normalises
    inputs and keeps unit-norm decoder rows; SAELens starts decoder rows at norm 0.1 on raw
    inputs), so one shared lr favours one of them. The variants run in turn, in reversed order
    at every other lr, so drifting machine load hits all of them alike. FVE is reported per lr
    and at each variant's best lr.

    Speed: with `rounds`, every variant then trains `round_steps` steps once per round, the
    order alternating, and each ratio is the median over rounds of ours / that variant within
    the round: pairs measured seconds apart, so the machine's load, which drifts over minutes
    here, cancels. Without rounds, tokens/s is the median over the lr grid.
    Returns {"steps", "tokens", variant: {"tps": [..], "fve": {lr: fve}, "round_tps": [..]}}.
    """
    steps = max(2, tokens // batch)
    x = synthetic(steps * batch, d, n // 2, max(1, k // 2), seed=0)
    held = synthetic(1024, d, n // 2, max(1, k // 2), seed=1)
    cfg = SAEConfig(d_in=d, n_latents=n, k=k, prefixes=prefixes)
    out: dict = {"steps": steps, "tokens": steps * batch}
    names = ["ours", "dense-matryoshka", "dense-topk", "sae_lens"]
    for i, lr in enumerate(lrs):
        tc = dict(lr=lr, batch_size=batch, warmup_steps=max(1, steps // 10), seed=0, init_rows=4096)
        for name in names if i % 2 == 0 else names[::-1]:
            r = _run_variant(name, x, held, cfg, steps, tc)
            if r is None:
                out[name] = None
                continue
            entry = out.setdefault(name, {"tps": [], "fve": {}, "round_tps": []})
            entry["tps"].append(r[0])
            entry["fve"][lr] = r[1]
    live = [name for name in names if out.get(name) is not None]
    round_steps = min(round_steps, steps)
    tc = dict(
        lr=lrs[0], batch_size=batch, warmup_steps=max(1, round_steps // 10), seed=0, init_rows=4096
    )
    for i in range(rounds):
        for name in live if i % 2 == 0 else live[::-1]:
            out[name]["round_tps"].append(_run_variant(name, x, held, cfg, round_steps, tc)[0])
    return out


def _speed(r: dict, name: str) -> tuple[float, float]:
    """(tokens/s, ours / this) of a variant: from the rounds when there were any."""
    ours, this = r["ours"], r[name]
    if this["round_tps"]:
        ratios = [a / b for a, b in zip(ours["round_tps"], this["round_tps"], strict=True)]
        return statistics.median(this["round_tps"]), statistics.median(ratios)
    return statistics.median(this["tps"]), statistics.median(ours["tps"]) / statistics.median(
        this["tps"]
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table of tokens/s, FVE and ratios."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens-big", type=int, default=12288, help="token budget at 2048 -> 8192")
    ap.add_argument("--tokens-small", type=int, default=1 << 20, help="token budget at 128 -> 512")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lrs", type=lambda s: tuple(float(v) for v in s.split(",")), default=(1e-3, 3e-3, 1e-2),
                    help="learning-rate grid, comma-separated (default 1e-3,3e-3,1e-2)")  # fmt: skip
    ap.add_argument("--skip-big", action="store_true", help="only the 128 -> 512 shape")
    ap.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="alternating speed rounds at 128 -> 512 (0: grid timings)",
    )
    args = ap.parse_args(argv)
    small = default_config(128)
    # The reference width is only timed (a few steps: SAELens needs ~15 s per step there), at one lr.
    shapes = (
        []
        if args.skip_big
        else [(2048, 8192, 16, (64, 256, 1024, 4096, 8192), args.tokens_big, args.lrs[:1], 0)]
    )
    shapes.append(
        (128, small.n_latents, small.k, small.prefixes, args.tokens_small, args.lrs, args.rounds)
    )
    console = Console(width=200)  # full table even when piped to a file
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}"
    )
    table = Table(
        title="SAE training: ours vs dense baselines and SAELens (same data, same token budget)"
    )
    for col in ("shape", "tokens", "variant", "tokens/s (median)", "speed ours/this (median)",
                *(f"FVE lr {lr:g}" for lr in args.lrs), "best FVE"):  # fmt: skip
        table.add_column(col, justify="right")
    summary = []
    for d, n, k, prefixes, tokens, lrs, rounds in shapes:
        r = bench_shape(d, n, k, prefixes, tokens, args.batch, lrs, rounds=rounds)
        ours_tps = _speed(r, "ours")[0]
        ours_best = max(r["ours"]["fve"].values())
        for name in ("ours", "dense-matryoshka", "dense-topk", "sae_lens"):
            if r[name] is None:
                continue
            (tps, ratio), fves = _speed(r, name), r[name]["fve"]
            cells = [f"{fves[lr]:.3f}" if lr in fves else "" for lr in args.lrs]
            table.add_row(f"{d}->{n} k{k}", f"{r['tokens']:,}", name, f"{tps:,.0f}", f"{ratio:.2f}x",
                          *cells, f"{max(fves.values()):.3f}")  # fmt: skip
        if r["sae_lens"] is not None:
            tps, ratio = _speed(r, "sae_lens")
            best = max(r["sae_lens"]["fve"].values())
            timing = (
                f"median of {rounds} alternating rounds" if rounds else "median over the lr grid"
            )
            per_lr = ", ".join(
                f"lr {lr:g}: {r['ours']['fve'][lr]:.3f} vs {f:.3f}"
                for lr, f in r["sae_lens"]["fve"].items()
            )
            summary.append(f"  {d}->{n} k{k}, {r['tokens']:,} tokens: tokens/s ours/SAELens {ratio:.2f}x ({timing}; "
                           f"{ours_tps:,.0f} vs {tps:,.0f}); best FVE ours {ours_best:.3f} vs SAELens {best:.3f}; "
                           f"FVE ours vs SAELens at the same lr: {per_lr}")  # fmt: skip
    console.print(table)
    if summary:
        console.print(f"vs SAELens {sae_lens_version()} Matryoshka BatchTopK (SAETrainer.fit):", *summary,
                      sep="\n", soft_wrap=True)  # fmt: skip
    else:
        console.print(
            "SAELens: `import sae_lens` failed (not installed) - its trainer was not measured."
        )


def sae_lens_version() -> str:
    """Installed sae_lens version (only called once it imported)."""
    import sae_lens

    return sae_lens.__version__


if __name__ == "__main__":
    main()
