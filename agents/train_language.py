"""Training and evaluating the tiny VLM's language tasks (agents.language_tasks) on image features.

`language_loss` is the cross-entropy of a batch's answers (+ <end_of_utterance>) given each
row's frame and question; `language_eval` scores every evaluation item on held-out frames as
a two-way choice: the model is right when it puts more log-probability on the answer than on
the foil (the answer for the other material, or the other handling).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.backend import VLMBackend
from agents.language_tasks import LanguageItem, evaluation_items
from agents.vla_features import image_features


class LanguageSequences:
    """Token ids of (frame, question, answer) rows; prompts tokenised once per question."""

    def __init__(self, backend: VLMBackend) -> None:
        self.backend = backend
        self.tok = backend.tokenizer
        self.eou = self.tok.convert_tokens_to_ids("<end_of_utterance>")
        self._prompts: dict[str, list[int]] = {}

    def prompt_ids(self, question: str) -> list[int]:
        """The chat prompt's ids for one frame and `question` (image tokens expanded)."""
        if question not in self._prompts:
            blank = np.zeros((384, 384, 3), dtype=np.uint8)
            self._prompts[question] = self.backend.prepare([blank], question)["input_ids"][
                0
            ].tolist()
        return self._prompts[question]

    def answer_ids(self, text: str) -> list[int]:
        """Ids of an answer; ValueError when a word is outside the vocabulary."""
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if self.tok.unk_token_id in ids:
            raise ValueError(f"answer {text!r} has words outside the model's vocabulary")
        return ids

    def ids(
        self, item: LanguageItem, labels: list[dict[str, Any]], foil: bool = False
    ) -> tuple[torch.Tensor, int]:
        """(B × T ids: prompt + answer + <end_of_utterance>, answer length + 1)."""
        rows, n_answer = [], None
        for lab in labels:
            answer = self.answer_ids(item.foil(lab) if foil else item.answer(lab)) + [self.eou]
            rows.append(self.prompt_ids(item.question(lab)) + answer)
            if n_answer is None:
                n_answer = len(answer)
            if len(answer) != n_answer or len(rows[-1]) != len(rows[0]):
                raise ValueError(f"{item}: rows of one batch differ in length")
        return torch.tensor(rows), int(n_answer or 0)


def _answer_logp(
    model: torch.nn.Module, feats: torch.Tensor, ids: torch.Tensor, n_answer: int
) -> torch.Tensor:
    """(B × n_answer) log-probabilities of the last `n_answer` tokens of each row."""
    inner = model.model
    embeds = inner.get_input_embeddings()(ids)
    embeds = inner.inputs_merger(input_ids=ids, inputs_embeds=embeds, image_hidden_states=feats)
    logits = model(inputs_embeds=embeds, use_cache=False).logits
    pred = logits[:, -n_answer - 1 : -1].float().log_softmax(-1)
    return pred.gather(2, ids[:, -n_answer:, None]).squeeze(-1)


def language_loss(
    model: torch.nn.Module,
    seqs: LanguageSequences,
    feats: torch.Tensor,
    item: LanguageItem,
    labels: list[dict[str, Any]],
) -> torch.Tensor:
    """Mean cross-entropy of the answers and their end token."""
    ids, n_answer = seqs.ids(item, labels)
    return -_answer_logp(model, feats, ids, n_answer).mean()


@torch.no_grad()
def language_eval(
    backend: VLMBackend, images: np.ndarray, labels: list[dict[str, Any]], batch_size: int = 16
) -> dict[str, dict[str, float]]:
    """Per evaluation item (agents.language_tasks.evaluation_items): two-way choice accuracy
    overall and per material, on `images` (frames the model was not trained on)."""
    model, seqs = backend.model, LanguageSequences(backend)
    items = evaluation_items()
    right: dict[str, list[bool]] = {name: [] for name in items}
    for start in range(0, len(labels), batch_size):
        rows = labels[start : start + batch_size]
        feats = image_features(backend, images[start : start + batch_size], batch_size)
        feats = feats.reshape(-1, feats.shape[-1]).to(backend.dtype)
        for name, item in items.items():
            scores = []
            for foil in (False, True):
                ids, n = seqs.ids(item, rows, foil=foil)
                scores.append(_answer_logp(model, feats, ids, n).sum(1))
            right[name] += (scores[0] > scores[1]).tolist()
    fragile = np.array([lab["material"] == "fragile" for lab in labels])
    out = {}
    for name, ok in right.items():
        ok_arr = np.array(ok)
        out[name] = {
            "accuracy": float(ok_arr.mean()),
            "fragile": float(ok_arr[fragile].mean()),
            "rigid": float(ok_arr[~fragile].mean()),
            "n": len(ok),
        }
    return out
