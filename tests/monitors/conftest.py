"""Fixtures for monitor tests: synthetic activations, a fake tap, a fitted scorer."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

D = 16


def synthetic(n: int, shift: float = 0.0, seed: int = 0, d: int = D) -> torch.Tensor:
    """(n × d) correlated gaussian activations; `shift` moves them off the clean manifold."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(123)) / d**0.5
    x = torch.randn(n, d, generator=g) @ mix + 1.0
    if shift:
        direction = torch.randn(d, generator=torch.Generator().manual_seed(7))
        x = x + shift * direction / direction.norm() * d**0.5
    return x


class FakeTap:
    """Anything with `.latest`: here a tensor the test sets, as an agent's forward would."""

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None
        self.n_image_tokens = 0

    def emit(self, acts: torch.Tensor) -> None:
        self.latest = acts.clone()  # a new tensor object, like a new VLM forward
        self.n_image_tokens = acts.shape[0]


class CountingScorer:
    """A scorer returning a fixed value and counting calls (or raising)."""

    def __init__(self, value: float = 0.0, exc: Exception | None = None) -> None:
        self.value, self.exc, self.calls = value, exc, 0
        self.threshold = 1.0

    def score(self, acts: torch.Tensor) -> float:
        self.calls += 1
        if self.exc is not None:
            raise self.exc
        return self.value


@pytest.fixture
def tap() -> FakeTap:
    return FakeTap()
