"""The language side of the tiny VLM's training (`physteer train-tiny --language`).

Four tasks put the material into words the model reads and writes, each answered from the frame:

- "describe": "Describe the object." → " a fragile red cube";
- "claim": "The object is delicate. True or false?" → " true" / " false" (a claim about the
  material or the color, checked against the frame);
- "handle": "Hold it softly or firmly?" → the gentle word for fragile objects, the firm word for
  rigid ones (options in either order);
- "instruct": "Put the red object in the bin gently. How to hold it?" → what the
  instruction's handling word asks for, whatever the material; with the plain instruction
  ("Put the red object in the bin. ...") the handling the material needs.

Held-out synonyms (envs.language) appear in training in some contexts only, so a test in the
others asks whether the model's language generalises: "delicate" / "sturdy" only in claims
(tested in descriptions), "softly" / "tightly" only as options of "handle" (tested in
instructions). Every row of a batch shares its task and its words, and rows differ only in
single-token words (color, material, answer), so a batch has one sequence length: no padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.language import (
    HANDLING_FOR_MATERIAL,
    HANDLING_WORDS,
    HELD_OUT_HANDLING,
    MATERIAL_WORDS,
    description,
    instruction,
)

TASKS = ("describe", "claim", "handle", "instruct")
INSTRUCT_QUESTION = "How to hold it?"
DESCRIBE = "Describe the object."
GENTLE_TRAIN = tuple(
    w for w, h in HANDLING_WORDS.items() if h == "gentle" and w not in HELD_OUT_HANDLING
)
FIRM_TRAIN = tuple(
    w for w, h in HANDLING_WORDS.items() if h == "firm" and w not in HELD_OUT_HANDLING
)
GENTLE_ALL = tuple(w for w, h in HANDLING_WORDS.items() if h == "gentle")
FIRM_ALL = tuple(w for w, h in HANDLING_WORDS.items() if h == "firm")
#: Words the language recipe adds to the tiny VLM's vocabulary (agents.tiny_model).
LANGUAGE_WORDS = ("describe", "delicate", "sturdy", "softly", "tightly")


@dataclass(frozen=True)
class LanguageItem:
    """One task at fixed words: builds each row's question, answer and foil (the answer with
    the material's side flipped)."""

    task: str
    material_word: int = 0  # describe: 0 trained words, 1 held-out synonyms
    claim: str = ""  # claim: the word claimed ("delicate", "red", ...)
    # handle: the options (first, second); instruct: the answer words (not listed)
    options: tuple[str, str] = ("gently", "firmly")
    handling_word: str | None = None  # instruct: the instruction's word (None: plain)

    def question(self, label: dict[str, Any]) -> str:
        """The row's question text."""
        ask = f"Hold it {self.options[0]} or {self.options[1]}?"
        if self.task == "describe":
            return DESCRIBE
        if self.task == "claim":
            return f"The object is {self.claim}. True or false?"
        if self.task == "handle":
            return ask
        # No options listed: where "gently" and "firmly" both stand in every question they carry
        # nothing, and a model taught so ignored them in the instruction too (docs/results.md).
        return f"{instruction(label['color'], self.handling_word)} {INSTRUCT_QUESTION}"

    def _answer(self, label: dict[str, Any], flip: bool) -> str:
        material = label["material"]
        if flip:
            material = "rigid" if material == "fragile" else "fragile"
        if self.task == "describe":
            held = bool(self.material_word)
            return " " + description(label["color"], material, label.get("shape", "object"), held)
        if self.task == "claim":
            holds = self.claim in (MATERIAL_WORDS[label["material"]] + (label["color"],))
            return " true" if holds != flip else " false"
        asked = HANDLING_WORDS.get(self.handling_word) if self.task == "instruct" else None
        if asked is not None and flip:
            asked = "firm" if asked == "gentle" else "gentle"
        handling = asked or HANDLING_FOR_MATERIAL[material]
        gentle = next(w for w in self.options if HANDLING_WORDS[w] == "gentle")
        firm = next(w for w in self.options if HANDLING_WORDS[w] == "firm")
        return " " + (gentle if handling == "gentle" else firm)

    def answer(self, label: dict[str, Any]) -> str:
        """The correct answer (leading space, no end token)."""
        return self._answer(label, flip=False)

    def foil(self, label: dict[str, Any]) -> str:
        """The answer for the other material (or, for a handling word, the other handling)."""
        return self._answer(label, flip=True)


#: How often each task is drawn. The first language model learned describe and handle at once
#: but read every handling word in an instruction as gentle and stayed at chance on claims
#: (docs/results.md), so the two harder tasks get more of the batches.
TASK_SHARES = {"describe": 0.15, "claim": 0.35, "handle": 0.15, "instruct": 0.35}


def draw_item(rng: np.random.Generator) -> LanguageItem:
    """A training item: the task and its words drawn from the trained contexts only.

    An instruction is plain, gentle or firm with equal chance (then a trained word of that
    handling): with the words drawn alike, gentle instructions outnumbered firm ones 2:1 and
    the model learned "a handling word means gentle"."""
    task = TASKS[int(rng.choice(len(TASKS), p=[TASK_SHARES[t] for t in TASKS]))]
    if task == "describe":
        return LanguageItem("describe", material_word=0)
    if task == "claim":
        words = [w for pair in MATERIAL_WORDS.values() for w in pair] + ["red", "blue"]
        return LanguageItem("claim", claim=words[int(rng.integers(len(words)))])
    if task == "handle":
        pair = (
            GENTLE_ALL[int(rng.integers(len(GENTLE_ALL)))],
            FIRM_ALL[int(rng.integers(len(FIRM_ALL)))],
        )
        return LanguageItem("handle", options=pair if rng.random() < 0.5 else pair[::-1])
    kinds: tuple[tuple[str | None, ...], ...] = ((None,), GENTLE_TRAIN, FIRM_TRAIN)
    words = kinds[int(rng.integers(len(kinds)))]
    return LanguageItem("instruct", handling_word=words[int(rng.integers(len(words)))])


def evaluation_items() -> dict[str, LanguageItem]:
    """Named items for held-out evaluation, trained contexts and held-out synonyms alike."""
    items = {
        "describe": LanguageItem("describe", material_word=0),
        "describe held-out synonyms": LanguageItem("describe", material_word=1),
        "claim fragile": LanguageItem("claim", claim="fragile"),
        "claim sturdy": LanguageItem("claim", claim="sturdy"),
        "handle gently/firmly": LanguageItem("handle", options=("gently", "firmly")),
        "handle softly/tightly": LanguageItem("handle", options=("softly", "tightly")),
        "instruct plain": LanguageItem("instruct"),
    }
    for word in HANDLING_WORDS:
        tag = " (held out)" if word in HELD_OUT_HANDLING else ""
        items[f"instruct {word}{tag}"] = LanguageItem("instruct", handling_word=word)
    return items
