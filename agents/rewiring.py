"""Häon et al.'s two claims about VLAs, measured where the ground truth is known: the tiny VLA
is the tiny VLM fine-tuned by behaviour cloning, so both checkpoints are at hand.

1. Rewiring: how many FFN value vectors change what they promote. For every neuron of every
   decoder layer, its top-k tokens under the unembedding (agents.neurons.top_tokens) in the
   VLM and in the VLA, among the VLM's own words (the VLA's vocabulary extends the VLM's with the
   same ids, and the new action tokens would otherwise crowd every list). Reported per layer:
   the share of neurons whose top-1 word changed, the share whose top-k sets overlap by less
   than half, and the mean Jaccard overlap.
2. Action vocabulary: the share of the VLA's (neuron, rank) top-k entries, and of its top-1
   tokens, that are action tokens (`<act_…>`), beside the share of action tokens in the
   vocabulary (what a value vector blind to them would show).

Reference row: the same measurement between the VLM and a random-weight copy of its
architecture, where everything is "rewired": the scale a fine-tuning's figure sits on.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.neurons import projection_logits, top_tokens


def _sets(ids: torch.Tensor) -> list[set[int]]:
    return [set(row) for row in ids.tolist()]


def _shared_top(backend: Any, layer: int, k: int, vocab: int) -> torch.Tensor:
    """Top-k token ids among the first `vocab` ids (the base model's words), specials masked."""
    logits = projection_logits(backend, layer)[:, :vocab]
    tok = backend.tokenizer
    special = [i for i in tok.all_special_ids if i < vocab]
    logits[:, special] = float("-inf")
    return logits.topk(min(k, vocab), dim=1).indices


def compare_layer(base: Any, tuned: Any, layer: int, k: int = 10) -> dict[str, float]:
    """Rewiring figures of one layer between two backends of the same architecture."""
    vocab = base.model.get_output_embeddings().weight.shape[0]
    a_ids = _shared_top(base, layer, k, vocab)
    b_ids = _shared_top(tuned, layer, k, vocab)
    _, _, words = top_tokens(tuned, layer, k)
    a_sets, b_sets = _sets(a_ids), _sets(b_ids)
    jaccard = [len(x & y) / len(x | y) for x, y in zip(a_sets, b_sets, strict=True)]
    n = len(a_sets)
    action = [[w.startswith("<act_") for w in row] for row in words]
    vocab = tuned.tokenizer.get_vocab()
    return {
        "layer": layer, "neurons": n, "k": k,
        "top1_changed": float((a_ids[:, 0] != b_ids[:, 0]).float().mean()),
        "overlap_below_half": sum(j < 1 / 3 for j in jaccard) / n,  # |∩| < k/2 ⇔ J < 1/3
        "mean_jaccard": sum(jaccard) / n,
        "action_share_topk": sum(map(sum, action)) / (n * k),
        "action_share_top1": sum(row[0] for row in action) / n,
        "action_share_vocab": sum(t.startswith("<act_") for t in vocab) / len(vocab),
    }  # fmt: skip


def rewiring_report(vlm: Any, vla: Any, k: int = 10, reference_seed: int = 0) -> dict[str, Any]:
    """Per-layer figures VLM → VLA, and VLM → a random-weight copy as the reference."""
    from agents.backend import VLMBackend

    if vlm.n_layers != vla.n_layers:
        raise ValueError(
            f"the VLM has {vlm.n_layers} layers and the VLA {vla.n_layers}: not one architecture"
        )
    with torch.random.fork_rng():
        torch.manual_seed(reference_seed)
        fresh = type(vlm.model)(vlm.model.config).eval()
    random_copy = VLMBackend(fresh, vlm.processor, name=f"{vlm.name} (random weights)")
    return {
        "k": k,
        "vla": [compare_layer(vlm, vla, layer, k) for layer in range(vlm.n_layers)],
        "random_reference": [
            compare_layer(vlm, random_copy, layer, k) for layer in range(vlm.n_layers)
        ],
    }
