"""Residual taps: positions, equality with output_hidden_states, bad layers, removal."""

from __future__ import annotations

import pytest
import torch

from agents.taps import ResidualTap


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_tap_equals_hidden_states(backend, frames, layer):
    inputs = backend.prepare(frames)
    with ResidualTap(layer).attach(backend) as tap:
        out = backend.forward(inputs, output_hidden_states=True)
    image_pos = backend.image_positions(inputs["input_ids"])
    for row in range(len(frames)):
        expected = torch.cat(
            [image_pos[row].nonzero().flatten(), torch.tensor([inputs["input_ids"].shape[1] - 1])]
        )
        assert torch.equal(tap.positions_batch[row], expected)
        ref = out.hidden_states[layer + 1][row, expected]
        assert torch.equal(tap.latest_batch[row], ref)
    assert tap.latest.shape == (82, backend.hidden_size)
    assert tap.n_image_tokens == 81
    assert tap.image_activations.shape == (81, backend.hidden_size)
    assert tap.pooled().shape == (len(frames), backend.hidden_size)


def test_tap_layer_out_of_range(backend):
    n = backend.n_layers
    for bad in (n, -1, 99):
        with pytest.raises(ValueError, match=f"0..{n - 1}"):
            ResidualTap(bad).attach(backend)


def test_tap_stops_recording_after_removal(backend, frames):
    tap = ResidualTap(1).attach(backend)
    backend.prob_yes(frames[:1])
    assert tap.calls == 1
    tap.remove()
    backend.prob_yes(frames[:1])
    assert tap.calls == 1 and not tap.active


def test_tap_keeps_prompt_forward_during_generation(backend, frames):
    tap = ResidualTap(1).attach(backend)
    try:
        inputs = backend.prepare(frames[:1])
        backend.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert tap.calls == 1 and tap.latest.shape[0] == 82
    finally:
        tap.remove()
