"""The embedded tiny VLM: SmolVLM's architecture (Idefics3) at ~1M parameters.

It has a SigLIP-style vision tower (14-px patches at 384×384 ⇒ 27×27 patches), a pixel shuffle
with scale factor 3 (⇒ 81 image tokens per image, as SmolVLM-Instruct without image splitting)
and a small Llama text model. Its tokenizer is built here with the `tokenizers` library (a word
level vocabulary that covers the prompts, the answers and the special tokens Idefics3Processor
needs) and wrapped as a `PreTrainedTokenizerFast` with a SmolVLM-style chat template.

`build_tiny_model(seed)` makes a randomly initialised model and its processor;
`save_tiny(model, processor, path)` writes them with `save_pretrained`, so that
`agents.backend.load_vlm(path)` loads them exactly like a hub model. The trained checkpoint
ships in `agents/tiny_vlm/` (see `agents.train_tiny`).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    PreTrainedTokenizerFast,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from storage import atomic_dir

#: Directory of the shipped checkpoint (trained by `physteer train-tiny`).
TINY_VLM_DIR = Path(__file__).resolve().parent / "tiny_vlm"

IMAGE_SIZE = 384
PATCH_SIZE = 14
SCALE_FACTOR = 3
#: Image tokens per 384×384 image: (384 // 14) ** 2 / 3 ** 2 = 27² / 9 = 81.
IMAGE_SEQ_LEN = ((IMAGE_SIZE // PATCH_SIZE) ** 2) // (SCALE_FACTOR**2)

FRAGILE_QUESTION = "Is the object fragile? Answer yes or no."
COLOR_QUESTION = "What color is the object? Answer red or blue."

SPECIAL_TOKENS = [
    "<pad>",
    "<unk>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]

# Words of the prompts, the chat template, the env's instructions and the answers. Each word gets
# four entries: as is, capitalised, and both with a leading space (how " yes" follows ":").
WORDS = [
    "user",
    "assistant",
    "system",
    "is",
    "the",
    "object",
    "fragile",
    "rigid",
    "answer",
    "yes",
    "no",
    "or",
    "what",
    "color",
    "red",
    "blue",
    "put",
    "in",
    "bin",
    "pick",
    "up",
    "and",
    "place",
    "it",
    "a",
    "an",
    "of",
    "this",
    "that",
    "to",
    "gripper",
    "robot",
    "arm",
    "table",
    "cube",
    "sphere",
    "cylinder",
    "box",
    "ball",
    "pale",
    "deep",
    "light",
    "dark",
    "material",
    "glass",
    "plastic",
    "wood",
    "metal",
    "soft",
    "hard",
    "careful",
    "carefully",
    "gentle",
    "gently",
    "firm",
    "firmly",
    "fast",
    "slow",
    "slowly",
    "quick",
    "quickly",
    "safe",
    "break",
    "broken",
    "intact",
    "hold",
    "holding",
    "grasp",
    "release",
    "move",
    "lift",
    "lower",
    "high",
    "low",
    "left",
    "right",
    "front",
    "back",
    "top",
    "bottom",
    "small",
    "large",
    "big",
    "green",
    "yellow",
    "white",
    "black",
    "image",
    "picture",
    "scene",
    "see",
    "do",
    "you",
    "can",
    "are",
    "there",
    "which",
    "how",
    "true",
    "false",
    "not",
    "danger",
    "dangerous",
    "stop",
    "go",
]
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _vocabulary(extra_words: tuple[str, ...] = ()) -> list[str]:
    """Word-level vocabulary in a fixed order: specials, characters, then words and variants
    (`extra_words` after WORDS, so the default vocabulary is unchanged by them)."""
    vocab: list[str] = list(SPECIAL_TOKENS)
    for ch in string.ascii_letters + string.digits + string.punctuation + " \n\t":
        vocab.append(ch)
        if ch in string.ascii_letters + string.digits:
            vocab.append(" " + ch)
    for word in [*WORDS, *extra_words]:
        for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            if variant not in vocab:
                vocab.append(variant)
    return vocab


def build_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Build the tiny model's tokenizer (word level, ~500 tokens) with the `tokenizers` library.

    `extra_words` extend the vocabulary after WORDS (the language recipe's LANGUAGE_WORDS).

    Text is split into optionally space-prefixed words, single punctuation characters and single
    whitespace characters; words outside the vocabulary become `<unk>`. Decoding concatenates
    the pieces, so `decode(encode(text)) == text` for in-vocabulary text.

    Returns:
        A `PreTrainedTokenizerFast` with bos `<|im_start|>`, eos `<end_of_utterance>`, pad `<pad>`,
        unk `<unk>`, the Idefics3 image tokens as additional special tokens and a chat template.
    """
    vocab = {tok: i for i, tok in enumerate(_vocabulary(tuple(extra_words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex(r" ?[A-Za-z]+| ?[0-9]|[^\sA-Za-z0-9]|\s"), behavior="isolated"
    )
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        padding_side="left",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> Idefics3Processor:
    """Build the Idefics3Processor: 384-px longest edge, no image splitting, 81 image tokens.

    Args:
        tokenizer: the tokenizer to wrap; `build_tokenizer()` when None.
    """
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pad=True,
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    vision_hidden: int = 96,
    vision_layers: int = 2,
    text_hidden: int = 128,
    text_layers: int = 4,
) -> Idefics3Config:
    """Idefics3 config of the tiny model (defaults: ~1M parameters).

    Args:
        tokenizer: supplies vocab size and the special token ids.
        vision_hidden: width of the vision tower (heads of 32 dims).
        vision_layers: vision encoder layers.
        text_hidden: width of the Llama text model (heads of 32 dims).
        text_layers: Llama decoder layers.
    """
    for name, value in (("vision_hidden", vision_hidden), ("text_hidden", text_hidden)):
        if value <= 0 or value % 32:
            raise ValueError(f"{name}={value}: must be a positive multiple of 32")
    for name, value in (("vision_layers", vision_layers), ("text_layers", text_layers)):
        if value < 1:
            raise ValueError(f"{name}={value}: must be >= 1")
    ids = tokenizer.convert_tokens_to_ids
    return Idefics3Config(
        vision_config={
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_hidden // 32,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_hidden // 32,
            "num_key_value_heads": text_hidden // 32,
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5,
            "bos_token_id": ids("<|im_start|>"),
            "eos_token_id": ids("<end_of_utterance>"),
            "pad_token_id": ids("<pad>"),
            "tie_word_embeddings": False,
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=ids("<image>"),
        pad_token_id=ids("<pad>"),
        tie_word_embeddings=False,
    )


#: Standard deviation of the language recipe's initial word embeddings (build_tiny_model).
LANGUAGE_EMBED_STD = 0.5


def build_tiny_model(
    seed: int = 0, language: bool = False, **config_kwargs: int
) -> tuple[Idefics3ForConditionalGeneration, Idefics3Processor]:
    """A randomly initialised tiny Idefics3 model and its processor, deterministic under `seed`.

    Args:
        seed: torch seed for the weight initialisation.
        language: the language recipe's vocabulary (WORDS + agents.language_tasks.LANGUAGE_WORDS).
        **config_kwargs: forwarded to `tiny_config` (vision_hidden, text_layers, ...).
    """
    from agents.language_tasks import LANGUAGE_WORDS

    processor = build_processor(build_tokenizer(LANGUAGE_WORDS if language else ()))
    config = tiny_config(processor.tokenizer, **config_kwargs)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config)
        if language:
            # Word embeddings at the scale of the image features (norm ~6 at initialisation,
            # ~100 once trained) instead of initializer_range's 0.02 (norm ~0.2): the first
            # language model, trained from the small ones, answered identically whichever handling
            # or claim word its question held (changing "firmly" to "gently" moved its logits by
            # 5e-5): the words were drowned in the residual stream. The default recipe reads
            # only two fixed questions and keeps its initialisation.
            model.model.text_model.embed_tokens.weight.data.normal_(0.0, LANGUAGE_EMBED_STD)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    return model.eval(), processor


def check_save_target(path: str | Path) -> None:
    """Raise ValueError unless `path` may receive a checkpoint: new, empty, or a checkpoint
    folder (it holds config.json). A checkpoint replaces the whole folder, so a folder of other
    files (say `runs/`) is refused rather than emptied."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint folder {path} is a file; choose a new or empty folder")
    if path.is_dir() and any(path.iterdir()) and not (path / "config.json").is_file():
        raise ValueError(
            f"checkpoint folder {path} holds other files and no config.json; saving would replace "
            "them: choose a new or empty folder, or an existing checkpoint"
        )


def save_tiny(
    model: Idefics3ForConditionalGeneration, processor: Idefics3Processor, path: str | Path
) -> Path:
    """Save model (safetensors) and processor with `save_pretrained`; returns the directory.

    Atomic (`storage.atomic_dir`): the files are written to a sibling folder that then takes
    the place of `path`, so a reader sees the old checkpoint or the complete new one.

    Raises:
        ValueError: `path` is a file, or a folder of other files (`check_save_target`).
    """
    path = Path(path)
    check_save_target(path)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return path


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of `model`."""
    return sum(p.numel() for p in model.parameters())
