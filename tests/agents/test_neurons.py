"""Value-vector vocabulary projection and cluster selection."""

from __future__ import annotations

import pytest
import torch

from agents.neurons import (
    knn_clusters,
    random_cluster,
    select_cluster,
    semantic_embeddings,
    top_tokens,
    value_vectors,
)


def test_value_vectors_and_top_tokens(backend):
    down = backend.layers[1].mlp.down_proj
    vv = value_vectors(backend, 1)
    assert vv.shape == (down.in_features, backend.hidden_size)
    assert torch.equal(vv[5], down.weight[:, 5])
    ids, scores, words = top_tokens(backend, 1, k=7)
    assert ids.shape == (down.in_features, 7) and len(words[0]) == 7
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    special = set(backend.tokenizer.all_special_ids)
    assert not special & set(ids.flatten().tolist())
    with pytest.raises(ValueError, match="0.."):
        value_vectors(backend, backend.n_layers)


def test_knn_cluster_selection_and_random_control(backend):
    emb = semantic_embeddings(backend, 0)
    clusters = knn_clusters(emb, 10)
    assert clusters.shape == (emb.shape[0], 10)
    assert torch.equal(clusters[:, 0], torch.arange(emb.shape[0]))
    cluster = select_cluster(backend, "fragile", size=10)
    assert len(cluster.neuron_ids) == 10 == len(set(cluster.neuron_ids))
    assert 0 <= cluster.layer < backend.n_layers and cluster.concept == "fragile"
    assert set(cluster.top_tokens) == set(cluster.neuron_ids)
    control = random_cluster(backend, cluster.layer, 10, seed=0, exclude=cluster.neuron_ids)
    assert len(control.neuron_ids) == 10 and not set(control.neuron_ids) & set(cluster.neuron_ids)
    assert (
        random_cluster(backend, 1, 10, seed=3).neuron_ids
        == random_cluster(backend, 1, 10, seed=3).neuron_ids
    )
    with pytest.raises(ValueError, match="size"):
        knn_clusters(emb, emb.shape[0] + 1)
    with pytest.raises(ValueError, match="zebra"):
        select_cluster(backend, "zebra")


def test_cluster_override_changes_logits(backend, frames):
    inputs = backend.prepare(frames[:1])
    clean = backend.forward(inputs).logits
    cluster = select_cluster(backend, "slow", size=5)
    with cluster.override(10.0).attach(backend):
        assert not torch.allclose(backend.forward(inputs).logits, clean)
    assert torch.equal(backend.forward(inputs).logits, clean)
