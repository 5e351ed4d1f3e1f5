"""Synthetic data with known structure for the sae tests."""

from __future__ import annotations

import numpy as np
import torch


def planted_dictionary(
    n: int, d: int = 32, n_atoms: int = 64, s: int = 3, noise: float = 0.01, seed: int = 0
):
    """x = sum of s random unit atoms (Zipf-like frequencies, magnitudes in [0.5, 1.5]) + noise.

    Returns (x (n, d) float32, atoms (n_atoms, d) unit rows). The generator seed is offset so
    the atoms never coincide with an SAE's random init under a small seed (torch.manual_seed(s)
    then randn would reproduce them, and "recovery" would be trivially true).
    """
    g = torch.Generator().manual_seed(987_654_321 + seed)
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    p = 1.0 / torch.arange(1, n_atoms + 1).float() ** 0.5
    idx = torch.multinomial((p / p.sum()).expand(n, -1), s, replacement=False, generator=g)
    mags = torch.rand(n, s, generator=g) + 0.5
    z = torch.zeros(n, n_atoms).scatter(1, idx, mags)
    return z @ atoms + noise * torch.randn(n, d, generator=g), atoms


def design_2x2(
    n_images: int = 160, tokens: int = 8, n_latents: int = 48, seed: int = 0, planted: bool = True
):
    """Latents over a balanced color x material design, tokens grouped in images.

    Every latent has image-level noise (tokens of one image are correlated). With `planted`:
    latent 3 = material feature (+1 on fragile in both colors), latent 5 = color feature
    (+1 on red), latent 7 = red-and-fragile only (an interaction, not a fragility feature).
    """
    rng = np.random.default_rng(seed)
    img = np.repeat(np.arange(n_images), tokens)
    color = np.array(["red", "blue"])[img % 2]
    material = np.array(["fragile", "rigid"])[(img // 2) % 2]
    n = n_images * tokens
    z = np.abs(rng.normal(size=(n, n_latents))) * (rng.random((n, n_latents)) < 0.3)
    z += np.repeat(rng.normal(size=(n_images, n_latents)) * 0.3, tokens, 0)
    if planted:
        z[:, 3] += (material == "fragile") * 1.0
        z[:, 5] += (color == "red") * 1.0
        z[:, 7] += ((color == "red") & (material == "fragile")) * 1.5
    labels = {"color": color.tolist(), "material": material.tolist(), "image_id": img.tolist()}
    return z.astype(np.float32), labels
