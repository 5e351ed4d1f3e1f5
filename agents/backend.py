"""Load any Hugging Face image-text-to-text model and run it on camera frames.

`load_vlm("tiny")` loads the embedded tiny model from `agents/tiny_vlm/`; any other string is a
local directory or a hub id (e.g. "HuggingFaceTB/SmolVLM-Instruct"), loaded through
`AutoModelForImageTextToText` / `AutoProcessor` with `trust_remote_code=False`. Loading is
offline by default (`local_files_only=True`): a model that is not in the local cache fails at
once with an error that names the id and says how to pass a local path, instead of hanging on
the network.

`VLMBackend` wraps model + processor: chat-template prompts, preprocessing, next-token logits,
P(yes) over answer-token variants, image-token positions and batched inference for datasets.

Preprocessing has a fast path (`agents.frame_recipe.FrameRecipe`), checked bit for bit
against the processor itself; anything the check does not cover goes through the processor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageTextToText

from agents.frame_recipe import FrameRecipe
from agents.processors import (
    TRAINING_ONLY_INPUTS,
    UnsupportedModelError,
    build_prompt,
    check_image_input,
    check_prompt_format,
    load_processor,
)
from agents.resolve import (  # noqa: F401 - re-exported: `from agents.backend import resolve_device`
    DEVICES,
    DTYPES,
    check_weight_files,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)
from agents.tiny_model import FRAGILE_QUESTION
from agents.token_groups import token_groups

#: Spellings of an answer word whose first tokens are summed into P(word).
ANSWER_VARIANTS = ("{w}", " {w}", "{W}", " {W}", "{U}", " {U}")


def answer_token_ids(tokenizer: Any, word: str) -> list[int]:
    """Ids of the first token of each spelling of `word` ("yes", " yes", "Yes", ...).

    Spellings whose first token is unknown to the tokenizer are skipped. Needs only the
    tokenizer, so a run can check its words before it loads a model.

    Raises:
        ValueError: no spelling of `word` starts with a known token.
    """
    ids: list[int] = []
    for pattern in ANSWER_VARIANTS:
        text = pattern.format(w=word.lower(), W=word.capitalize(), U=word.upper())
        enc = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not enc:
            continue
        first = enc[0]
        if first == tokenizer.unk_token_id or tokenizer.decode([first]).strip() == "":
            continue
        if first not in ids:
            ids.append(first)
    if not ids:
        raise ValueError(f"answer word {word!r}: no spelling of it is a token of this model")
    return ids


def load_vlm(
    model: str | Path = "tiny",
    device: str = "auto",
    dtype: str | torch.dtype = "float32",
    allow_download: bool = False,
    image_splitting: bool | None = None,
) -> VLMBackend:
    """Load an image-text-to-text model and its processor.

    Args:
        model: "tiny" (the shipped checkpoint), a local directory written by `save_pretrained`,
            or a hub id such as "HuggingFaceTB/SmolVLM-Instruct".
        device: "auto" | "cpu" | "cuda" | "cuda:N" | "mps".
        dtype: "float32" | "bfloat16" | "float16".
        allow_download: when False (default) nothing is fetched from the network: a hub id
            must already be in the local Hugging Face cache.
        image_splitting: for processors that split images into crops (SmolVLM/Idefics3), force
            it on or off; False gives 81 image tokens per 384×384 image as in the reference.
            None keeps the processor's setting.

    Raises:
        ValueError: bad device/dtype; weights not available offline (the message names the id
            and how to pass a local path); a model physteer cannot drive (no image token, no
            text decoder layers, no prompt format): the message names what is missing.
        UnsupportedModelError (a ValueError): the processor takes no images, or needs a package
            that is missing (MissingDependencyError), or prompts cannot be built.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    source, is_local = resolve_model_path(model)
    offline = not allow_download
    previous = os.environ.get("HF_HUB_OFFLINE")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if is_local:
        check_weight_files(source)
    try:
        processor = load_processor(source, local_files_only=offline or is_local)
        check_image_input(processor, str(model))
        vlm = AutoModelForImageTextToText.from_pretrained(
            source,
            trust_remote_code=False,
            local_files_only=offline or is_local,
            dtype=torch_dtype,
        )
    except UnsupportedModelError:  # names what is missing already
        raise
    except (OSError, ValueError) as exc:
        if is_local:
            raise ValueError(
                f"model={source!r}: could not load the local checkpoint: {exc}"
            ) from exc
        raise ValueError(
            f"model {source!r} is not available offline (not in the local Hugging Face cache). "
            "Download it where there is network (`huggingface-cli download "
            f"{source} --local-dir DIR`) and pass that directory as the model "
            "(e.g. --model DIR or load_vlm('DIR')), or pass allow_download=True."
        ) from exc
    finally:
        if offline:
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
    check_prompt_format(processor, vlm.config.model_type, str(model))
    if image_splitting is not None:
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None or not hasattr(image_processor, "do_image_splitting"):
            raise ValueError(
                f"image_splitting={image_splitting}: the processor of {source!r} has no image splitting"
            )
        image_processor.do_image_splitting = bool(image_splitting)
    vlm = vlm.to(torch_device).eval()
    try:
        return VLMBackend(vlm, processor, name=str(model))
    except ValueError as exc:
        raise ValueError(f"model {str(model)!r} is not supported: {exc}") from exc


def find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The text decoder's layer list of a VLM (Idefics3/SmolVLM, LLaVA, Qwen-VL, ... layouts)."""
    inner = getattr(model, "model", model)
    for attr in ("text_model", "language_model"):
        lm = getattr(inner, attr, None)
        if lm is not None:
            lm = getattr(lm, "model", lm)
            if isinstance(getattr(lm, "layers", None), torch.nn.ModuleList):
                return lm.layers
    best: torch.nn.ModuleList | None = None
    for name, module in model.named_modules():
        if (
            name.endswith("layers")
            and isinstance(module, torch.nn.ModuleList)
            and "vision" not in name
        ):
            if (
                len(module)
                and hasattr(module[0], "mlp")
                and (best is None or len(module) > len(best))
            ):
                best = module
    if best is None:
        raise ValueError(f"{type(model).__name__}: no text decoder layers found")
    return best


def image_token_id(model: torch.nn.Module, processor: object) -> int:
    """Id of the image placeholder token whose positions receive image features."""
    for owner in (model.config, processor):
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(owner, attr, None)
            if isinstance(value, int):
                return value
    raise ValueError(f"{type(model).__name__}: cannot find the image token id")


def check_images(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """The frames of a batch as a list of H×W×3 uint8 arrays; ValueError naming a bad one."""
    if len(images) == 0:
        raise ValueError("images: empty batch")
    arrays = [np.asarray(img) for img in images]
    for i, arr in enumerate(arrays):
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(
                f"images[{i}]: expected H×W×3 uint8, got shape {arr.shape} dtype {arr.dtype}"
            )
    return arrays


@dataclass
class VLMBackend:
    """A loaded VLM with its processor and helpers for single frames and batches.

    Attributes:
        model: the image-text-to-text model (eval mode).
        processor: its processor (tokenizer + image processor).
        name: label written into activation metadata and reports.
        fast_inputs: build inputs with a verified `FrameRecipe` where one applies (same
            tensors as the processor, faster); False always runs the processor.
    """

    model: torch.nn.Module
    processor: object
    name: str = "model"
    fast_inputs: bool = True

    def __post_init__(self) -> None:
        tok = self.tokenizer
        tok.padding_side = "left"  # the last position is the next-token position for every row
        self.image_token_id = image_token_id(self.model, self.processor)
        self.layers = find_decoder_layers(self.model)
        self.model_type = str(getattr(self.model.config, "model_type", ""))
        self._answer_cache: dict[str, list[int]] = {}
        self._recipes: dict[tuple, FrameRecipe | None] = {}

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        """The processor's tokenizer."""
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        """Number of text decoder layers."""
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """Width of the text decoder's residual stream."""
        cfg = getattr(self.model.config, "text_config", self.model.config)
        return int(cfg.hidden_size)

    def prompt(self, question: str) -> str:
        """The prompt for one image followed by `question`: the processor's chat template, or
        the family's own prompt builder where it has none (PaliGemma; agents.processors)."""
        return build_prompt(self.processor, self.model_type, question)

    def prepare(self, images: Sequence[np.ndarray], question: str = FRAGILE_QUESTION) -> dict:
        """Model inputs for a batch of H×W×3 uint8 images, each with the same question.

        Equal to `processor_inputs`; with `fast_inputs` and frames of one shape they come from
        a `FrameRecipe` (built and checked against the processor once per prompt and shape).
        """
        frames = check_images(images)
        shape = frames[0].shape
        recipe = None
        if self.fast_inputs and all(f.shape == shape for f in frames):
            recipe = self.frame_recipe(question, shape)
        if recipe is None:
            return self._to_model(self._run_processor(frames, question))
        # an (N, H, W, 3) array goes in as is: no per-frame list to stack again
        return self._to_model(recipe.inputs(images if isinstance(images, np.ndarray) else frames))

    def processor_inputs(
        self, images: Sequence[np.ndarray], question: str = FRAGILE_QUESTION
    ) -> dict:
        """Model inputs made by the processor itself (the reference `prepare` must equal)."""
        return self._to_model(self._run_processor(check_images(images), question))

    def frame_recipe(self, question: str, shape: tuple[int, ...]) -> FrameRecipe | None:
        """The verified recipe for `question` and frames of `shape`, or None (use the processor).

        Cached per prompt text, frame shape and image-processor settings, so changing a setting
        (e.g. `do_image_splitting`) builds and checks a new recipe.
        """
        image_processor = getattr(self.processor, "image_processor", None)
        settings = "" if image_processor is None else repr(sorted(vars(image_processor).items()))
        seq_len = getattr(self.processor, "image_seq_len", None)
        key = (self.prompt(question), tuple(shape), settings, seq_len)
        if key not in self._recipes:
            self._recipes[key] = FrameRecipe.build(
                lambda frames: self._run_processor(frames, question), tuple(shape)
            )
        return self._recipes[key]

    def _run_processor(self, frames: list[np.ndarray], question: str) -> dict:
        """The processor's CPU output for checked frames, one question per frame (inputs for
        training only, such as PaliGemma's `labels`, are dropped)."""
        out = self.processor(
            text=[self.prompt(question)] * len(frames),
            images=[[img] for img in frames],
            return_tensors="pt",
            padding=True,
        )
        return {k: v for k, v in out.items() if k not in TRAINING_ONLY_INPUTS}

    def _to_model(self, inputs: dict) -> dict:
        """Inputs moved to the model's device, floating tensors cast to its dtype."""
        out = {}
        for key, value in inputs.items():
            if torch.is_tensor(value):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            out[key] = value
        return out

    def token_groups(self) -> dict[str, torch.Tensor]:
        """`token_groups` of the tokenizer (computed once)."""
        if not hasattr(self, "_token_groups"):
            self._token_groups = token_groups(self.tokenizer)
        return self._token_groups

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask (B × T) of image-token positions in `input_ids`."""
        return input_ids == self.image_token_id

    @torch.no_grad()
    def forward(self, inputs: dict, **kwargs) -> object:
        """Run the model on prepared inputs (no grad); kwargs go to the model's forward."""
        return self.model(**inputs, **kwargs)

    @torch.no_grad()
    def next_token_logits(
        self, images: Sequence[np.ndarray], question: str = FRAGILE_QUESTION
    ) -> torch.Tensor:
        """Next-token logits (B × vocab, float32) after the prompt for each image."""
        out = self.model(**self.prepare(images, question))
        return out.logits[:, -1, :].float()

    def answer_token_ids(self, word: str) -> list[int]:
        """Ids of the first token of each spelling of `word` (see `answer_token_ids`)."""
        if word not in self._answer_cache:
            self._answer_cache[word] = answer_token_ids(self.tokenizer, word)
        return self._answer_cache[word]

    def answer_probs(self, logits: torch.Tensor, words: Sequence[str]) -> torch.Tensor:
        """P(word) for each word, from next-token `logits` (B × vocab), renormalised over `words`.

        Each word's probability is the sum over the first tokens of its spellings; a token shared
        by two words (e.g. a bare space) is dropped from both so the answer stays unambiguous.
        """
        id_sets = [set(self.answer_token_ids(w)) for w in words]
        shared = set().union(*[a & b for i, a in enumerate(id_sets) for b in id_sets[i + 1 :]])
        probs = torch.softmax(logits.float(), dim=-1)
        cols = []
        for word, ids in zip(words, id_sets, strict=True):
            keep = sorted(ids - shared)
            if not keep:
                raise ValueError(
                    f"answer word {word!r}: all its tokens are shared with other answers"
                )
            cols.append(probs[:, keep].sum(dim=-1))
        mass = torch.stack(cols, dim=-1)
        return mass / mass.sum(dim=-1, keepdim=True).clamp_min(1e-30)

    def prob_yes(
        self, images: Sequence[np.ndarray], question: str = FRAGILE_QUESTION
    ) -> np.ndarray:
        """P(yes) among {yes, no} for each image (shape B)."""
        logits = self.next_token_logits(images, question)
        return self.answer_probs(logits, ("yes", "no"))[:, 0].cpu().numpy()

    def batches(
        self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 16
    ) -> Iterator[tuple[int, Sequence[np.ndarray]]]:
        """Yield (start index, batch) over a dataset of images."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        for start in range(0, len(images), batch_size):
            yield start, images[start : start + batch_size]

    def batched_prob_yes(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        question: str = FRAGILE_QUESTION,
        batch_size: int = 16,
    ) -> np.ndarray:
        """P(yes) for every image of a dataset, `batch_size` images per forward."""
        return np.concatenate(
            [self.prob_yes(batch, question) for _, batch in self.batches(images, batch_size)]
        )

    def batched_answers(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        question: str,
        words: Sequence[str],
        batch_size: int = 16,
    ) -> np.ndarray:
        """Probabilities over `words` (N × len(words)) for every image of a dataset."""
        rows = []
        for _, batch in self.batches(images, batch_size):
            rows.append(self.answer_probs(self.next_token_logits(batch, question), words).cpu())
        return torch.cat(rows).numpy()
