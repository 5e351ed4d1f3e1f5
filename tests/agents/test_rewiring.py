"""The rewiring measurement: zero against itself, action tokens counted, a random copy rewired."""

from agents.rewiring import compare_layer, rewiring_report
from agents.vla_model import build_vla


def test_rewiring_is_zero_against_itself_and_high_for_random_weights(backend):
    same = compare_layer(backend, backend, layer=1, k=5)
    assert (
        same["top1_changed"] == 0 and same["mean_jaccard"] == 1 and same["action_share_topk"] == 0
    )
    vla, _ = build_vla(backend, k_bins=16, state_bins=8, horizon=2, seed=0)
    report = rewiring_report(backend, vla, k=5, reference_seed=1)  # the fixture itself is seed 0
    assert len(report["vla"]) == backend.n_layers
    for row, ref in zip(report["vla"], report["random_reference"], strict=True):
        assert 0 < row["action_share_vocab"] < 1 and 0 <= row["action_share_topk"] <= 1
        assert ref["top1_changed"] > 0.5  # fresh weights promote other words
        assert row["top1_changed"] == 0  # an untrained VLA keeps the VLM's FFN weights
