"""`physteer vla-study` on the shipped tiny VLA at a tiny budget: the image tokens it relies on,
files, summary fields, reuse and resume on rerun, bad input before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from cli.main import main
from studies.vla.study import VLAStudyConfig, run_vla_study

TINY = dict(seeds=2, max_steps=40, images=32, sae_steps=100, sae_levels=[0.0, -2.0], dom_scales=[2.0],
            neuron_words=["quickly", "slowly"], executor="serial", envs_per_worker=2)  # fmt: skip
FLAGS = ["--seeds", "2", "--max-steps", "40", "--images", "32", "--sae-steps", "100", "--sae-levels", "0,-2",
         "--dom-scales", "2", "--neuron-words", "quickly,slowly", "--executor", "serial", "--envs-per-worker", "2"]  # fmt: skip


def test_vla_decision_image_tokens_equal_the_collect_path():
    """The VLA's decision prompt shares the question prompt's prefix up to the image block, so
    the tap-layer image tokens of a decision equal those `physteer collect` stores."""
    import gymnasium as gym

    import envs  # noqa: F401 - registers the env
    from agents.taps import ResidualTap
    from agents.vla_agent import VLAAgent
    from studies.collect import image_token_activations

    agent = VLAAgent("tiny-vla", device="cpu")
    env = gym.make("physteer/FrankaPick-v0", obs_mode="rgb+state", image_size=384)
    obs, info = env.reset(seed=5, options={"material": "fragile"})
    env.close()
    agent.reset(5)
    agent.act(obs, info)
    decision = agent.tap.latest_batch[0, : agent.tap.n_image_tokens].clone()
    with ResidualTap(agent.tap.layer, include_last=False).attach(agent.backend) as tap:
        (_, collected, _), = image_token_activations(agent.backend, tap, obs["image"][None])  # fmt: skip
    assert decision.shape == collected[0].shape == (81, agent.backend.hidden_size)
    torch.testing.assert_close(decision, collected[0], atol=1e-5, rtol=0)
    # not vacuous: the tokens after the image block (the VLA's own text) differ between prompts
    assert agent.tap.latest_batch[0, -1].sub(collected[0, -1]).abs().max() > 1e-3


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study through the CLI; its config and folder."""
    out = tmp_path_factory.mktemp("study")
    assert main(["vla-study", "--out", str(out), "--name", "s", *FLAGS]) == 0
    return VLAStudyConfig(out=str(out), name="s", **TINY)


def test_study_writes_files_and_summary(study):
    root = study.root
    for f in ("study_config.json", "store/dom_vector.safetensors", "sae/sae/config.json", "discovery/discovery.json",
              "episodes/episodes.parquet", "summary.json", "dose_response.png"):  # fmt: skip
        assert (root / f).is_file(), f
    s = json.loads((root / "summary.json").read_text())
    m = s["matched_norm"]
    assert m["sae_condition"] == "sae:fragility:-2" and m["random_condition"].startswith("random:")
    assert m["random_norm"] == pytest.approx(m["sae_norm"], rel=1e-3)  # per-token norms matched
    assert m["random_norm"] == pytest.approx(m["random_scale"] * m["dom_norm"], rel=1e-4)
    assert m["token_norm"] > 0 and m["n_tokens"] > 0
    names = [c["condition"] for c in s["conditions"]]
    assert names == ["unsteered", "sae:fragility:+0", "sae:fragility:-2", m["random_condition"], "dom:-2",
                     "neuron:quickly:5", "neuron:slowly:5", "neuron-random:quickly:5", "neuron-random:slowly:5"]  # fmt: skip
    for c in s["conditions"]:
        assert c["n"] == 2
        for k in ("peak_grip_force", "carry_speed", "release_height", "broken", "success"):
            assert {"value", "low", "high", "n"} <= set(c[k])
        assert c["peak_grip_force"]["n"] == 2
    assert s["conditions"][0]["peak_grip_force"]["value"] > 0  # the unsteered VLA grips
    d = s["dose_response"]
    assert d["strengths"] == [0.0, 1.0, 3.0] and d["conditions"] == names[:3]
    assert d["spearman_rho"] is None or -1 <= d["spearman_rho"] <= 1
    assert set(d["flags"]) == {"monotone", "graded", "breakage_rises", "random_small"}
    assert all(isinstance(v, bool) for v in d["flags"].values())
    assert d["separated_intermediates"] == [] or d["separated_intermediates"] == [1.0]
    assert set(s["neurons"]) == {"quickly", "slowly", "random quickly", "random slowly"}
    q = s["neurons"]["quickly"]
    assert q["expected_sign"] == 1 and isinstance(q["flags"]["expected_direction"], bool)
    assert {"value", "low", "high", "n"} <= set(q["carry_speed_change"])
    clusters = s["neuron_clusters"]
    assert {"quickly", "slowly"} == set(clusters)
    assert all(len(c["neuron_ids"]) == 10 for c in clusters.values())
    assert s["resources"]["n_fragility_features"] > 0 and s["acceptance"]["spearman_rho_min"] == 0.9


def test_table_fits_80_columns(study):
    from reports.steering import table_fits
    from studies.vla.report import acceptance_table, conditions_table

    s = json.loads((study.root / "summary.json").read_text())
    console = Console(width=80)
    assert table_fits(conditions_table(s), console)
    with console.capture() as cap:
        console.print(acceptance_table(s))
    assert max(len(line) for line in cap.get().splitlines()) <= 80


def test_rerun_reuses_resources_and_resumes(study):
    root = study.root
    kept = [
        root / f
        for f in (
            "store/dom_vector.safetensors",
            "sae/sae/sae.safetensors",
            "discovery/discovery.json",
        )
    ]
    episodes = sorted((root / "episodes" / "episodes").rglob("seed_*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in kept + episodes}
    gone = root / "episodes" / "episodes" / "dom_-2" / "seed_1.parquet"
    gone.unlink()
    old = json.loads((root / "summary.json").read_text())
    run_vla_study(study, Console(quiet=True), progress=False)
    assert gone.is_file()  # the missing episode was run again
    assert all(
        p.stat().st_mtime_ns == t for p, t in before.items() if p != gone
    )  # nothing else redone
    new = json.loads((root / "summary.json").read_text())
    assert new["matched_norm"] == old["matched_norm"]
    assert new["conditions"] == old["conditions"]  # an episode is a pure function of its seed


@pytest.mark.parametrize(("flags", "message"), [
    (["--sae-levels", "0"], r"sae_levels=\[0.0\]: on fragile objects give at least 2"),
    (["--sae-levels", "0.5,1.5"], "levels X < 1"),
    (["--material", "glass"], r"material='glass': allowed \['fragile', 'rigid'\]"),
    (["--material", "rigid"], r"sae_levels=\[0.0, -2.0\]: on rigid objects .* X > 0"),
    (["--neuron-words", "quickly,wobbly"], r"unknown or repeated \['wobbly'\].*allowed"),
    (["--dom-scales", "0"], "dom_scales"),
    (["--seeds", "1"], "seeds=1"),
    (["--model", "nowhere"], "nowhere"),
])  # fmt: skip
def test_bad_input_fails_before_any_work(tmp_path, capsys, flags, message):
    import re

    assert main(["vla-study", "--out", str(tmp_path), *FLAGS, *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_changed_resource_settings_are_refused(study, capsys):
    assert main(["vla-study", "--out", study.out, "--name", "s", *FLAGS, "--images", "48"]) == 2
    assert "other ['images']" in capsys.readouterr().err
    assert main(["vla-study", "--out", study.out, "--name", "s", *FLAGS, "--material", "rigid",
                 "--sae-levels", "0.5,1"]) == 2  # fmt: skip
    assert "other ['material']" in capsys.readouterr().err


def test_registering_the_command_imports_no_transformers():
    import subprocess
    import sys

    code = ("import argparse, sys; from cli import vla as cmd_vla; "
            "cmd_vla.register(argparse.ArgumentParser().add_subparsers()); "
            "print('transformers' in sys.modules)")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def _synthetic_rows(cfg, random_condition, grip_of, broken_of, seeds=20):
    rng = np.random.default_rng(0)
    rows = []
    for cond in cfg.conditions(random_condition):
        for seed in range(seeds):
            rows.append({"condition": cond, "seed": seed, "success": True, "broken": bool(rng.random() < broken_of(cond)),
                         "peak_force": 0.0, "steps": 80, "p_fragile_mean": 0.5,
                         "peak_grip_force": grip_of(cond) + rng.normal(0, 0.3), "carry_speed": 0.2,
                         "release_height": 0.05})  # fmt: skip
    return rows


def test_acceptance_flags_on_known_answers():
    """Synthetic episodes whose answer is known: a graded, monotone rise with a small random
    effect passes every dose flag; a flat response with a large random effect fails them."""
    from studies.vla.config import VLAStudyConfig, sae_condition
    from studies.vla.summary import summarize_vla_study

    cfg = VLAStudyConfig(sae_levels=[0.8, 0.6, 0.4, 0.2, 0.0], dom_scales=[0.5], neuron_words=[])
    matched = {"random_condition": "random:1"}
    strength = {sae_condition(x): 1 - x for x in cfg.sae_levels}
    rising = summarize_vla_study(
        _synthetic_rows(cfg, "random:1", lambda c: 6 + 20 * strength.get(c, 0) + (0.5 if c == "random:1" else 0),
                        lambda c: 0.0 if c == "unsteered" else (0.9 if c == sae_condition(0.0) else 0.0)),
        cfg, matched)  # fmt: skip
    d = rising["dose_response"]
    assert d["spearman_rho"] == pytest.approx(1.0) and len(d["separated_intermediates"]) >= 2
    assert d["flags"] == {
        "monotone": True,
        "graded": True,
        "breakage_rises": True,
        "random_small": True,
    }
    flat = summarize_vla_study(
        _synthetic_rows(cfg, "random:1", lambda c: 6 + (3 if c == "random:1" else 0) + (1 if c in strength else 0),
                        lambda c: 0.0), cfg, matched)  # fmt: skip
    f = flat["dose_response"]["flags"]
    assert not f["graded"] and not f["breakage_rises"] and not f["random_small"]


def test_rigid_study_steers_toward_fragile_and_reads_a_fall():
    """On rigid objects the levels run from the rigid level toward fragile, dom flips sign, a
    falling grip is the expected direction and there is no breakage flag (rigid never breaks)."""
    from studies.vla.config import VLAStudyConfig, sae_condition
    from studies.vla.summary import summarize_vla_study

    cfg = VLAStudyConfig(material="rigid", dom_scales=[0.5], neuron_words=[])
    assert cfg.levels == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert cfg.conditions("random:1") == [
        "unsteered",
        *map(sae_condition, cfg.levels),
        "random:1",
        "dom:+0.5",
    ]
    strength = {sae_condition(x): x for x in cfg.levels}
    falling = summarize_vla_study(
        _synthetic_rows(cfg, "random:1", lambda c: 35 - 25 * strength.get(c, 0) + (0.5 if c == "random:1" else 0),
                        lambda c: 0.0), cfg, {"random_condition": "random:1"})  # fmt: skip
    d = falling["dose_response"]
    assert d["strengths"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0]) and d[
        "spearman_rho"
    ] == pytest.approx(-1.0)
    assert d["flags"] == {"monotone": True, "graded": True, "random_small": True}
    rising = summarize_vla_study(
        _synthetic_rows(cfg, "random:1", lambda c: 10 + 25 * strength.get(c, 0), lambda c: 0.0), cfg,
        {"random_condition": "random:1"})  # fmt: skip
    assert not rising["dose_response"]["flags"]["monotone"]  # the wrong direction does not pass


def test_unbreakable_study_passes_the_option_and_drops_the_breakage_flag():
    from studies.vla.study import VLAStudyConfig
    from studies.vla.summary import summarize_vla_study

    cfg = VLAStudyConfig(unbreakable=True, dom_scales=[0.5], neuron_words=[])
    assert cfg.experiment("random:1", {}).unbreakable  # every episode of the study
    s = summarize_vla_study(_synthetic_rows(cfg, "random:1", lambda c: 7.0, lambda c: 0.0), cfg,
                            {"random_condition": "random:1"})  # fmt: skip
    assert s["dose_response"]["unbreakable"] and set(s["dose_response"]["flags"]) == {
        "monotone",
        "graded",
        "random_small",
    }
