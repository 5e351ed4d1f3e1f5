"""Does the image reach the positions physteer taps and steers? Checked once per loaded model,
before any episode, as a principle rather than per family.

Taps, SAEs, steering and monitors read the residual stream at the positions of the image token
id. That is right for VLMs that put the image's embeddings in the token sequence (Idefics3 /
SmolVLM, LLaVA, Qwen2.5-VL, PaliGemma). A model whose image enters another way (cross-attention:
the image token is a placeholder the vision features never replace) loads and runs, and every
figure looks normal while physteer reads a placeholder. So:

1. Two frames that differ (a black frame and a bright noise frame) must give different
   activations at the image positions, at the first decoder layer and at the tap layer.
   Otherwise the model is refused, naming what was found.
2. Two questions that differ are run on one frame. Where the image positions precede the
   question and attention is causal, their activations must not change; the finding (and
   whether the image precedes the text) is recorded either way, since a prefix-LM
   (PaliGemma: bidirectional attention over image and question) changes them by design.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.taps import ResidualTap

#: Smallest change (max |Δ| at the image positions) that counts as "the frame reached them".
MIN_CHANGE = 1e-6
OTHER_QUESTION = "What color is the object?"


def probe_frames(size: int = 384) -> np.ndarray:
    """A black frame and a bright noise frame (deterministic)."""
    rng = np.random.default_rng(0)
    return np.stack(
        [
            np.zeros((size, size, 3), np.uint8),
            rng.integers(128, 256, (size, size, 3), dtype=np.uint8),
        ]
    )


@torch.no_grad()
def image_positions_at(
    backend: Any, layers: list[int], images: np.ndarray, question: str
) -> dict[int, torch.Tensor]:
    """Layer → (B × n_image_tokens × d) activations at the image positions, from one forward."""
    taps = {n: ResidualTap(n, include_last=False).attach(backend) for n in layers}
    try:
        (getattr(backend, "prefix_forward", None) or backend.next_token_logits)(
            list(images), question
        )
    finally:
        for tap in taps.values():
            tap.remove()
    if any(t.latest_batch is None for t in taps.values()):
        raise ValueError(f"model {backend.name}: no position of the image token id {backend.image_token_id} in "
                         "its prompt: physteer cannot tap or steer its image")  # fmt: skip
    return {n: t.latest_batch.float() for n, t in taps.items()}


def check_image_reaches(backend: Any, layer: int | None = None) -> dict[str, Any]:
    """Run the two checks of the module docstring; returns what was found.

    Raises:
        ValueError: the image positions do not change when the frame changes (the image does
            not reach the positions physteer taps and steers), naming the model and the layers.
    """
    if (
        getattr(backend, "image_check", None) is not None
        and backend.image_check.get("layer") == layer
    ):
        return backend.image_check
    from agents.backend import FRAGILE_QUESTION

    layers = sorted({0, backend.n_layers - 1 if layer is None else int(layer)})
    frames = probe_frames()
    found: dict[str, Any] = {"layer": layer, "frame_change": {}}
    acts = image_positions_at(backend, layers, frames, FRAGILE_QUESTION)
    for n in layers:
        found["frame_change"][n] = float((acts[n][0] - acts[n][1]).abs().max())
    dead = [n for n, change in found["frame_change"].items() if change < MIN_CHANGE]
    if dead:
        raise ValueError(
            f"model {backend.name} ({backend.model_type or type(backend.model).__name__}): the positions of the image "
            f"token (id {backend.image_token_id}) do not change when the frame changes, at decoder layer(s) {dead} "
            f"(largest change {max(found['frame_change'][n] for n in dead):.2g}): the image does not reach the positions "
            "physteer taps and steers (for example a cross-attention VLM, or a vision path that is cut), so every "
            "tap, SAE, steering and monitor figure would describe a placeholder; physteer refuses it"
        )  # fmt: skip
    ids = backend.prepare(list(frames[:1]), FRAGILE_QUESTION)["input_ids"][0]
    other = backend.prepare(list(frames[:1]), OTHER_QUESTION)["input_ids"][0]
    same = int(min(len(ids), len(other)))
    first_diff = next((i for i in range(same) if int(ids[i]) != int(other[i])), same)
    image_at = torch.nonzero(ids == backend.image_token_id).flatten()
    found["image_precedes_question"] = bool(len(image_at)) and int(image_at.max()) < first_diff
    b = image_positions_at(backend, layers[-1:], frames[:1], OTHER_QUESTION)[layers[-1]]
    a = acts[layers[-1]][:1]
    found["question_change"] = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
    backend.image_check = found
    return found
