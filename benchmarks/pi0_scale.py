"""π0 decision cost at π0-base's scale, side by side with a small random π0, in one run.

π0-base's dimensions (PI0Config's defaults, as transformers ships them for lerobot/pi0_base): a
PaliGemma VLM (SigLIP so400m/14 at 224²: 1152 wide, 27 layers, 256 image tokens; Gemma 2B:
2048 wide, 18 layers, 8 heads, 1 key-value head of 256, MLP 16384, vocabulary 257152) and a
Gemma action expert (1024 wide, 18 layers, MLP 4096), a 50-step chunk denoised in 10 steps:
about 3.3B parameters. Built here from the config class with random weights in the target dtype
(nothing is downloaded: cost does not depend on the weights), wrapped by physteer's PI0Backend
with identity normalisation statistics.

For each model, on the same env frame:
- decision latency: `PI0Backend.sample` (inputs, prefix, every denoising step), median;
- peak memory: resident set size (CPU) or CUDA peak allocation during a decision;
- taps: the ResidualTap hook's own time per decision, on the VLM stream (2/3 depth) and on the
  action expert's stream (the same layer index; called once per denoising step);
- SAE scoring on each stream: the SARM scorer (`sae.default_config(d)`) on the tap's tokens,
  per decision, as a share of the decision (target ≤ 1%), and Mahalanobis and PCA beside it.

    nice -n 10 python benchmarks/pi0_scale.py [--device cpu] [--dtype bfloat16] [--repeats 2]
        [--threads 2] [--scales small,base]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from reference_scale import PeakMemory, TimedTap, build_random, env_frames, timed
from rich.console import Console
from rich.table import Table

from agents.backend import resolve_device, resolve_dtype
from agents.vlm_agent import default_tap_layer


def base_backend(device: torch.device, dtype: torch.dtype, small: bool) -> object:
    """A PI0Backend of π0-base's dimensions (PI0Config's defaults), or a small one for scale."""
    from transformers import PI0Config, PI0ForConditionalGeneration

    from agents.pi0_build import build_pi0, identity_stats
    from agents.pi0_model import PI0Backend
    from agents.tiny_families import build_tokenizer

    if small:
        folder = build_pi0(tempfile.mkdtemp() + "/pi0", hidden=128, expert_hidden=64, layers=4, chunk=50,
                           action_dim=32, steps=10, image_size=224, patch=14)  # fmt: skip
        from agents.pi0_model import load_pi0

        return load_pi0(folder, str(device), str(dtype).split(".")[1])
    tokenizer = build_tokenizer(["<bos>", "<eos>", "<image>"], "<bos>", "<eos>", "<pad>")
    config = PI0Config()  # π0-base: every size is the class default
    config.vlm_config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    model = build_random(PI0ForConditionalGeneration, config, device, dtype)
    return PI0Backend(model, tokenizer, identity_stats(), name="π0-base (random weights)")


def scorers_on(rows: torch.Tensor, name: str, layer: int) -> dict[str, float]:
    """Seconds per decision of the SAE, Mahalanobis and PCA scorers on `rows` (median of 20)."""
    from monitors.sae_scorer import SAEReconstructionScorer
    from monitors.scorers import make_scorer
    from sae import MatryoshkaSAE, default_config

    x, cpu = rows.float().cpu(), torch.device("cpu")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sae = MatryoshkaSAE(default_config(x.shape[1])).eval()
    out = {"sae": SAEReconstructionScorer(sae=sae, model=name, layer=layer)}
    g = torch.Generator().manual_seed(0)
    fit = [
        x + 0.1 * x.std() * torch.randn(x.shape, generator=g)
        for _ in range(max(2, -(-2 * x.shape[1] // len(x))))
    ]
    for kind in ("mahalanobis", "pca"):
        out[kind] = make_scorer(kind, model=name, layer=layer).fit(fit)
    for s in out.values():
        s.score(x)  # warm-up
    return {k: statistics.median(timed(lambda s=s: s.score(x), cpu, 20)) for k, s in out.items()}


def measure(b: object, frame: np.ndarray, repeats: int) -> dict:
    """Decision, memory, tap and scorer costs of one π0 (see the module docstring)."""
    device = b.device
    args = ([frame], ["Put the red object in the bin."], np.zeros((1, 17), np.float32),
            torch.zeros(1, b.chunk_size, b.action_dim))  # fmt: skip
    b.sample(*args)  # warm-up
    plain = timed(lambda: b.sample(*args), device, repeats)
    with PeakMemory(device) as mem:
        b.sample(*args)
    out = {"params": sum(p.numel() for p in b.model.parameters()), "decision": statistics.median(plain),
           "decision_runs": plain, "peak_gib": mem.gib, "steps": b.default_steps, "chunk": b.chunk_size}  # fmt: skip
    for stream, view in (("vlm", b), ("expert", b.expert)):
        layer = min(
            default_tap_layer(len(b.model.model.vlm.language_model.layers)), view.n_layers - 1
        )
        tap = TimedTap(layer).attach(view)
        b.sample(*args)
        tap.hook_times = []
        timed(lambda: b.sample(*args), device, 1)
        rows = tap.latest_batch[0]
        tap.remove()
        out[stream] = {"layer": layer, "d": view.hidden_size, "rows": len(rows), "tap": sum(tap.hook_times),
                       **scorers_on(rows, view.name, layer)}  # fmt: skip
    return out


def table(results: dict[str, dict]) -> Table:
    """One row per model and stream: decision, memory, each cost as a share of the decision."""
    t = Table(title="π0 decision cost (shares of one decision: prefix + every denoising step)")
    for col in ("model", "params", "decision s", "peak GiB", "stream (layer, d, rows)", "tap %", "SAE %",
                "Mahalanobis %", "PCA %"):  # fmt: skip
        t.add_column(col, justify="right" if col != "model" else "left")
    for label, r in results.items():
        for stream in ("vlm", "expert"):
            s, dec = r[stream], r["decision"]
            t.add_row(label, f"{r['params'] / 1e6:,.0f}M", f"{dec:.3f}", f"{r['peak_gib']:.2f}",
                      f"{stream} ({s['layer']}, {s['d']}, {s['rows']})", f"{100 * s['tap'] / dec:.3f}",
                      f"{100 * s['sae'] / dec:.3f}", f"{100 * s['mahalanobis'] / dec:.3f}",
                      f"{100 * s['pca'] / dec:.3f}")  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> None:
    """Parse options, measure each scale, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument(
        "--dtype", default="bfloat16", help="float32 | bfloat16 | float16 (π0-base)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed decisions per model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--scales", default="small,base", help="small, base or both")
    args = parser.parse_args(argv)
    scales = [s for s in args.scales.split(",") if s]
    if not scales or set(scales) - {"small", "base"}:
        raise ValueError(f"--scales {args.scales!r}: expected small, base or both")
    if args.repeats < 1 or args.threads < 1:
        raise ValueError(f"--repeats {args.repeats}, --threads {args.threads}: each must be >= 1")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    torch.set_num_threads(args.threads)
    console = Console()
    console.print(
        f"device {device}; dtype {dtype} (small: float32); {args.threads} threads; repeats {args.repeats}"
    )
    frame = env_frames(1)[0]
    results = {}
    for scale in scales:
        t0 = time.perf_counter()
        b = base_backend(device, dtype, small=scale == "small")
        console.print(f"{scale}: built in {time.perf_counter() - t0:.1f} s; measuring ...")
        results[f"{scale}, {str(next(b.model.parameters()).dtype).split('.')[1]}"] = measure(
            b, frame, args.repeats
        )
        del b
    console.print(table(results))


if __name__ == "__main__":
    main()
