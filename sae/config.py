"""Configuration of a Matryoshka top-k SAE and the reference-scaled default."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _pos_int(name: str, value: Any) -> int:
    """Return `value` as an int, or raise a ValueError naming `name` if it is not a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass
class SAEConfig:
    """Shape and training-time behaviour of a `MatryoshkaSAE`.

    Attributes:
        d_in: width of the activations the SAE reads.
        n_latents: dictionary size.
        k: active latents per sample (per-sample top-k), or the mean per sample (BatchTopK).
        prefixes: nested dictionary sizes, strictly increasing, the last normally `n_latents`;
            empty means a single prefix `(n_latents,)` (a plain top-k SAE).
        prefix_weights: weight of each prefix's reconstruction loss; None means uniform.
            Stored normalised to sum to 1.
        batch_topk: select the `k * batch` largest activations over the whole batch at train
            time; inference then uses a running threshold learned during training.
        aux_k: latents used by the AuxK loss that revives dead latents; None picks a power of
            two near d_in / 2 (Gao et al. 2024), capped at n_latents.
        aux_coeff: weight of the AuxK loss (Gao et al. use 1/32).
        dead_steps_threshold: a latent that has not fired for this many training steps is dead.
        threshold_momentum: EMA momentum of the BatchTopK inference threshold.
        metadata: free-form provenance saved with the model (model id, layer, d, ...).
    """

    d_in: int
    n_latents: int
    k: int
    prefixes: tuple[int, ...] = ()
    prefix_weights: tuple[float, ...] | None = None
    batch_topk: bool = False
    aux_k: int | None = None
    aux_coeff: float = 1.0 / 32.0
    dead_steps_threshold: int = 200
    threshold_momentum: float = 0.99
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Coerce list inputs to tuples and validate every field (ValueError on bad values)."""
        _pos_int("d_in", self.d_in)
        _pos_int("n_latents", self.n_latents)
        _pos_int("k", self.k)
        if self.k > self.n_latents:
            raise ValueError(f"k={self.k} must be <= n_latents={self.n_latents}")
        prefixes = tuple(self.prefixes) if self.prefixes else (self.n_latents,)
        for p in prefixes:
            if isinstance(p, bool) or not isinstance(p, int) or p <= 0:
                raise ValueError(f"prefixes must be positive integers, got {prefixes}")
        if any(b <= a for a, b in zip(prefixes, prefixes[1:], strict=False)):
            raise ValueError(f"prefixes must be strictly increasing, got {prefixes}")
        if prefixes[-1] > self.n_latents:
            raise ValueError(
                f"last prefix {prefixes[-1]} exceeds n_latents={self.n_latents} (prefixes {prefixes})"
            )
        self.prefixes = prefixes
        if self.prefix_weights is None:
            weights = tuple(1.0 / len(prefixes) for _ in prefixes)
        else:
            weights = tuple(float(w) for w in self.prefix_weights)
            if len(weights) != len(prefixes):
                raise ValueError(
                    f"prefix_weights has {len(weights)} entries but prefixes {prefixes} has {len(prefixes)}"
                )
            if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
                raise ValueError(
                    f"prefix_weights must be finite, >= 0 and not all 0, got {weights}"
                )
            total = sum(weights)
            weights = tuple(w / total for w in weights)
        self.prefix_weights = weights
        if self.aux_k is None:
            self.aux_k = min(self.n_latents, 2 ** max(0, round(math.log2(max(1, self.d_in // 2)))))
        _pos_int("aux_k", self.aux_k)
        self.aux_k = min(self.aux_k, self.n_latents)
        if not (self.aux_coeff >= 0 and math.isfinite(self.aux_coeff)):
            raise ValueError(f"aux_coeff must be finite and >= 0, got {self.aux_coeff}")
        _pos_int("dead_steps_threshold", self.dead_steps_threshold)
        if not 0.0 <= self.threshold_momentum < 1.0:
            raise ValueError(f"threshold_momentum must be in [0, 1), got {self.threshold_momentum}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["prefixes"] = list(self.prefixes)
        d["prefix_weights"] = list(self.prefix_weights or ())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        """Build a config from `to_dict` output; unknown keys raise a ValueError naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SAEConfig keys {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        d["prefixes"] = tuple(d.get("prefixes", ()))
        if d.get("prefix_weights") is not None:
            d["prefix_weights"] = tuple(d["prefix_weights"])
        return cls(**d)


# The reference run (seed methodology): 2048 -> 8192, k = 16, prefixes 64/256/1024/4096/8192.
REFERENCE_D_IN = 2048
REFERENCE_EXPANSION = 4
REFERENCE_K = 16
REFERENCE_PREFIX_FRACTIONS = (1 / 128, 1 / 32, 1 / 8, 1 / 2, 1.0)


def default_config(d_in: int, **overrides: Any) -> SAEConfig:
    """Scale the reference configuration to `d_in`.

    d_in = 2048 gives exactly the reference (8192 latents, k 16, prefixes 64/256/1024/4096/8192).
    Smaller widths keep the 4x expansion and the prefix fractions, drop prefixes smaller than 8
    (too coarse to mean anything), and shrink k to d_in / 8 (at least 4, at most 16).
    E.g. d_in = 64 -> 256 latents, k 8, prefixes (8, 32, 128, 256).
    `overrides` replace any field; prefixes follow an overridden n_latents unless given too.
    """
    _pos_int("d_in", d_in)
    n = _pos_int("n_latents", overrides.get("n_latents", REFERENCE_EXPANSION * d_in))
    prefixes = sorted({int(round(f * n)) for f in REFERENCE_PREFIX_FRACTIONS})
    prefixes = tuple(p for p in prefixes if p >= min(8, n))
    k = max(4, min(REFERENCE_K, d_in // 8))
    kwargs: dict[str, Any] = dict(d_in=d_in, n_latents=n, k=min(k, n), prefixes=prefixes)
    kwargs.update(overrides)
    return SAEConfig(**kwargs)
