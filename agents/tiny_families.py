"""Tiny random-weight instances of the common VLM families, built locally from their config classes.

Each family is saved with `save_pretrained` beside its processor (a tiny word-level tokenizer with
the family's special tokens and chat template; PaliGemma has none), so that
`agents.backend.load_vlm(path)` loads it through the same code path as a downloaded model:

    path = build_family("qwen2_5_vl", "runs/families/qwen")    # ~100k parameters, < 1 s
    backend = load_vlm(path)

Families (`FAMILIES`):
- "idefics3": SmolVLM(-Instruct)'s architecture, image splitting off (4 image tokens per frame).
- "idefics3-split": the same with image splitting on (2×2 crops + the global image: 20 tokens).
- "smolvlm2": transformers' SmolVLM classes (SmolVLM2), splitting off.
- "qwen2_5_vl": Qwen2.5-VL (dynamic resolution: 16 tokens for the frames resized to 112²).
- "llava": LLaVA-1.5 (CLIP tower, "USER: <image>\\n... ASSISTANT:" template; 16 tokens).
- "paligemma": PaliGemma (SigLIP + Gemma; no chat template, prefix prompt; 16 tokens).

Sizes are for tests (hidden 32–64, 2 layers, 56–112 px images): seconds per family on CPU.
SmolVLM2's and Qwen2.5-VL's processors are built without their video processor (transformers
builds one only with torchvision); its settings are written into processor_config.json, so the
folder loads with or without torchvision (see agents.processors).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from agents.processors import image_only_processor_class
from agents.tiny_model import WORDS
from storage import atomic_dir, write_json

FAMILIES = ("idefics3", "idefics3-split", "smolvlm2", "qwen2_5_vl", "llava", "paligemma")
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2, "patch_size": 14}  # fmt: skip
TEXT_HIDDEN, TEXT_LAYERS = 64, 2
EXTRA_WORDS = ["helpful", "USER", "ASSISTANT", "picture", "answer", "en"]

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
IDEFICS_SPECIALS = ["<fake_token_around_image>", "<image>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def build_tokenizer(
    specials: list[str], bos: str, eos: str, pad: str, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer covering the prompts, answers and chat templates, plus `specials`.

    Args:
        specials: the family's special tokens (image placeholders, turn markers, ...), bos,
            eos and pad among them or added here.
        bos, eos, pad: the family's begin, end and padding tokens.
        chat_template: Jinja chat template, or None (a family without one).
    """
    names = list(dict.fromkeys(["<unk>", pad, bos, eos, *specials]))
    vocab = list(names)
    for ch in string.ascii_letters + string.digits + string.punctuation + " \n\t":
        vocab += [ch] + ([" " + ch] if ch.isalnum() else [])
    for word in [*WORDS, *EXTRA_WORDS]:
        for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            if variant not in vocab:
                vocab.append(variant)
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex(r" ?[A-Za-z]+| ?[0-9]|[^\sA-Za-z0-9]|\s"), behavior="isolated"
    )
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(names)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>",
        additional_special_tokens=[s for s in names if s not in (bos, eos, pad, "<unk>")],
        padding_side="left", model_max_length=4096,
    )  # fmt: skip
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def _text_config(tok: PreTrainedTokenizerFast, model_type: str = "llama", **extra) -> dict:
    ids = tok.convert_tokens_to_ids
    return {
        "model_type": model_type, "vocab_size": len(tok), "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 2 * TEXT_HIDDEN, "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "bos_token_id": ids(tok.bos_token), "eos_token_id": ids(tok.eos_token),
        "pad_token_id": ids(tok.pad_token), "tie_word_embeddings": False, **extra,
    }  # fmt: skip


def _idefics(split: bool, smolvlm2: bool) -> tuple:
    """Idefics3 (SmolVLM) or SmolVLM (SmolVLM2): 56-px tiles, pixel shuffle ×2 ⇒ 4 tokens/tile."""
    import transformers as tf

    if smolvlm2:
        from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE as template
    else:
        from agents.tiny_model import CHAT_TEMPLATE as template
    specials = ["<|im_start|>", "<end_of_utterance>", *IDEFICS_SPECIALS]
    tok = build_tokenizer(specials, "<|im_start|>", "<end_of_utterance>", "<pad>", template)
    prefix = "SmolVLM" if smolvlm2 else "Idefics3"
    image_processor = getattr(tf, f"{prefix}ImageProcessorPil")(
        do_resize=True, size={"longest_edge": 112 if split else 56},
        max_image_size={"longest_edge": 56}, do_image_splitting=split,
        image_mean=[0.5] * 3, image_std=[0.5] * 3, do_pad=True,
    )  # fmt: skip
    processor_cls = getattr(tf, f"{prefix}Processor")
    if smolvlm2:
        processor_cls = image_only_processor_class(processor_cls)
    processor = processor_cls(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=template
    )
    config = getattr(tf, f"{prefix}Config")(
        vision_config={**VISION, "image_size": 56}, text_config=_text_config(tok),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    model_cls = getattr(tf, f"{'SmolVLM' if smolvlm2 else 'Idefics3'}ForConditionalGeneration")
    return config, model_cls, processor


def _qwen() -> tuple:
    """Qwen2.5-VL: frames resized to 112² (max_pixels), 14-px patches merged 2×2 ⇒ 16 tokens."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
    tok = build_tokenizer(specials, "<|im_start|>", "<|im_end|>", "<|endoftext|>", QWEN_TEMPLATE)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=13_200, patch_size=14, merge_size=2,
        temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    processor = image_only_processor_class(Qwen2_5_VLProcessor)(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE
    )
    ids = tok.convert_tokens_to_ids
    head_dim = TEXT_HIDDEN // 4
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "window_size": 56, "out_hidden_size": TEXT_HIDDEN,
                       "fullatt_block_indexes": [1]},
        text_config=_text_config(
            tok, model_type="qwen2_5_vl_text",
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [head_dim // 8, 3 * head_dim // 16,
                                               3 * head_dim // 16]}),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )  # fmt: skip
    return config, Qwen2_5_VLForConditionalGeneration, processor


def _llava() -> tuple:
    """LLaVA-1.5: CLIP tower at 56² (16 patches, CLS dropped), Llama text, USER/ASSISTANT."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = build_tokenizer(["<s>", "</s>", "<image>"], "<s>", "</s>", "<pad>", LLAVA_TEMPLATE)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )  # fmt: skip
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **VISION, "image_size": 56,
                       "projection_dim": 32},
        text_config=_text_config(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )  # fmt: skip
    return config, LlavaForConditionalGeneration, processor


def _paligemma() -> tuple:
    """PaliGemma: SigLIP at 56² (16 tokens), Gemma text; no chat template (prefix prompt)."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tok = build_tokenizer(["<bos>", "<eos>", "<image>"], "<bos>", "<eos>", "<pad>")
    image_processor = SiglipImageProcessorPil(
        size={"height": 56, "width": 56}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    tok = processor.tokenizer  # the processor added its <loc>/<seg> tokens
    text = _text_config(tok, model_type="gemma", num_attention_heads=2, num_key_value_heads=1,
                        head_dim=32)  # fmt: skip
    config = PaliGemmaConfig(
        vision_config={"model_type": "siglip_vision_model", **VISION, "image_size": 56,
                       "projection_dim": TEXT_HIDDEN},
        text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=TEXT_HIDDEN, hidden_size=TEXT_HIDDEN, tie_word_embeddings=False,
    )  # fmt: skip
    return config, PaliGemmaForConditionalGeneration, processor


BUILDERS: dict[str, Callable[[], tuple]] = {
    "idefics3": lambda: _idefics(split=False, smolvlm2=False),
    "idefics3-split": lambda: _idefics(split=True, smolvlm2=False),
    "smolvlm2": lambda: _idefics(split=False, smolvlm2=True),
    "qwen2_5_vl": _qwen,
    "llava": _llava,
    "paligemma": _paligemma,
}


def build_family(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build family `name` with random weights (seeded) and save model + processor in `out_dir`.

    Args:
        name: one of `FAMILIES`.
        out_dir: folder to write (created); loadable with `agents.backend.load_vlm(out_dir)`.
        seed: torch seed of the weight initialisation.

    Returns:
        `out_dir` as a Path.

    Raises:
        ValueError: unknown family name (the message lists the families).
    """
    if name not in BUILDERS:
        raise ValueError(f"family {name!r}: expected one of {', '.join(FAMILIES)}")
    config, model_cls, processor = BUILDERS[name]()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    tok = processor.tokenizer
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tok, key))
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if name in VIDEO_PROCESSORS:
            _add_video_processor(Path(tmp), name)
    return Path(out_dir)


#: The video processor a family's processor loads where torchvision is installed.
VIDEO_PROCESSORS = {"smolvlm2": "SmolVLMVideoProcessor", "qwen2_5_vl": "Qwen2VLVideoProcessor"}


def _add_video_processor(folder: Path, name: str) -> None:
    """Write the video processor's entry into processor_config.json (transformers loads it
    with torchvision; without it, `agents.processors` loads the images-only processor)."""
    path = folder / "processor_config.json"
    doc = json.loads(path.read_text())
    if "video_processor" not in doc:
        image = dict(doc.get("image_processor") or {})
        keep = ("size", "max_image_size", "patch_size", "merge_size", "temporal_patch_size",
                "min_pixels", "max_pixels", "image_mean", "image_std", "do_image_splitting")  # fmt: skip
        entry = {k: image[k] for k in keep if k in image}
        doc["video_processor"] = {"video_processor_type": VIDEO_PROCESSORS[name], **entry}
        write_json(path, doc)
