"""MatryoshkaSAE: config validation, top-k, prefixes, sparse kernels vs dense, persistence."""

import json

import pytest
import torch
from sae_synthetic import planted_dictionary

from sae import MatryoshkaSAE, SAEConfig, TrainConfig, default_config, train_sae


def small_config(**kw):
    base = dict(d_in=16, n_latents=64, k=4, prefixes=(8, 32, 64))
    base.update(kw)
    return SAEConfig(**base)


@pytest.mark.parametrize(
    "prefixes, match",
    [((8, 8, 64), "strictly increasing"), ((32, 8, 64), "strictly increasing"),
     ((8, 32, 128), "exceeds n_latents=64"), ((0, 32, 64), "positive"), ((-8, 64), "positive")],
)  # fmt: skip
def test_bad_prefixes_raise_naming_them(prefixes, match):
    with pytest.raises(ValueError, match=match) as info:
        small_config(prefixes=prefixes)
    assert str(prefixes) in str(info.value)


def test_other_config_validation():
    with pytest.raises(ValueError, match="k=65"):
        small_config(k=65)
    with pytest.raises(ValueError, match="prefix_weights has 2 entries"):
        small_config(prefix_weights=(1.0, 2.0))
    cfg = small_config(prefix_weights=(1, 1, 2))
    assert cfg.prefix_weights == (0.25, 0.25, 0.5)
    assert small_config(prefixes=()).prefixes == (64,)


def test_default_config_scales_reference():
    ref = default_config(2048)
    assert (ref.n_latents, ref.k, ref.prefixes) == (8192, 16, (64, 256, 1024, 4096, 8192))
    small = default_config(64)
    assert small.n_latents == 256 and small.prefixes[-1] == 256 and small.k <= 16
    assert default_config(64, n_latents=512).prefixes[-1] == 512


def test_topk_gives_exactly_k_nonzeros():
    x, _ = planted_dictionary(512, d=16, n_atoms=32)
    torch.manual_seed(0)
    sae = MatryoshkaSAE(small_config())
    sae.init_from_data(x)
    z = sae.encode(x)
    assert z.shape == (512, 64)
    assert ((z != 0).sum(1) == 4).all()
    assert (z >= 0).all()
    # The kept values are the k largest pre-activations.
    xn = (x - sae.x_mean) / sae.x_scale
    pre = (xn - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    kth = pre.topk(4, dim=1).values[:, -1:]
    assert torch.allclose(z[z != 0], pre[z != 0]) and (pre[z != 0].view(512, 4) >= kth - 1e-6).all()


def test_sparse_gradients_match_dense_reference():
    torch.manual_seed(1)
    cfg = small_config(dead_steps_threshold=1)
    sae = MatryoshkaSAE(cfg).double()
    x = torch.randn(32, 16, dtype=torch.float64)
    sae.init_from_data(x)
    sae.steps_since_fired.fill_(5)
    sae.steps_since_fired[:10] = 0  # latents 10.. are dead, so AuxK is active
    sae.train()
    loss, _ = sae.loss(x)
    loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    # Dense reference of the same loss written with plain matmuls.
    xn = (x - sae.x_mean) / sae.x_scale
    pre = (xn - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    z = torch.zeros_like(pre).scatter(1, pre.topk(4, dim=1).indices, 1.0) * pre
    z = z.relu()
    den = ((xn - xn.mean(0)) ** 2).sum()
    ref = sum(
        ((xn - sae.b_dec - z[:, :m] @ sae.W_dec[:m]) ** 2).sum() / den / 3 for m in cfg.prefixes
    )
    resid = (xn - sae.b_dec - z @ sae.W_dec).detach()
    dead = torch.arange(64) >= 10
    aidx = pre.masked_fill(~dead, float("-inf")).topk(cfg.aux_k, dim=1).indices
    za = (torch.zeros_like(pre).scatter(1, aidx, 1.0) * pre).relu()
    ref = (
        ref
        + cfg.aux_coeff
        * ((resid - za @ sae.W_dec) ** 2).sum()
        / ((resid - resid.mean(0)) ** 2).sum()
    )
    assert abs(ref.item() - loss.item()) < 1e-10
    ref.backward()
    for name, p in sae.named_parameters():
        assert torch.allclose(p.grad, sparse_grads[name], atol=1e-10), name


def test_decode_matches_dense_and_prefix_uses_first_m():
    torch.manual_seed(2)
    sae = MatryoshkaSAE(small_config())
    x = torch.randn(20, 16)
    sae.init_from_data(x)
    z = sae.encode(x)
    dense = (sae.b_dec + z @ sae.W_dec) * sae.x_scale + sae.x_mean
    assert torch.allclose(sae.decode(z), dense, atol=1e-5)
    assert torch.allclose(sae(x), dense, atol=1e-5)
    z_cut = z.clone()
    z_cut[:, 8:] = 0
    assert torch.allclose(sae.decode_prefix(z, 8), sae.decode(z_cut), atol=1e-5)
    with pytest.raises(ValueError, match="got 65"):
        sae.decode_prefix(z, 65)
    with pytest.raises(ValueError, match=r"\(batch, 16\), got \(3, 15\)"):
        sae.encode(torch.randn(3, 15))


def test_reconstruction_improves_with_each_prefix():
    x, _ = planted_dictionary(6000, d=32, n_atoms=64)
    cfg = SAEConfig(d_in=32, n_latents=128, k=4, prefixes=(8, 32, 128))
    sae = train_sae(
        x, cfg, TrainConfig(lr=3e-3, steps=300, batch_size=256, warmup_steps=20), progress=False
    ).sae
    with torch.no_grad():
        errs = [float(((x - r) ** 2).sum()) for r in sae.prefix_reconstructions(x)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.3 * errs[0]


def test_batch_topk_mean_l0_and_threshold():
    x, _ = planted_dictionary(4000, d=16, n_atoms=32)
    cfg = SAEConfig(d_in=16, n_latents=64, k=4, prefixes=(16, 64), batch_topk=True)
    sae = train_sae(
        x, cfg, TrainConfig(lr=3e-3, steps=150, batch_size=200, warmup_steps=10), progress=False
    ).sae
    assert float(sae.threshold) > 0
    sae.train()
    code = sae.encode_sparse(x[:200])
    assert code.rows.numel() == 4 * 200  # exactly k * batch over the batch
    sae.eval()
    mean_l0 = float((sae.encode(x) != 0).sum(1).float().mean())
    assert 1.0 < mean_l0 < 12.0  # the learned threshold gives roughly k on average


def test_save_load_roundtrip_and_metadata(tmp_path):
    torch.manual_seed(3)
    sae = MatryoshkaSAE(small_config())
    x = torch.randn(50, 16)
    sae.init_from_data(x)
    sae.save(tmp_path / "m", metadata={"model": "tiny", "layer": 3, "d": 16})
    loaded = MatryoshkaSAE.from_pretrained(tmp_path / "m", expected_d_in=16)
    assert torch.equal(loaded(x), sae(x))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["metadata"]["layer"] == 3


def test_load_d_in_mismatch_names_both_sizes(tmp_path):
    MatryoshkaSAE(small_config()).save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"d_in=16.*d=2048"):
        MatryoshkaSAE.from_pretrained(tmp_path / "m", expected_d_in=2048)


def test_load_shape_mismatch_names_tensor(tmp_path):
    MatryoshkaSAE(small_config()).save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["n_latents"], cfg["prefixes"] = 128, [8, 32, 128]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError, match=r"W_enc: checkpoint shape \(64, 16\) vs config shape \(128, 16\)"
    ):
        MatryoshkaSAE.from_pretrained(tmp_path / "m")


def test_nested_residual_loss_gradient_matches_autograd():
    from sae._sparse import NestedResidualLoss

    g = torch.Generator().manual_seed(0)
    inc = torch.randn(6, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    e0 = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: NestedResidualLoss.apply(a, b, 7.0)[0], (inc, e0))
    nmse, resid = NestedResidualLoss.apply(inc, e0, 7.0)
    ref = [e0 - inc[:, : p + 1].sum(1) for p in range(3)]
    assert torch.allclose(nmse, torch.stack([(r**2).sum() / 7.0 for r in ref]))
    assert torch.allclose(resid, ref[-1]) and not resid.requires_grad
