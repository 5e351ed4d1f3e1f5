"""One rendering pass for several collections: `collect_many` writes, for each (model, layer,
folder), the store and dom vector that `collect_activations` alone writes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sae import ActivationStore


@pytest.fixture(scope="module")
def backends():
    from agents.backend import load_vlm
    from studies.collect import random_weights_backend

    trained = load_vlm("tiny")
    return trained, random_weights_backend(trained, seed=0)


def test_one_pass_equals_separate_collections(tmp_path, backends):
    from studies.collect import collect_activations, collect_many

    trained, random = backends
    targets = [(trained, 2, tmp_path / "many" / "trained"), (random, 2, tmp_path / "many" / "random"),
               (trained, 1, tmp_path / "many" / "trained_layer1")]  # fmt: skip
    # frames rendered ahead in 2 processes (the reading process then at fewer threads): the
    # same frames in the same order, the same activations, as one process at its own threads
    threads = torch.get_num_threads()
    collect_many(targets, n_images=8, seed=600_000, frames_per_chunk=4, workers=2)
    assert torch.get_num_threads() == threads  # its reading thread count is given back
    for backend, layer, folder in targets:
        alone = tmp_path / "alone" / folder.name
        collect_activations(backend, layer, alone, n_images=8, seed=600_000, frames_per_chunk=4)
        a, b = ActivationStore.open(folder), ActivationStore.open(alone)
        assert torch.equal(a.load_all(), b.load_all()), folder.name
        assert a.load_metadata().to_pylist() == b.load_metadata().to_pylist()
        assert torch.equal(load_file(str(folder / "dom_vector.safetensors"))["dom"],
                           load_file(str(alone / "dom_vector.safetensors"))["dom"])  # fmt: skip
    # the check can fail: the models and layers do give different activations
    assert not torch.equal(
        ActivationStore.open(targets[0][2]).load_all(),
        ActivationStore.open(targets[1][2]).load_all(),
    )


def test_bad_targets_are_named_before_rendering(tmp_path, backends):
    from studies.collect import collect_many

    with pytest.raises(ValueError, match="no \\(backend, layer, store folder\\) target"):
        collect_many([], n_images=4)
    with pytest.raises(ValueError, match="n_images must be"):
        collect_many([(backends[0], 2, tmp_path / "x")], n_images=0)
