"""The native top-k kernel (sae/_topk.c): same entries as torch.topk, columns ascending, and a
clean fallback to torch when it cannot be built or the input does not suit it."""

from __future__ import annotations

import pytest
import torch

from sae import _native, row_topk


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """Build into an empty cache folder; restore the cached loader afterwards."""
    monkeypatch.setenv("PHYSTEER_CACHE", str(tmp_path))
    _native._kernel.cache_clear()
    yield tmp_path
    _native._kernel.cache_clear()


def _check(pre: torch.Tensor, k: int, vals: torch.Tensor, cols: torch.Tensor) -> None:
    want = pre.topk(k, dim=1).values.sort(dim=1).values
    assert torch.equal(vals.sort(dim=1).values, want)
    assert torch.equal(pre.gather(1, cols), vals)
    assert bool((cols.diff(dim=1) > 0).all()), "columns must be strictly ascending per row"


@pytest.mark.parametrize(
    ("B", "n", "k"), [(3000, 512, 16), (50, 37, 5), (40, 2048, 64), (9, 16, 16), (20, 100, 1)]
)
def test_native_topk_equals_torch_topk(fresh_kernel, B, n, k):
    assert _native._kernel() is not None, "gcc is on this machine: the kernel must build"
    assert list(fresh_kernel.glob("topk-*.so")), "the built library is cached"
    g = torch.Generator().manual_seed(B + n + k)
    pre = torch.randn(B, n, generator=g)
    pre[:5] = pre[:5].round()  # many exact ties
    pre[5] = 0.0
    got = _native.native_row_topk(pre, k)
    assert got is not None
    _check(pre, k, *got)
    assert torch.equal(got[1][5], torch.arange(k)), "ties go to the lowest columns"


def test_row_topk_torch_fallback_matches_native(monkeypatch):
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(300, 512, generator=g)
    native = row_topk(pre, 16)
    monkeypatch.setenv("PHYSTEER_NATIVE", "0")
    _native._kernel.cache_clear()
    try:
        assert _native.native_row_topk(pre, 16) is None
        fallback = row_topk(pre, 16)
    finally:
        monkeypatch.delenv("PHYSTEER_NATIVE")
        _native._kernel.cache_clear()
    _check(pre, 16, *fallback)
    assert torch.equal(native[1], fallback[1]) and torch.equal(native[0], fallback[0])


def test_nan_rows_and_unsuited_inputs_fall_back_to_torch():
    pre = torch.randn(10, 64)
    pre[3, 7] = float("nan")
    assert _native.native_row_topk(pre, 4) is None
    vals, cols = row_topk(pre, 4)  # torch ranks NaN first, and row_topk agrees
    assert 7 in cols[3].tolist()
    assert _native.native_row_topk(torch.randn(4, 8, dtype=torch.float64), 2) is None
    assert _native.native_row_topk(torch.randn(4, 8), 9) is None


def test_failed_build_warns_and_uses_torch(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CC", "/bin/false")
    with caplog.at_level("WARNING"):
        assert _native._kernel() is None
    assert "building the SAE top-k kernel failed" in caplog.text
    assert not list(fresh_kernel.glob("*.so")), "no half-built library is left behind"
    pre = torch.randn(64, 128)
    _check(pre, 8, *row_topk(pre, 8))
