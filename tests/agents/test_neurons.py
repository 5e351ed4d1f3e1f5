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


def test_random_cluster_condition_matches_its_words_cluster():
    """`neuron-random:<word>:<v>` draws from the layer of <word>'s cluster (same size, none of
    its neurons); `neuron-random:<v>` keeps the "fragile" cluster as its reference. Checked on the
    tiny VLA, whose handling words' clusters lie in other layers than "fragile"'s."""
    from agents.interventions import NeuronOverride
    from agents.vla_model import load_vla
    from rollouts.conditions import SteeringResources, build_intervention, parse_condition

    vla, _ = load_vla("agents/tiny_vla")
    layers = {}
    for word in ("fragile", "quickly", "slowly", "gently", "firmly"):
        ref = select_cluster(vla, word)
        cond = parse_condition(
            f"neuron-random:{word}:5" if word != "fragile" else "neuron-random:5"
        )
        assert cond.concept == (None if word == "fragile" else word)
        edit = build_intervention(cond, SteeringResources(), vla, layer=0, seed=7)
        assert isinstance(edit, NeuronOverride)
        ids = edit.neuron_ids.tolist()
        assert edit.layer == ref.layer and len(ids) == len(ref.neuron_ids)
        assert not set(ids) & set(ref.neuron_ids)
        edit.remove()
        layers[word] = ref.layer
    assert len(set(layers.values())) > 1, layers  # otherwise this test could not tell them apart
