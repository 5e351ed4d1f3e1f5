"""Explanations of an alarm (monitors.explain): the SAE latents that moved most against clean
decisions; named in the monitor's verdict when it vetoes, saved and loaded with their reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monitors.explain import FeatureExplainer, describe
from monitors.sae_scorer import SAEReconstructionScorer


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    clean = [torch.randn(6, 16, generator=g) for _ in range(60)]
    scorer = SAEReconstructionScorer(steps=150, model="m", layer=1).fit(clean)
    return scorer, clean


def test_the_latents_named_are_those_that_moved(trained):
    scorer, clean = trained
    explainer = FeatureExplainer(scorer.sae, top=3).fit(clean[:40])
    # a decision pushed along the decoder direction of one latent: that latent is named first
    latent = 5
    direction = scorer.sae.W_dec[latent].detach() if hasattr(scorer.sae, "W_dec") else None
    if direction is None:
        direction = scorer.sae.decoder.weight[:, latent].detach()
    moved = clean[45] + 6.0 * direction / direction.norm()
    top = explainer.explain(moved)
    assert len(top) == 3 and abs(top[0]["z"]) >= abs(top[1]["z"]) >= abs(top[2]["z"])
    assert top[0]["latent"] == latent, top
    assert describe(top).startswith(f"latent {latent} (z +")
    calm = explainer.explain(clean[46])
    assert abs(calm[0]["z"]) < abs(top[0]["z"])


def test_round_trip_and_bad_input(trained, tmp_path):
    scorer, clean = trained
    explainer = FeatureExplainer(scorer.sae).fit(clean[:40])
    explainer.save(tmp_path)
    again = FeatureExplainer.load(tmp_path, scorer.sae)
    assert again.explain(clean[50]) == explainer.explain(clean[50])
    with pytest.raises(ValueError, match="at least 2 clean decisions"):
        FeatureExplainer(scorer.sae).fit(clean[:1])
    with pytest.raises(ValueError, match="not fitted"):
        FeatureExplainer(scorer.sae).explain(clean[0])


def test_the_monitor_names_the_latents_when_it_vetoes(trained):
    from envs.franka_pick import FrankaPickEnv
    from monitors.sarm import SARMMonitor

    scorer, clean = trained

    class Tap:
        latest, calls, n_image_tokens = clean[0] * 50.0, 1, 6

    env = SARMMonitor(FrankaPickEnv(obs_mode="state"), Tap(), scorer, threshold=0.0,
                      explainer=FeatureExplainer(scorer.sae).fit(clean[:40]))  # fmt: skip
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(4))
    assert info["sarm"]["veto"] and info["sarm"]["explanation"].startswith("latent ")
    env.close()
