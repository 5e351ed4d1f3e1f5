"""Joint SAE directions (jsae-language, jsae-vision): one latent's decoder row from either side,
at the direction methods' displacement norm; bad settings refused at construction."""

from __future__ import annotations

import pytest
import torch

from steering import load_method, make_method


@pytest.fixture(scope="module")
def joint_folder(fit_data, tmp_path_factory):
    from sae.joint import JointConfig, JointSAE

    d = fit_data.acts[fit_data.layer].shape[1]
    torch.manual_seed(0)
    joint = JointSAE(JointConfig.default(d, d, expansion=2.0, alignment="contrastive"))
    joint.vision.init_from_data(fit_data.acts[fit_data.layer].float())
    joint.language.init_from_data(fit_data.acts[fit_data.layer].float())
    return joint.save(
        tmp_path_factory.mktemp("jsae"), {"model": "tiny-vla", "layer": fit_data.layer}
    ), joint


def test_each_side_adds_its_own_decoder_row_at_the_dom_norm(
    joint_folder, fit_data, vla_backend, tmp_path
):
    folder, joint = joint_folder
    dom = fit_data.dom()
    rows = {}
    for name, side in (("jsae-language", "language"), ("jsae-vision", "vision")):
        method = make_method(name, joint=str(folder), latent=3).fit(fit_data, vla_backend)
        vector = method.state["vector"]
        assert torch.allclose(vector.norm(), dom.norm(), rtol=1e-5)  # equal displacement norm
        row = joint.side(side).W_dec[3].detach()
        assert abs(float(torch.nn.functional.cosine_similarity(vector, row, dim=0))) > 0.9999
        assert float(vector @ dom) >= 0 and method.fit_info["latent"] == 3
        rows[side] = vector
        method.save(tmp_path / name)
        assert torch.equal(load_method(tmp_path / name).state["vector"], vector)
    assert not torch.allclose(rows["language"], rows["vision"])
    auto = make_method("jsae-vision", joint=str(folder)).fit(fit_data, vla_backend)
    assert (
        0 <= auto.fit_info["latent"] < joint.config.vision.n_latents
        and "latent_auroc" in auto.fit_info
    )


def test_bad_settings_are_refused_before_any_fit(joint_folder, tmp_path):
    with pytest.raises(ValueError, match="joint=''"):
        make_method("jsae-language")
    with pytest.raises(ValueError, match="joint.json"):
        make_method("jsae-vision", joint=str(tmp_path))
    with pytest.raises(ValueError, match="latent=-2"):
        make_method("jsae-vision", joint=str(joint_folder[0]), latent=-2)


def test_suppression_subtracts_each_tokens_own_code_of_the_latent(
    joint_folder, fit_data, vla_backend, tmp_path
):
    folder, joint = joint_folder
    h = fit_data.acts[fit_data.layer][:40].float()
    side = joint.side("language")
    with torch.no_grad():
        latent = int(side.encode(h).mean(0).argmax())  # the latent most active on these rows
        z = side.encode(h)[:, latent]
        row = side.W_dec[latent] * side.x_scale
    method = make_method("jsae-suppress", joint=str(folder), latent=latent, side="language")
    method.fit(fit_data, vla_backend)
    assert bool((z > 0).any())  # the latent is active on some rows: the test can fail
    edited = method.intervention(1.0).fn(h)
    torch.testing.assert_close(edited, h - z[:, None] * row)
    torch.testing.assert_close(method.intervention(0.5).fn(h), h - 0.5 * z[:, None] * row)
    with torch.no_grad():  # fully suppressed, the latent's own code of the edited rows falls
        assert float(side.encode(edited)[:, latent].abs().sum()) < float(z.abs().sum())
    method.save(tmp_path / "suppress")
    loaded = load_method(tmp_path / "suppress")
    torch.testing.assert_close(loaded.intervention(1.0).fn(h), edited)
    with pytest.raises(ValueError, match="side='audio'"):
        make_method("jsae-suppress", joint=str(folder), side="audio")
    with pytest.raises(ValueError, match=r"strength"):
        method.intervention(-0.5)
