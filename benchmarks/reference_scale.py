"""Decision cost at the reference model's scale, side by side with the tiny model, in one run.

The reference is SmolVLM-Instruct (Idefics3): a SigLIP so400m/14 vision tower at 384² (1152 wide,
27 layers, MLP 4304, 16 heads), pixel shuffle ×3 ⇒ 81 image tokens per frame (no image
splitting), and the SmolLM2-1.7B text model (2048 wide, 24 layers, MLP 8192, 32 heads; vocabulary
49155): about 2.2B parameters. It is built here from its config with random weights (nothing is
downloaded: cost does not depend on the weights) and tapped at layer 16, as in the reference.
The tiny model is the shipped checkpoint (agents/tiny_vlm/, tapped at its default layer 2).

For each model, on the same env frames:
- decision latency: `VLMBackend.prob_yes` on one frame (inputs, forward, P(yes)), median;
- peak memory: resident set size (CPU) or CUDA peak allocation during those decisions;
- tap: the ResidualTap hook's own time inside the forward, per decision (median);
- SAE scoring: the SARM scorer (`monitors.sae_scorer.SAEReconstructionScorer` around a
  `sae.MatryoshkaSAE` with `sae.default_config(d)`: 2048 → 8192, k 16 at the reference) on
  the tap's image tokens, per decision, as a share of the decision forward (target ≤ 1%), at
  its default (`encode_dtype="auto"`: the encoder's product in bfloat16 from 1024 wide, so at
  the reference, float32 at the tiny model's width) and with the product in float32;
- every other scorer a monitor can run, per decision, as a share of the decision forward
  (target ≤ 1% each): Mahalanobis, PCA, the raw-activation probe (image tokens + last token),
  the learned failure predictors (monitors.failure: MLP and LSTM, one step after a 24-decision
  history, as the monitor calls them) and the action-token signals (monitors.signals); each
  fitted on rows of the tap's activations plus noise (cost does not depend on what it learnt);
- SAE steering: the `SAEFeatureSteering` hook's own time (encode, set one latent, decode a
  64-latent prefix twice; median per decision) and the decision latency with it attached;
- batching: one forward over `--batch` frames against as many one-by-one decisions.
Hook costs are timed inside the forward (exact); with-vs-without latencies are two noisy
measurements and are shown for scale only.

    nice -n 10 python benchmarks/reference_scale.py [--device cpu] [--dtype bfloat16]
        [--repeats 2] [--tiny-repeats 20] [--tiny-dtype float32] [--batch 4] [--threads 2]
        [--scales tiny,reference]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agents.backend import VLMBackend, load_vlm, resolve_device, resolve_dtype
from agents.interventions import SAEFeatureSteering
from agents.taps import ResidualTap
from agents.vlm_agent import default_tap_layer

REFERENCE_LAYER = 16
REFERENCE = {
    "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
               "num_attention_heads": 16, "image_size": 384, "patch_size": 14},
    "text": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49155,
             "rms_norm_eps": 1e-5, "rope_theta": 273768.0, "max_position_embeddings": 16384},
    "scale_factor": 3,
}  # fmt: skip


class Timed:
    """Mixin: record the seconds of every `_hook` call (`hook_times`)."""

    def _hook(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super()._hook(*args)
        finally:
            self.__dict__.setdefault("hook_times", []).append(time.perf_counter() - t0)


class TimedTap(Timed, ResidualTap):
    """A ResidualTap that times its own hook."""


class TimedSteering(Timed, SAEFeatureSteering):
    """An SAEFeatureSteering that times its own hook."""


def reference_backend(device: torch.device, dtype: torch.dtype) -> VLMBackend:
    """Idefics3 with SmolVLM-Instruct's dimensions, random weights, the tiny model's processor
    (384² frames, no splitting, 81 image tokens; its vocabulary fits in the model's)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    from agents.tiny_model import build_processor

    processor = build_processor()
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids
    config = Idefics3Config(
        vision_config=REFERENCE["vision"],
        text_config={"model_type": "llama", **REFERENCE["text"], "pad_token_id": tok.pad_token_id,
                     "bos_token_id": ids("<|im_start|>"), "eos_token_id": ids("<end_of_utterance>"),
                     "tie_word_embeddings": False},
        scale_factor=REFERENCE["scale_factor"], image_token_id=ids("<image>"),
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    model = build_random(Idefics3ForConditionalGeneration, config, device, dtype)
    return VLMBackend(model.eval(), processor, name="reference (random weights)")


def build_random(model_class: Any, config: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """`model_class(config)` with random weights (seed 0) built in `dtype` on `device`: no
    float32 copy of billions of weights on the way."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.random.fork_rng(), torch.device(device):
            torch.manual_seed(0)
            return model_class(config)
    finally:
        torch.set_default_dtype(previous)


class PeakMemory:
    """Peak memory of a block: CUDA peak allocation, or the process's peak RSS (Linux VmHWM,
    reset through /proc/self/clear_refs; ru_maxrss, never reset, where that is unavailable)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
            return
        status = Path("/proc/self/status")
        if status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.gib = int(line.split()[1]) / 2**20
                    return
        import resource

        self.gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (timings end when the work does)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device, repeats: int) -> list[float]:
    """Seconds of `repeats` calls of `fn` (each synchronised)."""
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def measure(backend: VLMBackend, layer: int, frames: np.ndarray, repeats: int, batch: int) -> dict:
    """Every figure of one model (see the module docstring)."""
    from monitors.sae_scorer import SAEReconstructionScorer
    from sae import MatryoshkaSAE, default_config

    device, d = backend.device, backend.hidden_size
    frame = frames[0]
    backend.prob_yes([frame])  # warm-up: recipe, kernels, allocator
    plain = timed(lambda: backend.prob_yes([frame]), device, repeats)
    with PeakMemory(device) as mem:
        backend.prob_yes([frame])
    tap = TimedTap(layer).attach(backend)
    backend.prob_yes([frame])
    tap.hook_times = []
    tapped = timed(lambda: backend.prob_yes([frame]), device, repeats)
    tap_s = statistics.median(tap.hook_times)
    acts = tap.image_activations
    tap_rows = tap.latest  # every row (the probe reads the last token too)
    tap.remove()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sae = MatryoshkaSAE(default_config(d)).eval()
    scorer = SAEReconstructionScorer(sae=sae, model=backend.name, layer=layer)  # the default
    scorer.score(acts)  # an encoder's bfloat16 copy is made once
    score_s = statistics.median(timed(lambda: scorer.score(acts), torch.device("cpu"), 50))
    full = SAEReconstructionScorer(sae=sae, model=backend.name, layer=layer, encode_dtype="float32")
    full.score(acts)
    score_f32_s = statistics.median(timed(lambda: full.score(acts), torch.device("cpu"), 50))
    others = scorer_costs(acts, tap_rows, backend.name, layer)
    steering = TimedSteering(sae, feature=0, magnitude=5.0, prefix=sae.config.prefixes[0],
                             layer=layer).attach(backend)  # fmt: skip
    steering.edit(acts.to(backend.dtype))  # warm-up of the SAE's encode path, untimed
    steered = timed(lambda: backend.prob_yes([frame]), device, repeats)
    steer_s = statistics.median(steering.hook_times)
    steering.remove()
    batch_frames = list(frames[:batch])
    batched = timed(lambda: backend.prob_yes(batch_frames), device, max(1, repeats // 2))
    singles = timed(
        lambda: [backend.prob_yes([f]) for f in batch_frames], device, max(1, repeats // 2)
    )
    ids = backend.prepare([frame])["input_ids"]
    n_image = int((ids == backend.image_token_id).sum())
    return {
        "flop_share": sae_flops(sae, n_image) / forward_flops(backend, ids.shape[1]),
        "params": sum(p.numel() for p in backend.model.parameters()),
        "d": d, "layer": layer, "n_layers": backend.n_layers, "image_tokens": n_image,
        "sae": f"{d} → {sae.config.n_latents}, k {sae.config.k}",
        "decision": statistics.median(plain), "decision_runs": plain, "peak_gib": mem.gib,
        "tapped": statistics.median(tapped), "tap": tap_s, "score": score_s, "score_f32": score_f32_s,
        "steered": statistics.median(steered), "steer": steer_s,
        "batched": statistics.median(batched) / batch, "singles": statistics.median(singles) / batch,
        "scorers": others,
    }  # fmt: skip


def scorer_costs(
    acts: torch.Tensor, rows: torch.Tensor, model: str, layer: int
) -> dict[str, float]:
    """Seconds per decision of every other scorer kind (median of 50), on this decision's rows."""
    from monitors.failure import FailurePredictor
    from monitors.probe import LinearProbeScorer
    from monitors.scorers import make_scorer
    from monitors.signals import SignalScorer

    g = torch.Generator().manual_seed(0)
    x = acts.float()
    n, d = x.shape

    def noisy(base: torch.Tensor) -> torch.Tensor:
        return base.float() + 0.1 * base.float().std() * torch.randn(base.shape, generator=g)

    fit_rows = [noisy(x) for _ in range(max(2, -(-2 * d // n)))]  # >= 2d rows: a full covariance
    out: dict[str, float] = {}
    cpu = torch.device("cpu")
    for kind in ("mahalanobis", "pca"):
        s = make_scorer(kind, model=model, layer=layer).fit(fit_rows)
        s.score(x)
        out[kind] = statistics.median(timed(lambda s=s: s.score(x), cpu, 50))
    probe = LinearProbeScorer(n_image_tokens=n, model=model, layer=layer).fit(
        [noisy(rows) for _ in range(8)], [noisy(rows) + 1.0 for _ in range(8)]
    )
    out["probe"] = statistics.median(timed(lambda: probe.score(rows.float()), cpu, 50))
    episodes = [[noisy(x) for _ in range(6)] for _ in range(8)]
    for arch in ("mlp", "lstm"):
        f = FailurePredictor(arch=arch, epochs=5, model=model, layer=layer).fit_episodes(
            episodes, [i % 2 == 0 for i in range(8)]
        )

        def step(f: FailurePredictor = f) -> None:
            state = f.new_state()
            state.pooled = [f.pool(x)] * 24  # the history of an episode so far
            f.score_step(x, state)

        out[f"failure-{arch}"] = statistics.median(timed(step, cpu, 50))
    signal = SignalScorer("action_entropy").fit([x])
    out["signals"] = statistics.median(
        timed(lambda: signal.score_signals({"action_entropy": 0.3}), cpu, 50)
    )
    return out


def forward_flops(backend: VLMBackend, seq_len: int) -> float:
    """Multiply-adds × 2 of one Idefics3 decision forward (weights × tokens through them)."""
    inner = backend.model.model
    vcfg = backend.model.config.vision_config
    patches = (vcfg.image_size // vcfg.patch_size) ** 2

    def n(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    vision = n(inner.vision_model) * patches
    text = (n(inner.text_model) - n(inner.text_model.embed_tokens)) * seq_len
    head = n(backend.model.lm_head) * seq_len  # logits at every position
    return 2.0 * (vision + n(inner.connector) * patches // 9 + text + head)


def sae_flops(sae: Any, n_tokens: int) -> float:
    """Multiply-adds × 2 of the SAE's dense encoder on `n_tokens` rows (decoding k rows is small)."""
    return 2.0 * n_tokens * sae.config.d_in * sae.config.n_latents


def table(results: dict[str, dict], batch: int) -> Table:
    """The figures of every scale side by side."""
    t = Table(title="Decision cost: tiny vs reference scale (one frame per decision unless noted)")
    t.add_column("")
    for name in results:
        t.add_column(name, justify="right")

    def ms(x: float) -> str:
        return f"{x * 1e3:,.1f} ms" if x < 10 else f"{x:,.2f} s"

    def share(part: float, whole: float) -> str:
        return f"{100 * part / whole:.3f}%"

    rows = [
        ("parameters", lambda r: f"{r['params'] / 1e6:,.1f} M"),
        ("text width d / tap layer", lambda r: f"{r['d']} / {r['layer']} of {r['n_layers']}"),
        ("image tokens per frame", lambda r: str(r["image_tokens"])),
        ("decision latency (median)", lambda r: ms(r["decision"])),
        ("  fastest – slowest", lambda r: f"{ms(min(r['decision_runs']))} – {ms(max(r['decision_runs']))}"),
        ("peak memory of a decision (weights incl.)", lambda r: f"{r['peak_gib']:.2f} GiB"),
        ("tap hook, per decision", lambda r: f"{ms(r['tap'])} ({share(r['tap'], r['decision'])})"),
        ("  decision with tap (median)", lambda r: ms(r["tapped"])),
        ("SAE", lambda r: r["sae"]),
        ("SAE scoring (SARM), per decision", lambda r: ms(r["score"])),
        ("  share of the decision forward", lambda r: share(r["score"], r["decision"])),
        ("  share of its FLOPs (estimate)", lambda r: f"{100 * r['flop_share']:.3f}%"),
        ("SAE scoring, float32 encoder", lambda r: f"{ms(r['score_f32'])} ({share(r['score_f32'], r['decision'])})"),
        *[(f"{k} scoring, per decision", lambda r, k=k: f"{ms(r['scorers'][k])} ({share(r['scorers'][k], r['decision'])})")
          for k in ("mahalanobis", "pca", "probe", "failure-mlp", "failure-lstm", "signals")],
        ("SAE steering hook, per decision", lambda r: f"{ms(r['steer'])} ({share(r['steer'], r['decision'])})"),
        ("  decision with steering (median)", lambda r: ms(r["steered"])),
        (f"batched ×{batch}: per frame", lambda r: ms(r["batched"])),
        (f"one-by-one ×{batch}: per frame", lambda r: ms(r["singles"])),
        ("  batching speed-up", lambda r: f"{r['singles'] / r['batched']:.2f}×"),
    ]  # fmt: skip
    for label, fmt in rows:
        t.add_row(label, *[fmt(r) for r in results.values()])
    return t


def env_frames(n: int, size: int = 384) -> np.ndarray:
    """`n` camera frames of the env (seeds 0..n-1)."""
    from envs import FrankaPickEnv

    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=size)
    frames = []
    for seed in range(n):
        env.reset(seed=seed)
        frames.append(env.render())
    env.close()
    return np.stack(frames)


def main(argv: list[str] | None = None) -> None:
    """Parse options, measure each scale, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--dtype", default="bfloat16", help="float32 | bfloat16 | float16")
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed decisions per figure (reference)"
    )
    parser.add_argument(
        "--tiny-repeats", type=int, default=20, help="timed decisions per figure (tiny)"
    )
    parser.add_argument(
        "--tiny-dtype", default="float32", help="the tiny model's dtype (its own: float32)"
    )
    parser.add_argument("--batch", type=int, default=4, help="frames of the batched decision")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--scales", default="tiny,reference", help="tiny, reference or both")
    args = parser.parse_args(argv)
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    scales = [s for s in args.scales.split(",") if s]
    if not scales or set(scales) - {"tiny", "reference"}:
        raise ValueError(f"--scales {args.scales!r}: expected tiny, reference or both")
    for name in ("repeats", "tiny_repeats", "batch", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    tiny_dtype = resolve_dtype(args.tiny_dtype)
    torch.set_num_threads(args.threads)
    console = Console()
    console.print(f"device {device}; dtype: reference {dtype}, tiny {tiny_dtype}; {args.threads} "
                  f"threads; repeats: reference {args.repeats}, tiny {args.tiny_repeats}")  # fmt: skip
    frames = env_frames(max(args.batch, 1))
    results = {}
    for scale in scales:
        t0 = time.perf_counter()
        if scale == "tiny":
            backend = load_vlm("tiny", device=str(device), dtype=str(tiny_dtype).split(".")[1])
            layer, repeats = default_tap_layer(backend.n_layers), args.tiny_repeats
        else:
            backend = reference_backend(device, dtype)
            layer, repeats = REFERENCE_LAYER, args.repeats
        console.print(f"{scale}: built in {time.perf_counter() - t0:.1f} s; measuring ...")
        label = f"{scale}, {str(backend.dtype).split('.')[1]}"
        results[label] = measure(backend, layer, frames, repeats, args.batch)
        del backend
    console.print(table(results, args.batch))


if __name__ == "__main__":
    main()
