"""The SAE's lean eval-mode `reconstruction_error` (the SARM score) matches encode -> decode."""

from __future__ import annotations

import pytest
import torch

from monitors.sae_scorer import SAEReconstructionScorer
from monitors.scorers import all_finite
from sae import MatryoshkaSAE, row_topk
from sae.config import SAEConfig

D = 32


def make_sae(n_latents: int, k: int, batch_topk: bool = False, seed: int = 0) -> MatryoshkaSAE:
    """An SAE with untied random weights, biases and a fitted normalisation (not an identity)."""
    torch.manual_seed(seed)
    prefixes = (n_latents // 4, n_latents) if n_latents >= 8 else ()
    sae = MatryoshkaSAE(SAEConfig(d_in=D, n_latents=n_latents, k=k, prefixes=prefixes,
                                  batch_topk=batch_topk))  # fmt: skip
    with torch.no_grad():
        sae.W_enc.normal_(0, D**-0.5)
        sae.b_enc.normal_(0, 0.3)
    sae.init_from_data(torch.randn(500, D) * 3 + 1, median=False)
    return sae.eval()


def inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) * 3 + 1


@torch.no_grad()
def reference(sae: MatryoshkaSAE, x: torch.Tensor) -> torch.Tensor:
    """The error through the SAE's general sparse path: encode, then decode every latent."""
    xn = (x - sae.x_mean) / sae.x_scale
    recon = (sae.decode(sae.encode(x)) - sae.x_mean) / sae.x_scale
    return ((xn - recon) ** 2).sum(1) / sae.config.d_in


@pytest.mark.parametrize(
    "n, k", [(512, 16), (256, 16), (96, 4), (100, 7), (64, 32), (8, 3), (16, 16)]
)
def test_row_topk_selects_the_same_entries_as_topk(n, k):
    for seed in range(3):
        pre = torch.randn(81, n, generator=torch.Generator().manual_seed(seed))
        vals, cols = row_topk(pre, k)
        ref_vals, ref_cols = pre.topk(k, dim=1)
        torch.testing.assert_close(cols.sort(1).values, ref_cols.sort(1).values, rtol=0, atol=0)
        torch.testing.assert_close(vals.sort(1).values, ref_vals.sort(1).values, rtol=0, atol=0)
        torch.testing.assert_close(pre.gather(1, cols), vals, rtol=0, atol=0)


@pytest.mark.parametrize("n_latents, k", [(512, 16), (256, 16), (100, 5), (8, 8)])
def test_topk_sae_error_matches_the_sae(n_latents, k):
    sae = make_sae(n_latents, k)
    for seed, n in ((0, 81), (1, 81), (2, 1), (3, 7)):
        x = inputs(n, seed)
        torch.testing.assert_close(sae.reconstruction_error(x), reference(sae, x),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("threshold", [0.0, 0.4, 1e9])  # 1e9: no latent fires at all
def test_batch_topk_sae_with_a_learned_threshold_matches_the_sae(threshold):
    sae = make_sae(256, 16, batch_topk=True)
    sae.threshold.fill_(threshold)
    for seed in range(3):
        x = inputs(81, seed)
        out = sae.reconstruction_error(x)
        torch.testing.assert_close(out, reference(sae, x), rtol=1e-5, atol=1e-6)
    if threshold == 0.4:  # a variable number of latents per token: not a fixed-k code
        counts = (sae.encode(x) > 0).sum(1)
        assert counts.min() != counts.max()


def test_batch_topk_sae_before_a_threshold_is_learned_uses_topk():
    sae = make_sae(256, 16, batch_topk=True)
    assert float(sae.threshold) < 0
    x = inputs(81, 5)
    torch.testing.assert_close(sae.reconstruction_error(x), reference(sae, x),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_sae_in_training_mode_selects_over_the_batch():
    sae = make_sae(256, 16, batch_topk=True).train()
    x = inputs(81, 6)
    torch.testing.assert_close(sae.reconstruction_error(x), reference(sae, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_scorer_scores_with_the_fast_path(aggregate):
    sae = make_sae(512, 16)
    scorer = SAEReconstructionScorer(sae=sae, aggregate=aggregate)
    x = inputs(81, 7) + 2.0
    ref = reference(sae, x)
    torch.testing.assert_close(scorer.token_scores(x), ref, rtol=1e-5, atol=1e-6)
    expected = float(ref.mean() if aggregate == "mean" else ref.max())
    assert scorer.score(x) == pytest.approx(expected, rel=1e-5)


def test_all_finite():
    x = torch.randn(81, D)
    assert all_finite(x)
    assert all_finite(torch.full((4, 4), 3e38))  # the sum overflows; every value is finite
    assert all_finite(torch.arange(10))
    assert all_finite(x.bfloat16())
    for bad in (float("nan"), float("inf"), float("-inf")):
        y = x.clone()
        y[40, 3] = bad
        assert not all_finite(y)
    y = x.clone()
    y[0, 0], y[1, 1] = float("inf"), float("-inf")  # the sum is NaN, not inf
    assert not all_finite(y)


def test_an_sae_subclass_keeps_its_own_error():
    class Doubled(MatryoshkaSAE):
        def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().reconstruction_error(x)

    sae = make_sae(64, 4)
    doubled = Doubled(sae.config)
    doubled.load_state_dict(sae.state_dict())
    doubled.eval()
    x = inputs(9, 8)
    scores = SAEReconstructionScorer(sae=doubled).token_scores(x)
    torch.testing.assert_close(scores, 2 * reference(sae, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_topk", [False, True])
def test_a_bfloat16_encoder_scores_close_to_float32_and_is_recorded(batch_topk, tmp_path):
    from monitors.scorers import load_scorer

    sae = make_sae(256, 16, batch_topk=batch_topk)
    if batch_topk:
        sae.threshold.fill_(0.5)
    x = inputs(200, 5)
    full = sae.reconstruction_error(x)
    fast = sae.reconstruction_error(x, torch.bfloat16)
    assert fast.dtype == torch.float32 and not torch.equal(fast, full)  # a different product
    assert torch.corrcoef(torch.stack([full, fast]))[0, 1] > 0.99
    assert ((fast - full).abs() / full).median() < 0.05
    scorer = SAEReconstructionScorer(sae=sae, encode_dtype="bfloat16")
    scorer.fit([x])
    with torch.inference_mode():  # as the scorer runs (the bfloat16 kernel may differ outside it)
        fast = sae.reconstruction_error(x, torch.bfloat16)
    assert scorer.score(x) == pytest.approx(float(fast.mean()), rel=1e-6)
    scorer.save(tmp_path / "s")
    assert load_scorer(tmp_path / "s").encode_dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"encode_dtype='float16'.*'float32', 'bfloat16'"):
        SAEReconstructionScorer(encode_dtype="float16")


def test_auto_encodes_in_bfloat16_only_where_the_sae_is_wide(monkeypatch):
    import monitors.sae_scorer as scorer_module
    from monitors.sae_scorer import AUTO_BFLOAT16_MIN_WIDTH, encode_dtype_for
    from sae import default_config

    assert SAEReconstructionScorer().encode_dtype == "auto"  # the default
    monkeypatch.setattr(scorer_module, "cpu_has_bfloat16", lambda: False)
    assert encode_dtype_for("auto", AUTO_BFLOAT16_MIN_WIDTH) is None  # emulated: slower
    assert encode_dtype_for("bfloat16", D) == torch.bfloat16  # asked for, it is used anyway
    monkeypatch.setattr(scorer_module, "cpu_has_bfloat16", lambda: True)
    assert encode_dtype_for("auto", D) is None and encode_dtype_for("float32", 4096) is None
    assert encode_dtype_for("auto", AUTO_BFLOAT16_MIN_WIDTH) == torch.bfloat16
    narrow = make_sae(64, 4)  # a tiny model's width: float32, bit for bit
    x = inputs(9, 3)
    with torch.inference_mode():
        assert torch.equal(SAEReconstructionScorer(sae=narrow).token_scores(x),
                           narrow.reconstruction_error(x))  # fmt: skip
    torch.manual_seed(0)
    wide = MatryoshkaSAE(default_config(AUTO_BFLOAT16_MIN_WIDTH)).eval()
    xw = torch.randn(6, AUTO_BFLOAT16_MIN_WIDTH)
    with torch.inference_mode():
        fast = wide.reconstruction_error(xw, torch.bfloat16)
        assert torch.equal(SAEReconstructionScorer(sae=wide).token_scores(xw), fast)
        assert not torch.equal(fast, wide.reconstruction_error(xw))
