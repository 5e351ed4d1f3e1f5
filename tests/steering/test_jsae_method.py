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
        assert (
            method.fit_info["latent"] == 3
        )  # its sign: test_rows_are_turned_by_the_latents_own_sign
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


def test_rows_are_turned_by_the_latents_own_sign(joint_folder, fit_data, vla_backend):
    """+s adds the latent where it marks fragile frames, whichever side's row is added."""
    folder, joint = joint_folder
    for latent in range(joint.config.vision.n_latents):
        method = make_method("jsae-language", joint=str(folder), latent=latent)
        try:
            method.fit(fit_data, vla_backend)
        except ValueError:  # a dead latent's zero row
            continue
        sign = 1.0 if method.fit_info["latent_auroc"] >= 0.5 else -1.0
        row = joint.side("language").W_dec[latent].detach()
        cos = float(torch.nn.functional.cosine_similarity(method.state["vector"], row, dim=0))
        assert cos == pytest.approx(sign, abs=1e-5)
    with pytest.raises(ValueError, match="latents"):
        make_method("jsae-vision", joint=str(folder), latent=10_000).fit(fit_data, vla_backend)


def test_both_sides_act_at_their_own_tokens(joint_folder, fit_data, vla_backend, tmp_path):
    from agents.interventions import AddVector

    folder, joint = joint_folder
    both = make_method("jsae-both", joint=str(folder), latent=3).fit(fit_data, vla_backend)
    edits = both.intervention(-1.5).edits
    assert [(type(e), e.positions) for e in edits] == [(AddVector, "image"), (AddVector, "text")]
    for edit, side in zip(edits, ("vision", "language"), strict=True):
        alone = make_method(f"jsae-{side}", joint=str(folder), latent=3).fit(fit_data, vla_backend)
        torch.testing.assert_close(both.state[side], alone.state["vector"])
        assert edit.scale == -1.5
    with pytest.raises(ValueError, match="fixes where it acts"):
        make_method("jsae-both", joint=str(folder), positions="text")
    loaded = load_method(both.save(tmp_path / "both"))
    torch.testing.assert_close(loaded.state["language"], both.state["language"])
    suppress = make_method("jsae-suppress", joint=str(folder), latent=3, side="both")
    suppress.fit(fit_data, vla_backend)
    maps = suppress.intervention(1.0).edits
    assert [m.positions for m in maps] == ["image", "text"]
    h = fit_data.acts[fit_data.layer][:20].float()
    for m, side in zip(maps, ("vision", "language"), strict=True):
        sae = joint.side(side)
        with torch.no_grad():
            z = sae.encode(h)[:, 3]
        torch.testing.assert_close(m.fn(h), h - z[:, None] * sae.W_dec[3].detach() * sae.x_scale)
    loaded = load_method(suppress.save(tmp_path / "suppress-both"))
    torch.testing.assert_close(loaded.intervention(1.0).edits[1].fn(h), maps[1].fn(h))
    with pytest.raises(ValueError, match="side='both'"):
        make_method("jsae-suppress", joint=str(folder), side="both", positions="text")


def test_sae_direction_is_the_features_share_of_the_class_difference(joint_folder, fit_data):
    import dataclasses

    sae = joint_folder[1].vision
    features = [(0, 0.1, 0.9), (5, 0.6, 0.2)]  # (latent, rigid mean, fragile mean)
    data = dataclasses.replace(fit_data, sae=sae, fragility_features=features)
    method = make_method("sae-direction").fit(data)
    expected = 0.8 * sae.W_dec[0].detach() - 0.4 * sae.W_dec[5].detach()
    cos = float(torch.nn.functional.cosine_similarity(method.state["vector"], expected, dim=0))
    assert abs(cos) == pytest.approx(1.0, abs=1e-5) and method.units() == 2
    assert torch.allclose(method.state["vector"].norm(), data.dom().norm(), rtol=1e-5)
    with pytest.raises(ValueError, match="needs sae"):
        make_method("sae-direction").fit(fit_data)


def test_marks_chooses_among_the_latents_of_one_material(joint_folder, fit_data, vla_backend):
    folder = str(joint_folder[0])
    for marks, side in (("fragile", 1), ("rigid", -1)):
        method = make_method("jsae-vision", joint=folder, marks=marks).fit(fit_data, vla_backend)
        assert side * (method.fit_info["latent_auroc"] - 0.5) >= 0
    with pytest.raises(ValueError, match="marks='glass'"):
        make_method("jsae-suppress", joint=folder, marks="glass")
