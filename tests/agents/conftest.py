"""Fixtures: a randomly initialised tiny VLM saved to a temp dir and loaded like a hub model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.backend import VLMBackend, load_vlm

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def backend(tiny_dir) -> VLMBackend:
    """The random tiny model loaded through the hub code path (AutoModel/AutoProcessor)."""
    return load_vlm(str(tiny_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    """Two deterministic 384×384 RGB frames."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(2, 384, 384, 3), dtype=np.uint8)


class TinySAE(torch.nn.Module):
    """A stand-in for sae.MatryoshkaSAE: linear encoder, ReLU, linear decoder with prefixes."""

    def __init__(self, d_in: int, n_latents: int = 32, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.d_in, self.n_latents = d_in, n_latents
        self.w_enc = torch.nn.Parameter(torch.randn(d_in, n_latents, generator=g) / d_in**0.5)
        self.w_dec = torch.nn.Parameter(torch.randn(n_latents, d_in, generator=g) / n_latents**0.5)
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.w_enc)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.w_dec + self.b_dec

    def decode_prefix(self, z: torch.Tensor, m: int) -> torch.Tensor:
        return z[:, :m] @ self.w_dec[:m] + self.b_dec
