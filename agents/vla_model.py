"""The tiny VLA: the tiny VLM (Idefics3) with action, state and slot tokens in its vocabulary.

`build_vla(base)` takes a trained VLM checkpoint (default the shipped tiny VLM), extends its
word-level tokenizer (handling words such as gently / firmly / slowly / quickly / low / high
where missing, then one token per action bin, per state bin and per output slot), resizes the
input embeddings and the (untied) lm_head, and records the token layout in
`model.config.vla`. The result is still a plain `Idefics3ForConditionalGeneration`: saved with
`save_vla`, it loads through `agents.backend.load_vlm(path)` like any checkpoint, and taps,
SAEs, interventions and monitors work on it unchanged. `VLASpec.from_backend` reads the layout
back and refuses a checkpoint without it.

Prompt (one forward per decision, parallel decoding as in OpenVLA-OFT):

    <|im_start|>User:<image×81>{instruction}{extra}<st_objx_12>…<st_effort_03><end_of_utterance>
    Assistant:<slot_frag><slot_h0_dx><slot_h0_dy><slot_h0_dz><slot_h0_grip><slot_h1_dx>…

Every output is read at a dedicated slot token in the same forward: the logits at
`<slot_hH_D>` over dimension D's K action tokens give the action of chunk step H, and the
logits at `<slot_frag>` over " yes" / " no" give P(fragile). Autoregressive decoding would need
4·H forwards per decision (each re-reading 81 image tokens without a KV cache, or managing one
under hooks); slots cost one forward and keep every position a tap or steering hook may touch
inside that forward. Each slot token is distinct per (step, dimension), so which output a slot
holds does not depend on how long the prompt is (prompt injection makes it longer).
Because the image tokens come before all text, their residual stream at any layer is the same
as under the yes/no question's prompt: SAEs and difference-of-means vectors collected with
`physteer collect` (fragility question) apply to the VLA's image tokens as they are.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import models

from agents.action_tokens import ActionTokenizer, StateFeature, StateTokenizer
from agents.backend import VLMBackend, load_vlm
from storage import atomic_dir

#: Where the shipped tiny VLA checkpoint lives (trained by `physteer train-vla`).
TINY_VLA_DIR = Path(__file__).resolve().parent / "tiny_vla"
#: Key of the token layout in model.config.
CONFIG_KEY = "vla"
FORMAT_VERSION = 1
#: Words the VLA's vocabulary must hold (added to a word-level tokenizer where missing).
HANDLING_WORDS = (
    "gently", "firmly", "slowly", "quickly", "low", "high",
    "softly", "tightly", "up", "down", "slow", "fast",
)  # fmt: skip
FRAGILE_SLOT = "<slot_frag>"


@dataclass
class VLASpec:
    """The token layout of a VLA checkpoint (stored as `model.config.vla`).

    Attributes:
        action: the ActionTokenizer (K bins per action dimension).
        state: the StateTokenizer (bins of proprioceptive features).
        horizon: chunk steps predicted per forward.
    """

    action: ActionTokenizer
    state: StateTokenizer
    horizon: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int):
            raise ValueError(f"horizon={self.horizon!r}: expected an int in [1, 32]")
        if not 1 <= self.horizon <= 32:
            raise ValueError(f"horizon={self.horizon}: expected an int in [1, 32]")

    def slot_tokens(self) -> list[str]:
        """The output slots in prompt order: P(fragile), then step 0's dims, step 1's, ..."""
        dims = self.action.dims
        return [FRAGILE_SLOT] + [f"<slot_h{h}_{d}>" for h in range(self.horizon) for d in dims]

    @property
    def n_slots(self) -> int:
        """Number of slot positions at the end of every VLA prompt."""
        return 1 + self.horizon * self.action.n_dims

    def new_tokens(self) -> list[str]:
        """Every token the VLA adds to the base vocabulary."""
        return self.action.tokens() + self.state.tokens() + self.slot_tokens()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready layout (what `model.config.vla` holds)."""
        return {
            "version": FORMAT_VERSION,
            "action": self.action.to_dict(),
            "state": self.state.to_dict(),
            "horizon": self.horizon,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VLASpec:
        """Rebuild from `to_dict()` output."""
        return cls(
            ActionTokenizer.from_dict(data["action"]),
            StateTokenizer.from_dict(data["state"]),
            int(data["horizon"]),
        )

    @classmethod
    def from_backend(cls, backend: VLMBackend) -> VLASpec:
        """The layout of a loaded checkpoint; ValueError naming what is missing when it is no VLA."""
        data = getattr(backend.model.config, CONFIG_KEY, None)
        if not isinstance(data, dict):
            raise ValueError(
                f"model {backend.name!r} is not a VLA checkpoint: its config has no {CONFIG_KEY!r} "
                "entry and it has no action tokens (<act_dx_0>, ...); build one with "
                "agents.vla_model.build_vla and train it with `physteer train-vla`"
            )
        spec = cls.from_dict(data)
        vocab = backend.tokenizer.get_vocab()
        missing = [t for t in spec.new_tokens() if t not in vocab]
        if missing:
            raise ValueError(
                f"model {backend.name!r}: {len(missing)} VLA tokens are missing from its "
                f"vocabulary (e.g. {missing[:3]}): the tokenizer does not match config.vla"
            )
        rows = backend.model.get_output_embeddings().weight.shape[0]
        if max(vocab[t] for t in spec.new_tokens()) >= rows:
            raise ValueError(
                f"model {backend.name!r}: lm_head has {rows} rows, fewer than its VLA tokens need"
            )
        return spec


def _add_words(tokenizer: Any, words: Sequence[str]) -> list[str]:
    """Add missing words (4 spellings each) to a word-level tokenizer; returns those added."""
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=False)
    new = []
    for word in words:
        for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            if variant not in vocab and variant not in new:
                new.append(variant)
    if not new:
        return []
    if not isinstance(backend.model, models.WordLevel):
        raise ValueError(
            f"words {new[:4]} are missing and the tokenizer is not word-level "
            f"({type(backend.model).__name__}): extend it by hand"
        )
    full = backend.get_vocab(with_added_tokens=True)
    start = max(full.values()) + 1
    vocab.update({w: start + i for i, w in enumerate(new)})
    backend.model = models.WordLevel(vocab=vocab, unk_token=str(tokenizer.unk_token))
    return new


def _init_rows(
    weight: torch.Tensor, rows: dict[str, list[int]], gen: torch.Generator, norm: float
) -> None:
    """Initialise new embedding rows: bins on a half circle of radius `norm` (ordinal: a bin's
    neighbours are its nearest rows, the two ends are opposite), slots random at that radius,
    new words like the old rows."""
    n_old = min(min(ids) for ids in rows.values())
    old = weight[:n_old]
    mean, std = old.mean(0), old.std(0)
    d = weight.shape[1]
    for group, ids in rows.items():
        if group.startswith("bins:"):
            u, v = torch.linalg.qr(torch.randn(d, 2, generator=gen))[0].T
            theta = torch.linspace(0, math.pi, len(ids)).unsqueeze(1)
            weight[ids] = norm * (torch.cos(theta) * u + torch.sin(theta) * v)
        elif group == "slots":
            rand = torch.randn(len(ids), d, generator=gen)
            weight[ids] = norm * torch.nn.functional.normalize(rand, dim=1)
        else:
            weight[ids] = mean + std * torch.randn(len(ids), d, generator=gen)


@torch.no_grad()
def image_feature_norm(backend: VLMBackend) -> float:
    """Mean norm of the image features the text model receives (mid-grey frame)."""
    frame = np.full((1, 384, 384, 3), 128, dtype=np.uint8)
    inputs = backend.prepare(frame, "")
    feats = backend.model.model.get_image_features(inputs["pixel_values"], return_dict=True)
    pooled = feats.pooler_output
    pooled = torch.cat(list(pooled)) if isinstance(pooled, (list, tuple)) else pooled
    return float(pooled.float().norm(dim=-1).mean())


def build_vla(
    base: str | Path | VLMBackend = "tiny",
    k_bins: int = 32,
    state_bins: int = 32,
    horizon: int = 4,
    state_features: Sequence[StateFeature] | None = None,
    seed: int = 0,
) -> tuple[VLMBackend, VLASpec]:
    """A VLA built from a VLM checkpoint (untrained action tokens; see agents.train_vla).

    Args:
        base: "tiny", a checkpoint directory, or a loaded VLMBackend (deep-copied, not changed).
        k_bins: bins per action dimension (2..1024).
        state_bins: bins per state feature (2..1024).
        horizon: chunk steps predicted per forward (1..32).
        state_features: the tokenised state features (default DEFAULT_STATE_FEATURES).
        seed: seed of the new embedding rows.

    Returns:
        (backend on the CPU in eval mode, its VLASpec).
    """
    kwargs = {} if state_features is None else {"features": state_features}
    spec = VLASpec(ActionTokenizer(k_bins), StateTokenizer(state_bins, **kwargs), horizon)
    if isinstance(base, VLMBackend):
        model, processor = copy.deepcopy(base.model).cpu(), copy.deepcopy(base.processor)
    else:
        loaded = load_vlm(base, device="cpu")
        model, processor = loaded.model, loaded.processor
    if getattr(model.config, CONFIG_KEY, None) is not None:
        raise ValueError(f"base {base!r} is already a VLA (config has {CONFIG_KEY!r})")
    tok = getattr(processor, "tokenizer", processor)
    words = _add_words(tok, HANDLING_WORDS)
    word_ids = [tok.convert_tokens_to_ids(w) for w in words]
    tok.add_tokens(spec.new_tokens())
    ids = {t: tok.convert_tokens_to_ids(t) for t in spec.new_tokens()}
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    groups: dict[str, list[int]] = {"words": word_ids} if word_ids else {}
    for bins in (spec.action, spec.state):
        for d in bins.dims:
            groups[f"bins:{bins.prefix}:{d}"] = [ids[bins.token(d, b)] for b in range(bins.k_bins)]
    groups["slots"] = [ids[t] for t in spec.slot_tokens()]
    gen = torch.Generator().manual_seed(seed)
    # Input rows at the image features' scale: the Idefics3 text embeddings are ~100x smaller
    # than the image features, so a small state token would be lost in its own residual stream
    # after the first layer (measured: norm 0.3 in, ~50 after layer 0). Output rows at the
    # scale of the old lm_head rows.
    in_norm = image_feature_norm(VLMBackend(model, processor, name="base"))
    with torch.no_grad():
        inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        n_old = min(min(rows) for rows in groups.values())
        out_norm = float(out[:n_old].norm(dim=1).mean())
        _init_rows(inp, groups, gen, in_norm)
        _init_rows(out, groups, gen, out_norm)
    setattr(model.config, CONFIG_KEY, spec.to_dict())
    backend = VLMBackend(model.eval(), processor, name="vla")
    VLASpec.from_backend(backend)  # the layout reads back
    return backend, spec


def save_vla(backend: VLMBackend, path: str | Path) -> Path:
    """Save model and processor with save_pretrained, atomically (a temp dir renamed into place)."""
    VLASpec.from_backend(backend)
    with atomic_dir(path) as tmp:
        backend.model.save_pretrained(tmp, safe_serialization=True)
        backend.processor.save_pretrained(tmp)
    return Path(path)


def check_vla_folder(path: Path, model: str, chunk: int | None) -> None:
    """Before any episode: the folder's config.json carries a VLA layout, and `chunk` (actions
    per forward, None: the horizon) is an int >= 1. Reads config.json only."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"VLA checkpoint {path} has no config.json (run `physteer train-vla`, or pass --model DIR)")  # fmt: skip
    if CONFIG_KEY not in json.loads(config.read_text()):
        raise ValueError(f"model {model!r} is not a VLA checkpoint: its config has no 'vla' entry "
                         "(action tokens and slots); train one with `physteer train-vla`")  # fmt: skip
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk={chunk!r} is not allowed; it must be an int >= 1")


def load_vla(
    model: str | Path | VLMBackend, device: str = "auto", dtype: str = "float32"
) -> tuple[VLMBackend, VLASpec]:
    """Load a VLA checkpoint by path through load_vlm (or check a loaded backend).

    Raises:
        ValueError: the checkpoint has no VLA layout / action tokens (names what is missing).
    """
    backend = model if isinstance(model, VLMBackend) else load_vlm(model, device, dtype)
    return backend, VLASpec.from_backend(backend)


class PromptBuilder:
    """Token ids of VLA prompts for a backend: image block + text + state + slots.

    The image block (and everything up to the end of the user turn) comes from the backend's
    own prompt for an empty question, so the image tokens sit exactly where the processor puts
    them; the per-row text is tokenised and spliced in before `<end_of_utterance>`.
    """

    def __init__(
        self, backend: VLMBackend, spec: VLASpec, image_shape: tuple[int, ...] = (384, 384, 3)
    ) -> None:
        self.backend, self.spec = backend, spec
        tok = backend.tokenizer
        blank = np.zeros(image_shape, dtype=np.uint8)
        ids = backend.prepare([blank], "")["input_ids"][0].tolist()
        eou = tok.convert_tokens_to_ids("<end_of_utterance>")
        if eou not in ids:
            raise ValueError(
                "the chat template has no <end_of_utterance>: cannot place the VLA prompt"
            )
        split = ids.index(eou)
        self.head, self.tail = ids[:split], ids[split:]
        self.slot_ids = [tok.convert_tokens_to_ids(t) for t in spec.slot_tokens()]
        self.action_ids = spec.action.token_ids(tok)  # dims × K
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self._cache: dict[str, list[int]] = {}

    def text(self, instruction: str, extra: str, state: np.ndarray, grip_effort: float) -> str:
        """The text part of one prompt: instruction, optional extra text, state tokens."""
        extra = f" {extra.strip()}" if extra and extra.strip() else ""
        return f"{instruction}{extra}{self.spec.state.text(state, grip_effort)}"

    def _text_ids(self, text: str) -> list[int]:
        if text not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = self.backend.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def ids(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) (B × T), left-padded; the last n_slots positions are slots."""
        rows = [self.head + self._text_ids(t) + self.tail + self.slot_ids for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        return ids, mask

    def inputs(self, frames: Sequence[np.ndarray], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for frames (H×W×3 uint8) with one text each (pixels via backend.prepare)."""
        if len(frames) != len(texts):
            raise ValueError(f"{len(frames)} frames but {len(texts)} texts")
        inputs = self.backend.prepare(frames, "")
        ids, mask = self.ids(texts)
        inputs["input_ids"] = ids.to(self.backend.device)
        inputs["attention_mask"] = mask.to(self.backend.device)
        return inputs

    def read_slots(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From logits (B × T × V): action-bin logits (B × horizon × dims × K) and slot-0 logits (B × V)."""
        n = self.spec.n_slots
        slots = logits[:, -n:].float()
        acts = slots[:, 1:]  # B × (H·D) × V
        table = (
            self.action_ids.to(acts.device).view(1, 1, -1).expand(acts.shape[0], acts.shape[1], -1)
        )
        gathered = acts.gather(2, table)  # B × (H·D) × (D·K): keep each slot's own dimension
        d, k = self.spec.action.n_dims, self.spec.action.k_bins
        gathered = gathered.view(acts.shape[0], self.spec.horizon, d, d, k)
        own = torch.arange(d)
        bins = gathered[:, :, own, own]  # B × H × D × K
        return bins, slots[:, 0]
