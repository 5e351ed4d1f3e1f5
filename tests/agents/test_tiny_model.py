"""The tiny model's tokenizer, processor and save/load round trip through the hub code path."""

from __future__ import annotations

import numpy as np
import torch

from agents.backend import load_vlm
from agents.tiny_model import (
    COLOR_QUESTION,
    FRAGILE_QUESTION,
    IMAGE_SEQ_LEN,
    build_processor,
    build_tokenizer,
    count_parameters,
)
from agents.train_tiny import pixels


def test_tokenizer_round_trip_and_answer_tokens():
    tok = build_tokenizer()
    text = "Is the object fragile? Answer yes or no."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    for word in ("yes", "no", "red", "blue"):
        for variant in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            enc = tok(variant, add_special_tokens=False)["input_ids"]
            assert len(enc) == 1 and enc[0] != tok.unk_token_id, variant
    for special in ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id


def test_processor_gives_81_image_tokens_and_chat_template():
    proc = build_processor()
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": COLOR_QUESTION}]}
    ]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert prompt.endswith("Assistant:") and COLOR_QUESTION in prompt
    img = np.zeros((384, 384, 3), dtype=np.uint8)
    inputs = proc(text=[prompt], images=[[img]], return_tensors="pt")
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    assert IMAGE_SEQ_LEN == 81
    assert int((inputs["input_ids"] == image_id).sum()) == 81
    assert tuple(inputs["pixel_values"].shape) == (1, 1, 3, 384, 384)


def test_training_pixels_equal_processor(frames):
    proc = build_processor()
    ref = proc.image_processor(images=[[f] for f in frames], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels(frames), ref, atol=1e-6)


def test_saved_model_loads_like_a_hub_model(tiny_dir, backend, frames):
    from transformers import Idefics3ForConditionalGeneration, Idefics3Processor

    assert (tiny_dir / "model.safetensors").is_file()
    assert isinstance(backend.model, Idefics3ForConditionalGeneration)
    assert isinstance(backend.processor, Idefics3Processor)
    assert 500_000 < count_parameters(backend.model) < 2_500_000
    again = load_vlm(str(tiny_dir), device="cpu")
    a = backend.next_token_logits(frames[:1], FRAGILE_QUESTION)
    b = again.next_token_logits(frames[:1], FRAGILE_QUESTION)
    assert torch.equal(a, b)


def test_zoom_augmentation_centres_on_the_object():
    from agents.train_tiny import object_centers, zoom_on

    img = np.full((384, 384, 3), 180, dtype=np.uint8)
    img[200:260, 60:120] = (200, 30, 30)  # a saturated red square
    c = object_centers(img[None])[0]
    assert abs(c[0] - 89.5) < 1 and abs(c[1] - 229.5) < 1
    assert np.array_equal(zoom_on(img, c, 1.0), img)
    zoomed = zoom_on(img, c, 3.0)
    assert zoomed.shape == img.shape
    red = (zoomed[..., 0] > 190) & (zoomed[..., 1] < 60)
    assert red.mean() > 4 * ((img[..., 0] == 200).mean())  # the object fills more of the frame
    assert np.isnan(object_centers(np.full((1, 384, 384, 3), 128, np.uint8))).all()
