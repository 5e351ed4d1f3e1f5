"""The task's language: handling words an instruction may carry, and words for the material.

The plain instruction names the color only ("Put the red object in the bin."): the agent must
see fragility. An instruction may also carry a handling word (reset option "handling"):
"Put the red object in the bin gently." asks for the gentle handling whatever the material,
"... firmly." for the firm one. Words are split into the ones models are trained on and the
synonyms held out to test whether a model generalises through its language:

- handling: gentle "gently", "carefully" (trained), "softly" (held out); firm "firmly"
  (trained), "tightly" (held out);
- material, in descriptions of the scene ("a fragile red cube"): "fragile" / "rigid" (trained),
  "delicate" / "sturdy" (held out of instruction- and JSAE-fitting data).

The tiny VLM's language recipe (`physteer train-tiny --language`) uses every word here, so a
held-out word has a meaning in the model; what is held out is its use where it is tested
(the VLA's instructions, the Joint SAE's fit pairs).
"""

from __future__ import annotations

#: Handling word → the handling it asks for ("gentle" | "firm").
HANDLING_WORDS: dict[str, str] = {
    "gently": "gentle",
    "carefully": "gentle",
    "softly": "gentle",
    "firmly": "firm",
    "tightly": "firm",
}
#: Handling words held out of instruction training (a test of generalisation).
HELD_OUT_HANDLING = ("softly", "tightly")
#: Material → words for it in descriptions (the first of each is the trained one).
MATERIAL_WORDS: dict[str, tuple[str, str]] = {
    "fragile": ("fragile", "delicate"),
    "rigid": ("rigid", "sturdy"),
}
#: Material words held out of fitting data (a test of generalisation).
HELD_OUT_MATERIAL = ("delicate", "sturdy")
#: The handling each material needs, as the scripted expert and the shipped models handle it.
HANDLING_FOR_MATERIAL = {"fragile": "gentle", "rigid": "firm"}
#: The material whose handling a handling word asks for.
MATERIAL_FOR_HANDLING = {h: m for m, h in HANDLING_FOR_MATERIAL.items()}


def check_handling_word(word: str | None) -> str | None:
    """Return `word` (None: the plain instruction) or raise ValueError naming the allowed ones."""
    if word is None or word in HANDLING_WORDS:
        return word
    raise ValueError(
        f"handling word {word!r}: expected one of {', '.join(HANDLING_WORDS)} (or none for the "
        "plain instruction)"
    )


def instruction(color: str, handling_word: str | None = None) -> str:
    """ "Put the red object in the bin.", or with a handling word "Put the red object in the bin
    gently.".

    The word comes after the verb phrase, in lower case: in a word-level vocabulary "Gently" and
    " gently" are different tokens, and the held-out words ("softly", "tightly") are trained
    only in their " softly" form (agents.language_tasks), so only that form can carry a meaning
    into an instruction."""
    check_handling_word(handling_word)
    if handling_word is None:
        return f"Put the {color} object in the bin."
    return f"Put the {color} object in the bin {handling_word}."


def description(color: str, material: str, shape: str = "object", held_out: bool = False) -> str:
    """The scene in words: "a fragile red cube" ("a delicate red cube" with `held_out`)."""
    if material not in MATERIAL_WORDS:
        raise ValueError(f"material {material!r}: expected one of {', '.join(MATERIAL_WORDS)}")
    return f"a {MATERIAL_WORDS[material][int(held_out)]} {color} {shape}"
