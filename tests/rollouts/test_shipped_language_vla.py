"""The shipped language-grounded tiny VLA (agents/tiny_vla_language/), test-sized: it has a
language side, and a handling word in its instruction sets the handling on both materials
(seeds 0..19 of `physteer run`: "firmly" raises the mean closing command on fragile objects by
+0.65, "gently" lowers it on rigid ones by −0.69, results page). One seed per color × material."""

from __future__ import annotations

import numpy as np

from agents.vla_agent import VLAAgent
from agents.vla_model import TINY_VLA_DIR
from studies.agent_eval import run_cells

LANGUAGE_VLA = TINY_VLA_DIR.parent / "tiny_vla_language"


def _command(rows: list[dict], material: str) -> float:
    return float(np.mean([r["grip_command"] for r in rows if r["material"] == material]))


def test_a_handling_word_sets_the_handling_on_both_materials():
    from studies.jsae_study import check_language_side

    agent = VLAAgent(str(LANGUAGE_VLA), tap_layer=None, device="cpu")
    try:
        check_language_side(agent.backend, str(LANGUAGE_VLA))  # raises without one
        runs = {word: run_cells(agent, seeds=1, first_seed=0, envs=4, unbreakable=True, handling=word)
                for word in (None, "firmly", "gently")}  # fmt: skip
    finally:
        agent.close()
    plain = {m: _command(runs[None], m) for m in ("fragile", "rigid")}
    assert plain["fragile"] < 0.3 < 0.6 < plain["rigid"]  # the plain instruction: by material
    assert (
        _command(runs["firmly"], "fragile") > plain["fragile"] + 0.4
    )  # the word wins over the eyes
    assert _command(runs["gently"], "rigid") < plain["rigid"] - 0.4
