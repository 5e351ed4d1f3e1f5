"""Processors and prompts of the VLM families: loading (with an image-only fallback) and prompts.

Loading. `load_processor` runs `AutoProcessor.from_pretrained`. Some processors (Qwen2.5-VL,
SmolVLM2) also hold a video processor, which transformers builds only with `torchvision`; physteer
feeds single frames, so where torchvision is missing (or unusable: a CUDA wheel beside a CPU torch)
the same processor class is loaded without its video part (`image_only_processor_class`): its
image and text code is transformers' own, unchanged. Anything else a processor needs and cannot
find fails with a ValueError that names the missing package.

Prompts. `build_prompt` uses the processor's chat template when it has one. A family whose
processor has no chat template gets a prompt builder of its own (`PROMPT_BUILDERS`, keyed by the
config's `model_type`): PaliGemma's prompt is the image token followed by the question (its
processor adds the image tokens, `<bos>` and the closing newline). A model with neither fails at
load (`check_prompt_format`), before any frame is processed.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

#: model_type → prompt builder (processor, question) → text, for processors without a template.
PROMPT_BUILDERS: dict[str, Callable[[Any, str], str]] = {
    "paligemma": lambda processor, question: f"{processor.image_token}{question}",
}
#: Input names a processor may return that are for training only (never passed to the model).
TRAINING_ONLY_INPUTS = ("labels",)
#: Parameters of the processors that `image_only_processor_class` can rebuild.
IMAGE_ONLY_PARAMS = (
    "image_processor",
    "tokenizer",
    "video_processor",
    "image_seq_len",
    "chat_template",
)


class UnsupportedModelError(ValueError):
    """physteer cannot drive this model; the message names what is missing."""


class MissingDependencyError(UnsupportedModelError):
    """A processor needs a package that is not installed (or not usable); the message names it."""


def image_only_processor_class(cls: type) -> type:
    """`cls` (a ProcessorMixin subclass) without its video processor, same name and behaviour.

    The subclass lists every attribute of `cls` but `video_processor` (so `from_pretrained` loads
    only the image processor and the tokenizer), passes None for the video processor and renders
    chat templates with transformers' generic `ProcessorMixin.apply_chat_template`.

    Raises:
        ValueError: `cls.__init__` takes parameters this wrapper does not forward.
    """
    params = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "kwargs")]
    unknown = set(params) - set(IMAGE_ONLY_PARAMS)
    if unknown:
        raise ValueError(f"{cls.__name__}: cannot load it without its video processor ({unknown})")
    attributes = [a for a in cls.get_attributes() if a != "video_processor"]

    # transformers reads the parameter names off __init__'s code object: they are spelled out.
    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, video_processor: Any = None,
        image_seq_len: int | None = None, chat_template: str | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        if image_seq_len is not None:
            kwargs["image_seq_len"] = image_seq_len
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def get_attributes(_cls: type) -> list[str]:
        return list(attributes)

    from transformers import ProcessorMixin

    # SmolVLM's apply_chat_template reads video defaults off the video processor; the generic
    # one renders the same template for image and text messages.
    return type(
        cls.__name__,
        (cls,),
        {"__init__": __init__, "get_attributes": classmethod(get_attributes),
         "apply_chat_template": ProcessorMixin.apply_chat_template,
         "__module__": cls.__module__, "image_only": True},
    )  # fmt: skip


def _missing_package(exc: BaseException) -> str | None:
    """The package an ImportError says is missing (torchvision, num2words, ...), or None."""
    text = str(exc)
    patterns = (
        r"requires the (\w+) library",
        r"Package `(\w+)` is required",
        r"No module named '(\w+)",
    )
    for pattern in patterns:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return match.group(1).lower()
    return getattr(exc, "name", None)


def load_processor(source: str, local_files_only: bool) -> Any:
    """The processor of `source` (a folder or a cached hub id), images and text only if need be.

    Raises:
        MissingDependencyError (a ValueError): a package the processor needs is missing (the
            message names it and how to install it).
        OSError: the processor files cannot be read (the caller names the model).
    """
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
    from transformers.utils import is_torchvision_available

    kwargs = {"trust_remote_code": False, "local_files_only": local_files_only}
    try:
        return AutoProcessor.from_pretrained(source, **kwargs)
    except ImportError as exc:
        first: BaseException = exc
    except (
        AttributeError
    ) as exc:  # transformers' video classes are placeholders without torchvision
        if is_torchvision_available():
            raise
        first = exc
    except OSError as exc:  # a folder saved without the video processor's settings
        if "video processor" not in str(exc):
            raise
        first = exc
    missing = _missing_package(first) or (
        "torchvision" if not is_torchvision_available() else "an optional package"
    )
    config = AutoConfig.from_pretrained(source, **kwargs)
    cls = PROCESSOR_MAPPING.get(type(config), None)
    if cls is None or "video_processor" not in cls.get_attributes():
        raise MissingDependencyError(
            f"model {source!r}: its processor needs {missing}, which is not installed or not "
            f"usable here ({first}); install it with `pip install {missing} -c constraints.txt`"
        ) from first
    try:
        return image_only_processor_class(cls).from_pretrained(source, **kwargs)
    except ImportError as exc:
        needed = _missing_package(exc) or "an optional package"
        raise MissingDependencyError(
            f"model {source!r}: its processor ({cls.__name__}) needs {needed} even for images "
            f"({exc}); install it with `pip install {needed} -c constraints.txt`"
        ) from exc


def check_image_input(processor: Any, name: str) -> None:
    """Raise ValueError unless the processor takes images (has an image processor)."""
    if getattr(processor, "image_processor", None) is None:
        raise UnsupportedModelError(
            f"model {name!r}: its processor ({type(processor).__name__}) has no image processor: "
            "a text-only model? physteer needs an image-text-to-text model"
        )


def check_prompt_format(processor: Any, model_type: str, name: str) -> None:
    """Raise ValueError unless prompts can be built: a chat template or a family prompt builder."""
    if getattr(processor, "chat_template", None) or model_type in PROMPT_BUILDERS:
        return
    raise UnsupportedModelError(
        f"model {name!r} (model_type {model_type!r}): its processor has no chat template and "
        f"physteer has no prompt builder for this family (known: {', '.join(PROMPT_BUILDERS)}); "
        "save a chat template with the processor or add a builder to agents.processors.PROMPT_BUILDERS"
    )


def build_prompt(processor: Any, model_type: str, question: str) -> str:
    """The prompt text for one image followed by `question` (chat template or family builder)."""
    if getattr(processor, "chat_template", None):
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    if model_type not in PROMPT_BUILDERS:
        check_prompt_format(processor, model_type, model_type)
    return PROMPT_BUILDERS[model_type](processor, question)
