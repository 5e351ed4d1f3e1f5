"""FFN value vectors in vocabulary space and neuron-cluster selection (Häon et al. 2025).

The output of a Llama FFN is down_proj(a) = sum_i a_i · v_i, where v_i (column i of
`down_proj.weight`) is neuron i's value vector. Projecting v_i through the unembedding shows
which tokens the neuron promotes (Geva et al.). A concept cluster is chosen as in the paper:
each neuron gets a semantic embedding, the softmax-weighted mean of the output embeddings of its
top-5 projected tokens; cosine kNN groups neurons with similar semantics; the cluster whose
centroid is closest to the concept word's embedding is selected. `random_cluster` gives the
same-size control. Clamp a cluster with `agents.interventions.NeuronOverride`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from agents.backend import VLMBackend
from agents.hooks import check_layer
from agents.interventions import NeuronOverride

__all__ = [
    "NeuronCluster",
    "NeuronOverride",
    "concept_embedding",
    "random_cluster",
    "random_ids",
    "select_cluster",
    "semantic_embeddings",
    "top_tokens",
    "value_vectors",
]


@dataclass
class NeuronCluster:
    """A set of FFN neurons of one layer, with how it was chosen."""

    layer: int
    neuron_ids: list[int]
    concept: str | None = None
    score: float = float("nan")  # cosine(centroid, concept embedding)
    top_tokens: dict[int, list[str]] = field(default_factory=dict)

    def override(self, value: float) -> NeuronOverride:
        """A NeuronOverride clamping this cluster to `value` (attach it to the backend)."""
        return NeuronOverride(self.layer, self.neuron_ids, value)


def _unembedding(backend: VLMBackend) -> torch.Tensor:
    out = backend.model.get_output_embeddings()
    if out is None:
        raise ValueError(f"{type(backend.model).__name__} has no output embeddings")
    return out.weight.detach().float()


def value_vectors(backend: VLMBackend, layer: int) -> torch.Tensor:
    """(n_neurons × d) value vectors of decoder layer `layer` (columns of mlp.down_proj.weight)."""
    check_layer(layer, backend.n_layers)
    down = getattr(getattr(backend.layers[layer], "mlp", None), "down_proj", None)
    if down is None:
        raise ValueError(f"decoder layer {layer} has no mlp.down_proj")
    return down.weight.detach().float().T


def projection_logits(backend: VLMBackend, layer: int) -> torch.Tensor:
    """(n_neurons × vocab) scores of every value vector against every output embedding."""
    return value_vectors(backend, layer) @ _unembedding(backend).T


def top_tokens(
    backend: VLMBackend, layer: int, k: int = 30, skip_special: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """Top-k promoted tokens per neuron of `layer`.

    Returns:
        (ids n_neurons × k, scores n_neurons × k, decoded token strings per neuron).
    """
    if k < 1:
        raise ValueError(f"k={k}: must be >= 1")
    logits = projection_logits(backend, layer)
    if skip_special:
        tok = backend.tokenizer
        special = set(tok.all_special_ids) | {
            i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if t.special
        }
        special = [i for i in special if i < logits.shape[1]]
        logits[:, special] = float("-inf")
    k = min(k, logits.shape[1])
    scores, ids = logits.topk(k, dim=1)
    tok = backend.tokenizer
    words = [[tok.decode([i]) for i in row] for row in ids.tolist()]
    return ids, scores, words


def semantic_embeddings(backend: VLMBackend, layer: int, top: int = 5) -> torch.Tensor:
    """(n_neurons × d) softmax-weighted mean output embedding of each neuron's top tokens."""
    ids, scores, _ = top_tokens(backend, layer, k=top)
    weights = torch.softmax(scores, dim=1)
    emb = _unembedding(backend)[ids]  # n × top × d
    return (weights.unsqueeze(-1) * emb).sum(dim=1)


def concept_embedding(backend: VLMBackend, concept: str) -> torch.Tensor:
    """Mean output embedding of the first tokens of the concept's spellings ("up", " Up", ...)."""
    ids = backend.answer_token_ids(concept)
    return _unembedding(backend)[ids].mean(dim=0)


def knn_clusters(emb: torch.Tensor, size: int) -> torch.Tensor:
    """(n × size) neuron ids: each neuron with its size−1 nearest neighbours by cosine."""
    n = emb.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"size={size}: valid cluster sizes are 1..{n}")
    unit = torch.nn.functional.normalize(emb, dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(float("inf"))  # every neuron is first in its own cluster
    return sim.topk(size, dim=1).indices


def select_cluster(
    backend: VLMBackend,
    concept: str,
    size: int = 10,
    layers: list[int] | None = None,
    top: int = 5,
) -> NeuronCluster:
    """The kNN cluster (of `size` neurons, one layer) whose centroid best matches `concept`.

    Args:
        backend: the loaded VLM.
        concept: a word of the tokenizer's vocabulary (e.g. "fragile", "slow", "up").
        size: neurons per cluster (the paper sweeps 10 and 20).
        layers: decoder layers to search (default all).
        top: projected tokens per neuron in its semantic embedding (paper: 5).
    """
    layers = list(range(backend.n_layers)) if layers is None else layers
    if not layers:
        raise ValueError("layers=[]: give at least one layer")
    target = torch.nn.functional.normalize(concept_embedding(backend, concept), dim=0)
    best: NeuronCluster | None = None
    for layer in layers:
        emb = semantic_embeddings(backend, layer, top=top)
        clusters = knn_clusters(emb, size)
        centroids = torch.nn.functional.normalize(emb[clusters].mean(dim=1), dim=1)
        scores = centroids @ target
        i = int(scores.argmax())
        if best is None or float(scores[i]) > best.score:
            ids = sorted(clusters[i].tolist())
            best = NeuronCluster(layer, ids, concept, float(scores[i]))
    _, _, words = top_tokens(backend, best.layer, k=10)
    best.top_tokens = {i: words[i] for i in best.neuron_ids}
    return best


def random_cluster(
    backend: VLMBackend,
    layer: int,
    size: int,
    seed: int = 0,
    exclude: list[int] | None = None,
) -> NeuronCluster:
    """A control cluster: `size` random neurons of `layer` (optionally avoiding `exclude`)."""
    n = value_vectors(backend, layer).shape[0]
    return NeuronCluster(layer, random_ids(n, size, seed, exclude, layer), concept=None)


def random_ids(
    n: int, size: int, seed: int, exclude: list[int] | None = None, layer: int = 0
) -> list[int]:
    """`size` sorted neuron ids drawn from `seed` among 0..n-1 except `exclude`."""
    pool = np.setdiff1d(np.arange(n), np.asarray(exclude or [], dtype=int))
    if not 0 <= size <= len(pool):
        raise ValueError(f"size={size}: valid sizes are 0..{len(pool)} for layer {layer}")
    ids = np.random.default_rng(seed).choice(pool, size=size, replace=False)
    return sorted(int(i) for i in ids)
