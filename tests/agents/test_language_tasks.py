"""The language recipe's tasks: answers and foils from a frame's labels, and held-out words."""

from __future__ import annotations

import numpy as np
import pytest

from agents.language_tasks import LANGUAGE_WORDS, LanguageItem, draw_item, evaluation_items
from envs.language import HANDLING_WORDS, HELD_OUT_HANDLING, HELD_OUT_MATERIAL

FRAGILE_RED = {"color": "red", "material": "fragile", "shape": "cube"}
RIGID_BLUE = {"color": "blue", "material": "rigid", "shape": "cylinder"}


def test_answers_follow_the_frame_and_the_instruction():
    describe = LanguageItem("describe")
    assert describe.answer(FRAGILE_RED) == " a fragile red cube"
    assert describe.foil(FRAGILE_RED) == " a rigid red cube"
    assert LanguageItem("describe", material_word=1).answer(RIGID_BLUE) == " a sturdy blue cylinder"
    claim = LanguageItem("claim", claim="delicate")
    assert (claim.answer(FRAGILE_RED), claim.answer(RIGID_BLUE)) == (" true", " false")
    assert claim.foil(FRAGILE_RED) == " false"
    assert LanguageItem("claim", claim="blue").answer(RIGID_BLUE) == " true"
    handle = LanguageItem("handle", options=("tightly", "softly"))
    assert (handle.answer(FRAGILE_RED), handle.answer(RIGID_BLUE)) == (" softly", " tightly")
    plain = LanguageItem("instruct")
    assert plain.question(FRAGILE_RED) == "Put the red object in the bin. How to hold it?"
    assert (plain.answer(FRAGILE_RED), plain.answer(RIGID_BLUE)) == (" gently", " firmly")
    firmly = LanguageItem("instruct", handling_word="firmly")
    assert firmly.question(RIGID_BLUE).startswith("Put the blue object in the bin firmly.")
    # the word wins over the material, and the foil is the other handling
    assert (firmly.answer(FRAGILE_RED), firmly.foil(FRAGILE_RED)) == (" firmly", " gently")


def test_training_draws_keep_held_out_words_out_of_their_test_contexts():
    rng = np.random.default_rng(0)
    items = [draw_item(rng) for _ in range(2000)]
    assert {i.task for i in items} == {"describe", "claim", "handle", "instruct"}
    assert all(i.material_word == 0 for i in items if i.task == "describe")
    assert not {i.handling_word for i in items} & set(HELD_OUT_HANDLING)
    assert {i.claim for i in items if i.task == "claim"} >= set(HELD_OUT_MATERIAL)
    assert {w for i in items if i.task == "handle" for w in i.options} >= set(HELD_OUT_HANDLING)
    assert {i.handling_word for i in items if i.task == "instruct"} >= {None, "gently", "firmly"}
    # firm instructions as often as gentle ones (2:1 taught "any word means gentle")
    asked = [HANDLING_WORDS.get(i.handling_word) for i in items if i.task == "instruct"]
    assert abs(asked.count("firm") - asked.count("gentle")) < 0.1 * len(asked)
    tested = evaluation_items()
    assert tested["describe held-out synonyms"].material_word == 1
    assert tested["instruct softly (held out)"].handling_word == "softly"


def test_language_words_are_in_the_language_vocabulary_only():
    from agents.tiny_model import build_tokenizer

    plain, language = build_tokenizer().get_vocab(), build_tokenizer(LANGUAGE_WORDS).get_vocab()
    assert all(" " + w not in plain and " " + w in language for w in LANGUAGE_WORDS)
    assert all(language[t] == i for t, i in plain.items())  # appended: old ids unchanged


@pytest.mark.parametrize("bad", [LanguageItem("describe", material_word=0)])
def test_rows_of_a_batch_have_one_length(bad, tmp_path):
    from agents.backend import VLMBackend
    from agents.tiny_model import build_tiny_model
    from agents.train_language import LanguageSequences

    model, processor = build_tiny_model(0, language=True)
    seqs = LanguageSequences(VLMBackend(model, processor, name="random"))
    ids, n = seqs.ids(bad, [FRAGILE_RED, RIGID_BLUE])
    assert ids.shape[0] == 2 and n == 5  # " a", material, color, shape, <end_of_utterance>
    plain = LanguageSequences(VLMBackend(*build_tiny_model(0), name="plain"))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        plain.ids(LanguageItem("describe", material_word=1), [FRAGILE_RED])


def test_the_language_recipe_starts_its_words_as_loud_as_the_image():
    from agents.tiny_model import LANGUAGE_EMBED_STD, build_tiny_model

    def word_norm(model):
        return float(model.model.text_model.embed_tokens.weight.detach().norm(dim=-1).mean())

    width = build_tiny_model(0)[0].config.text_config.hidden_size
    assert (
        word_norm(build_tiny_model(0)[0]) < 0.05 * width**0.5
    )  # the default recipe: initializer_range
    assert (
        abs(word_norm(build_tiny_model(0, language=True)[0]) - LANGUAGE_EMBED_STD * width**0.5)
        < 0.1 * LANGUAGE_EMBED_STD * width**0.5
    )
