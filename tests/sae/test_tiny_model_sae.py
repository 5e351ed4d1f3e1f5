"""SAE acceptance on the embedded tiny model: real tap-layer activations of 2,048 renders.

The trained model: FVE >= 0.9 at the default k, < 10% dead latents, and a fragility feature
whose standardised material difference is >= 1 in every color x shade context. The control: the
same pipeline (same images, SAE config, steps and threshold) on a random-weight copy of the
model finds no fragility feature. Slow, so both models share one module-scoped run and one
rendering pass of the frames (studies.collect.collect_many).
"""

from __future__ import annotations

import pytest

from agents.backend import load_vlm
from agents.vlm_agent import default_tap_layer
from sae import TrainConfig, default_config, discover_store, evaluate, train_sae
from studies.collect import collect_many, random_weights_backend
from studies.demo.run import DemoConfig

IMAGES = 2048  # the issue asks for >= 2,000; a multiple of 16 is exactly balanced
STEPS = 1500
LR = DemoConfig.sae_lr  # the demo's settings (at 1e-3 about 20% of the latents die)
THRESHOLD = 0.5  # discovery's per-context |Cohen's d| threshold (the CLI default)


def _pipeline(store):  # noqa: ANN001, ANN202
    config = default_config(store.d)  # 4x: 512 latents, k 16
    train = TrainConfig(lr=LR, steps=STEPS, batch_size=1024, seed=0)
    sae = train_sae(store, config, train, progress=False).sae
    metrics = evaluate(sae, store)
    discovery = discover_store(sae, store, threshold=THRESHOLD, n_boot=200)
    return config, metrics, discovery


@pytest.fixture(scope="module")
def runs(tmp_path_factory):  # noqa: ANN001, ANN201
    trained = load_vlm("tiny")
    root = tmp_path_factory.mktemp("tiny_sae")
    layer = default_tap_layer(trained.n_layers)
    # one rendering pass for both models (the same frames), rendered ahead in a second process
    stores = collect_many([(trained, layer, root / "trained"), (random_weights_backend(trained, seed=0), layer, root / "random")],
                          IMAGES, seed=1_000_000, batch_size=32, workers=2)  # fmt: skip
    return {"trained": _pipeline(stores[0]), "random": _pipeline(stores[1])}


def test_trained_model_sae_quality(runs):  # noqa: ANN001
    config, metrics, _ = runs["trained"]
    assert config.k == 16  # the default k for d = 128
    assert metrics.fve >= 0.9, metrics.fve
    assert metrics.dead_fraction < 0.10, metrics.dead_fraction


def test_trained_model_has_fragility_feature_in_every_context(runs):  # noqa: ANN001
    _, _, discovery = runs["trained"]
    colors = {c.split("/")[0] for f in discovery.features for c in f.material_d}
    assert colors == {"red", "blue"}, colors
    strong = [f for f in discovery.features
              if f.feature in discovery.fragility and min(abs(d) for d in f.material_d.values()) >= 1.0]  # fmt: skip
    assert strong, [(f.feature, f.material_d) for f in discovery.features[:5]]


def test_random_weight_control_finds_no_fragility_feature(runs):  # noqa: ANN001
    _, metrics, discovery = runs["random"]
    assert metrics.fve >= 0.5  # the control SAE is a real fit, not a broken one
    assert discovery.fragility == [], [(f.feature, f.material_d) for f in discovery.features[:5]]
