"""Loading by id or path, offline errors, device/dtype selection, answer probabilities, batching."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from agents.backend import load_vlm, resolve_device, resolve_dtype
from agents.taps import ResidualTap
from agents.tiny_model import COLOR_QUESTION, FRAGILE_QUESTION


def test_unknown_model_offline_fails_fast_with_a_clear_message():
    t0 = time.time()
    with pytest.raises(ValueError) as err:
        load_vlm("physteer-test/no-such-model-xyz", device="cpu")
    assert time.time() - t0 < 30
    msg = str(err.value)
    assert "physteer-test/no-such-model-xyz" in msg and "local" in msg and "directory" in msg


def test_missing_local_directory_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        load_vlm(str(tmp_path / "nope" / "model"), device="cpu")
    with pytest.raises(ValueError, match="config.json"):
        load_vlm(str(tmp_path), device="cpu")


def test_device_and_dtype_selection():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="cpu"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="float32"):
        resolve_dtype("int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_bfloat16_load(tiny_dir, frames):
    b = load_vlm(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert b.dtype is torch.bfloat16
    p = b.prob_yes(frames[:1])
    assert 0.0 <= float(p[0]) <= 1.0


def test_answer_probabilities_cover_variants(backend, frames):
    yes = backend.answer_token_ids("yes")
    no = backend.answer_token_ids("no")
    assert len(yes) >= 2 and not set(yes) & set(no)
    logits = backend.next_token_logits(frames)
    probs = backend.answer_probs(logits, ("yes", "no"))
    assert probs.shape == (2, 2)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="zebra"):
        backend.answer_token_ids("zebra")


def test_batched_matches_one_by_one(backend, frames):
    batched = backend.batched_prob_yes(frames, batch_size=2)
    single = np.array([backend.prob_yes(frames[i : i + 1])[0] for i in range(len(frames))])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


def test_fast_inputs_equal_the_processor(backend, frames):
    # 384² frames take the fast path (else this test would only compare the processor to itself)
    assert backend.frame_recipe(FRAGILE_QUESTION, (384, 384, 3)) is not None
    rng = np.random.default_rng(1)
    more = rng.integers(0, 256, size=(5, 384, 384, 3), dtype=np.uint8)
    more[0] = 0  # the extremes of the byte range
    more[1] = 255
    for question in (FRAGILE_QUESTION, COLOR_QUESTION):
        for batch in (frames, frames[:1], more, list(more[2:4])):
            expected = backend.processor_inputs(batch, question)
            _same_tensors(backend.prepare(batch, question), expected)


def test_frames_the_processor_resizes_take_the_processor_path(backend):
    rng = np.random.default_rng(2)
    odd = rng.integers(0, 256, size=(2, 200, 300, 3), dtype=np.uint8)
    assert backend.frame_recipe(FRAGILE_QUESTION, odd.shape[1:]) is None
    _same_tensors(backend.prepare(odd), backend.processor_inputs(odd))
    mixed = [odd[0], rng.integers(0, 256, size=(384, 384, 3), dtype=np.uint8)]
    _same_tensors(backend.prepare(mixed), backend.processor_inputs(mixed))


def test_fast_inputs_follow_image_processor_settings(tiny_dir, frames):
    b = load_vlm(str(tiny_dir), device="cpu")  # its own processor: this test changes a setting
    _same_tensors(b.prepare(frames), b.processor_inputs(frames))
    b.processor.image_processor.image_mean = [0.25, 0.5, 0.75]
    changed = b.processor_inputs(frames)
    _same_tensors(b.prepare(frames), changed)


def test_batched_collection_matches_one_by_one(backend):
    """P(yes) and tap activations of a batch of 16 (and a ragged tail) equal one-by-one forwards."""
    images = np.random.default_rng(3).integers(0, 256, size=(19, 384, 384, 3), dtype=np.uint8)
    layer = backend.n_layers // 2

    def run(batch_size: int, fast: bool) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        backend.fast_inputs = fast
        probs, acts, positions = [], [], []
        with ResidualTap(layer, include_last=False).attach(backend) as tap:
            for _, batch in backend.batches(images, batch_size):
                probs.append(backend.prob_yes(batch))
                acts.append(tap.latest_batch.cpu())
                positions.append(tap.positions_batch.cpu())
        return np.concatenate(probs), torch.cat(acts), torch.cat(positions)

    try:
        p16, a16, pos16 = run(16, fast=True)
        p1, a1, pos1 = run(1, fast=True)
        p16_proc, a16_proc, _ = run(16, fast=False)
    finally:
        backend.fast_inputs = True
    assert a16.shape == (19, 81, backend.hidden_size)
    np.testing.assert_allclose(p16, p1, rtol=0, atol=1e-5)
    torch.testing.assert_close(a16, a1, rtol=1e-4, atol=1e-5)
    assert torch.equal(pos16, pos1)
    # the same batch through the processor's inputs gives the same numbers bit for bit
    np.testing.assert_array_equal(p16, p16_proc)
    assert torch.equal(a16, a16_proc)


def test_bad_images_are_rejected(backend):
    with pytest.raises(ValueError, match="uint8"):
        backend.prepare([np.zeros((384, 384), dtype=np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        backend.prepare([])


def test_image_splitting_switch(tiny_dir, frames):
    b = load_vlm(str(tiny_dir), device="cpu", image_splitting=True)
    assert b.processor.image_processor.do_image_splitting is True
    b = load_vlm(str(tiny_dir), device="cpu", image_splitting=False)
    assert int(b.image_positions(b.prepare(frames[:1])["input_ids"]).sum()) == 81
