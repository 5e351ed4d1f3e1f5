"""The SAE anomaly scorer: the normalised reconstruction error of a Matryoshka SAE, aggregated
over a decision's tokens (the interface and the baselines beside it: monitors.scorers).

    scorer = SAEReconstructionScorer(model="tiny", layer=2).fit(clean_tokens)   # trains the SAE
    scorer.score(tap.image_activations)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from monitors.scorers import Scorer, register_scorer

#: The dtypes the encoder's product may run in ("auto": see `encode_dtype_for`).
ENCODE_DTYPES = {"auto": None, "float32": None, "bfloat16": torch.bfloat16}
#: "auto" computes the encoder's product in bfloat16 from this input width on: there the product
#: is the scorer's whole cost (SmolVLM-Instruct's 2048-wide layer, 81 image tokens: 1.07% of a
#: CPU decision in float32, 0.33% in bfloat16; benchmarks/reference_scale.py), and models that
#: wide run in bfloat16 themselves, so their activations carry no more precision than the product
#: keeps. Narrower SAEs (the tiny models': 64-128 wide) stay float32, where the product is cheap,
#: and so does a CPU without native bfloat16 (no AVX512-BF16 or AMX), where it would be slower.
AUTO_BFLOAT16_MIN_WIDTH = 1024


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles; scores are
    computed on the CPU)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def encode_dtype_for(encode_dtype: str, d_in: int) -> torch.dtype | None:
    """The torch dtype of the encoder's product (None: the SAE's own float32) for a setting."""
    if encode_dtype == "auto":
        wide = d_in >= AUTO_BFLOAT16_MIN_WIDTH
        return torch.bfloat16 if wide and cpu_has_bfloat16() else None
    return ENCODE_DTYPES[encode_dtype]


@register_scorer
class SAEReconstructionScorer(Scorer):
    """Normalised reconstruction error of a Matryoshka SAE (`MatryoshkaSAE.reconstruction_error`).

    Args:
        sae: a trained sae.MatryoshkaSAE; None ⇒ `fit` trains one on the clean activations.
        steps, batch_size, lr, seed: training of that SAE (sae.train_sae).
        sae_overrides: SAEConfig fields replacing sae.default_config(d) (e.g. n_latents, k).
        encode_dtype: "auto" (bfloat16 for SAEs at least AUTO_BFLOAT16_MIN_WIDTH wide on a CPU
            with native bfloat16, float32 otherwise), "float32", or "bfloat16" to compute the encoder's product (the scorer's
            cost) in bfloat16: several times faster on CPUs with AMX and on GPUs, the error
            still summed in float32; scores differ from float32's by bfloat16's rounding, so
            calibrate with the dtype you score with (a saved scorer keeps its setting).
        aggregate, model, layer: as in Scorer.
    """

    kind = "sae"

    def __init__(
        self,
        sae: Any = None,
        steps: int = 600,
        batch_size: int = 256,
        lr: float = 2e-3,
        seed: int = 0,
        sae_overrides: dict[str, Any] | None = None,
        encode_dtype: str = "auto",
        aggregate: str = "mean",
        model: str | None = None,
        layer: int | None = None,
    ) -> None:
        super().__init__(aggregate, model, layer)
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an int >= 1")
        if not (math.isfinite(float(lr)) and lr > 0):
            raise ValueError(f"lr={lr!r}: expected a positive number")
        if encode_dtype not in ENCODE_DTYPES:
            raise ValueError(f"encode_dtype={encode_dtype!r}: choose one of {list(ENCODE_DTYPES)}")
        self.encode_dtype = encode_dtype
        self.sae = sae
        self.steps, self.batch_size, self.lr, self.seed = steps, batch_size, float(lr), int(seed)
        self.sae_overrides = dict(sae_overrides or {})
        if sae is not None:
            self.sae = sae.eval()
            self.d = int(sae.config.d_in)

    def _fit(self, x: torch.Tensor) -> None:
        from sae import TrainConfig, default_config, train_sae

        if self.sae is not None:
            if int(self.sae.config.d_in) != x.shape[1]:
                raise ValueError(
                    f"the SAE reads d={self.sae.config.d_in} but the activations have d={x.shape[1]}"
                )
            return
        config = default_config(int(x.shape[1]), **self.sae_overrides)
        train = TrainConfig(
            lr=self.lr,
            steps=self.steps,
            batch_size=min(self.batch_size, x.shape[0]),
            warmup_steps=min(50, self.steps // 10),
            seed=self.seed,
            init_rows=min(4096, x.shape[0]),
        )
        self.sae = train_sae(x, config, train, progress=False).sae.eval()

    @torch.inference_mode()
    def _token_scores(self, x: torch.Tensor) -> torch.Tensor:
        dtype = encode_dtype_for(self.encode_dtype, int(self.sae.config.d_in))
        if dtype is None:  # (an SAE subclass may not take the argument)
            return self.sae.reconstruction_error(x).float()
        return self.sae.reconstruction_error(x, dtype).float()

    def _params(self) -> dict[str, Any]:
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "sae_overrides": self.sae_overrides, "encode_dtype": self.encode_dtype}  # fmt: skip

    def _save_extra(self, directory: Path) -> None:
        self.sae.save(directory / "sae", metadata=self.provenance())

    def _restore(self, tensors: dict[str, torch.Tensor], directory: Path) -> None:
        from sae import MatryoshkaSAE

        self.sae = MatryoshkaSAE.from_pretrained(directory / "sae", expected_d_in=self.d).eval()
