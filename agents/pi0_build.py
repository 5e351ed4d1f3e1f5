"""π0 checkpoints built locally from transformers' config classes (random weights), saved as a
folder that agents.pi0_model.load_pi0 loads by the same path a converted release takes.

    path = build_pi0("runs/pi0-random", hidden=64, chunk=8)     # ~0.3M parameters, < 1 s
    agent = PI0Agent(path)

The VLM is a PaliGemma (SigLIP at `image_size`, Gemma text); the action expert a Gemma whose
layers and heads match the text model's (the expert attends to the VLM's KV cache, so its layer
count, key-value heads and head size must be the VLM's). The tokenizer is the word-level one of
the tiny VLM families (agents.tiny_families) with PaliGemma's specials; the normalisation
statistics go to processor_config.json (identity unless given: a random model has no data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agents.action_tokens import ENV_STATE_SIZE
from agents.pi0_folder import ENV_ACTION_SIZE, STATS_FILE, PI0Stats
from storage import atomic_dir, write_json


def identity_stats() -> PI0Stats:
    """Mean 0, std 1 for the env's state and actions (what a model with no data gets)."""
    zeros, ones = np.zeros, np.ones
    return PI0Stats(
        zeros(ENV_STATE_SIZE), ones(ENV_STATE_SIZE), zeros(ENV_ACTION_SIZE), ones(ENV_ACTION_SIZE)
    )


def pi0_config(tokenizer, hidden: int = 64, expert_hidden: int = 32, layers: int = 2, heads: int = 2,
               head_dim: int = 32, image_size: int = 64, patch: int = 16, chunk: int = 8, action_dim: int = 8,
               state_dim: int = 32, steps: int = 4):  # fmt: skip
    """A PI0Config of the given sizes for `tokenizer` (its <image> is the image token)."""
    from transformers import PI0Config

    ids = tokenizer.convert_tokens_to_ids
    text = {"model_type": "gemma", "hidden_size": hidden, "num_hidden_layers": layers,
            "intermediate_size": 2 * hidden, "num_attention_heads": heads, "num_key_value_heads": 1,
            "head_dim": head_dim, "vocab_size": len(tokenizer), "bos_token_id": ids(tokenizer.bos_token),
            "eos_token_id": ids(tokenizer.eos_token), "pad_token_id": ids(tokenizer.pad_token)}  # fmt: skip
    vision = {"model_type": "siglip_vision_model", "hidden_size": hidden, "intermediate_size": 2 * hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "patch_size": patch,
              "image_size": image_size, "vision_use_head": False}  # fmt: skip
    expert = {"model_type": "gemma", "hidden_size": expert_hidden, "num_hidden_layers": layers,
              "intermediate_size": 2 * expert_hidden, "num_attention_heads": heads, "num_key_value_heads": 1,
              "head_dim": head_dim}  # fmt: skip
    return PI0Config(vlm_config={"model_type": "paligemma", "text_config": text, "vision_config": vision,
                                 "projection_dim": hidden, "image_token_id": ids("<image>")},
                     dit_config=expert, chunk_size=chunk, max_action_dim=action_dim, max_state_dim=state_dim,
                     num_inference_steps=steps)  # fmt: skip


def build_pi0(
    out_dir: str | Path, seed: int = 0, stats: PI0Stats | None = None, **sizes: int
) -> Path:
    """A random-weight π0 folder (config, weights, tokenizer, statistics), written atomically.

    Args:
        out_dir: the folder to write.
        seed: torch seed of the weights.
        stats: normalisation statistics (default: identity_stats()).
        sizes: pi0_config's sizes (hidden, expert_hidden, layers, chunk, action_dim, ...).
    """
    from transformers import PI0ForConditionalGeneration

    from agents.tiny_families import build_tokenizer

    tokenizer = build_tokenizer(["<bos>", "<eos>", "<image>"], "<bos>", "<eos>", "<pad>")
    config = pi0_config(tokenizer, **sizes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PI0ForConditionalGeneration(config).eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(Path(tmp) / STATS_FILE, {"processor_class": "PI0Processor", "chunk_size": config.chunk_size,
                                            "max_state_dim": config.max_state_dim,
                                            **(stats or identity_stats()).to_dict()})  # fmt: skip
    return Path(out_dir)
