"""Loading by id or path, offline errors, device/dtype selection, answer probabilities, batching."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from agents.backend import load_vlm, resolve_device, resolve_dtype


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
