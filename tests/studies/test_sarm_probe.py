"""sarm-eval with the derived scorers on a random-weight tiny model: the linear probe (trained on
a probe-fit run of its attacks on the fit seeds, evaluated on a held-out kind) and the combined
scorer, both saved, loaded by the runner, scored in shadow and enforced, with their figures in
summary.json."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from cli.main import main
from monitors.scorers import load_scorer
from studies.sarm.config import SarmEvalConfig
from studies.sarm.probe import attack_kind

SCORERS = ("sae-mean", "mahalanobis-mean", "probe-mean", "combined")


@pytest.fixture(scope="module")
def run(tiny_dir, tmp_path_factory):
    path = tiny_dir
    work = tmp_path_factory.mktemp("work")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        rc = main([
            "sarm-eval", "--model", str(path), "--fit-episodes", "4", "--calibration", "sigma", "--episodes", "2",
            "--perturbations", "ta2:4@10,prompt@10", "--probe-attacks", "ta2:4@10,noise:0.2@10",
            "--scorers", "sae,mahalanobis,probe,combined", "--sae-steps", "40", "--max-steps", "40",
            "--n-boot", "50", "--no-plots", "--name", "probe",
        ])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert rc == 0
    return work / "runs" / "probe"


def test_figures_of_probe_and_combined_in_the_summary(run):
    doc = json.loads((run / "summary.json").read_text())
    summ = doc["summary"]
    assert list(summ["clean"]) == list(SCORERS)
    for per in summ["perturbations"].values():
        for s in SCORERS:
            assert per[s]["detection"]["n"] == 2 and 0 <= per[s]["detection"]["rate"] <= 1
            assert per[s]["auc"]["n_pos"] > 0
    assert len(doc["records"]) == 2 * 3 * (1 + len(SCORERS))
    probe = summ["probe"]
    assert probe["trained_kinds"] == ["noise", "ta2"] and probe["held_out_kinds"] == ["prompt"]
    rows = {r["perturbation"]: r for r in probe["rows"]}
    assert rows["ta2:4@10"]["split"] == "trained" and rows["prompt@10"]["split"] == "held-out"
    held = rows["prompt@10"]
    assert (
        held["detection"]["probe-mean"]
        == summ["perturbations"]["prompt@10"]["probe-mean"]["detection"]
    )
    assert set(held["auc"]) == set(SCORERS)
    combined = summ["combined"]
    assert combined["parts"] == ["sae-mean", "mahalanobis-mean"]
    assert combined["part_thresholds"] == [summ["clean"][p]["threshold"] for p in combined["parts"]]


def test_probe_trains_on_the_fit_seeds_only(run):
    split = json.loads((run / "scorers" / "fit.json").read_text())["seed_split"]
    episodes = pq.read_table(run / "probe-fit" / "episodes.parquet").to_pylist()
    assert {e["condition"] for e in episodes} == {"ta2:4@10", "noise:0.2@10"}
    assert sorted({e["seed"] for e in episodes}) == split["fit"]
    assert not set(split["fit"]) & (set(split["calibration"]) | set(split["eval"]))
    probe = load_scorer(run / "scorers" / "probe-mean")
    assert probe.trained_on == ["noise", "ta2"] and probe.use_last
    assert probe.threshold is not None and probe.calibration.seeds == split["calibration"]
    n_fit = sum(e["decisions"] for e in pq.read_table(run / "fit" / "episodes.parquet").to_pylist()
                if e["seed"] in split["fit"])  # fmt: skip
    attacked = sum(
        sum(step >= 10 for step in load_file(str(p))["decision_steps"].tolist())
        for p in (run / "probe-fit" / "activations").glob("*/seed_*.safetensors")
    )
    assert probe.n_train == {"clean": n_fit, "perturbed": attacked}


def test_the_loop_scores_what_the_saved_scorers_score(run):
    """The shadow scores logged in eval equal the saved scorers' scores of the logged decision
    activations: the probe read every row (image tokens and the last token), the combined
    scorer the image rows, as its parts."""
    doc = json.loads((run / "summary.json").read_text())
    probe = load_scorer(run / "scorers" / "probe-mean")
    combined = load_scorer(run / "scorers" / "combined")
    for r in doc["records"]:
        if r["monitor"] is not None or r["condition"] != "prompt@10":
            continue
        acts = load_file(
            str(run / "eval" / "activations" / "prompt@10" / f"seed_{r['seed']}.safetensors")
        )
        n_img = int(acts["n_image_tokens"])
        assert len(r["decisions"]) == len(acts["decision"])
        for d, a in zip(r["decisions"], acts["decision"], strict=True):
            assert d["scores"]["probe-mean"] == pytest.approx(probe.score(a), rel=1e-5)
            assert d["scores"]["combined"] == pytest.approx(combined.score(a[:n_img]), rel=1e-5)


def test_probe_trained_on_sae_overdrive_alone(tiny_dir, tmp_path):
    """A probe-only run whose training attack is the contrast latent's overdrive while the eval
    runs no SAE attack: the probe-fit stage finds the latent and saves the SAE itself."""
    from studies.sarm.eval import run_sarm_eval

    cfg = SarmEvalConfig(model=str(tiny_dir), fit_episodes=4, calibration="sigma", episodes=2, perturbations=("ta2:4@10",),
                         probe_attacks=("sae:contrast:50@10",), scorers=("probe",), sae_steps=30, max_steps=30,
                         n_boot=20, plots=False, out=str(tmp_path / "p"))  # fmt: skip
    doc = run_sarm_eval(cfg, log=lambda *a: None)
    probe = doc["summary"]["probe"]
    (condition,) = probe["conditions"]
    assert condition.startswith("sae:") and ":contrast:" not in condition
    assert probe["trained_kinds"] == ["sae"] and probe["held_out_kinds"] == ["ta2"]
    assert (tmp_path / "p" / "sae").is_dir() and doc["thresholds"].keys() == {"probe-mean"}


@pytest.mark.parametrize("fields, named", [
    ({"scorers": ("sae", "combined")}, "combined_parts"),
    ({"scorers": ("sae", "mahalanobis", "combined"), "combined_parts": ("sae",)}, "at least 2"),
    ({"scorers": ("probe",), "probe_attacks": ()}, "probe_attacks"),
    ({"scorers": ("probe",), "probe_attacks": ("unsteered",)}, "probe attack 'unsteered'"),
    ({"scorers": ("probe",), "probe_attacks": ("laser:3",)}, "laser"),
    ({"scorers": ("chunk-change",)}, "agent 'vlm' does not report"),
    ({"agent": "vla", "scorers": ("sample-variance",)}, "agent 'vla' does not report"),
    ({"agent": "pi0", "model": "tiny", "scorers": ("sample-variance",)}, "variance_draws=0"),
    ({"agent": "pi0", "model": "tiny", "scorers": ("chunk-change",), "variance_draws": 2}, "only for it"),
    ({"agent": "vla", "scorers": ("sae", "action-entropy", "combined"),
      "combined_parts": ("sae", "action-entropy")}, "combined_parts"),
    ({"scorers": ("signal",)}, "scorer 'signal'"),
])  # fmt: skip
def test_bad_settings_fail_before_any_work(fields, named):
    with pytest.raises(ValueError, match=named):
        SarmEvalConfig(**fields).check()


def test_attack_kind():
    assert [attack_kind(p) for p in ("ta2:4@10", "sae:contrast:50@10", "noise:0.2@10", "prompt@10")] == [
        "ta2", "sae", "noise", "prompt"]  # fmt: skip


def test_tradeoff_curve_reproduces_its_parts_at_the_ends(run, tmp_path):
    """w = 1 is the SAE part alone and w = 0 Mahalanobis alone, each recalibrated the same way:
    their shadow detections must equal the enforced monitors' detection in the summary."""
    from studies.sarm.tradeoff import DEFAULT_WEIGHTS, plot_tradeoff

    doc = json.loads((run / "summary.json").read_text())
    summ = doc["summary"]
    curve = summ["tradeoff"]
    assert curve["parts"] == ["sae-mean", "mahalanobis-mean"]
    assert [r["w"] for r in curve["rows"]] == list(DEFAULT_WEIGHTS)
    ends = {1.0: "sae-mean", 0.0: "mahalanobis-mean"}
    for row in curve["rows"]:
        assert row["clean_alarm"]["n"] == 2 and set(row["kinds"]) == {"ta2", "prompt"}
        if row["w"] in ends:
            for cond, det in row["detection"].items():
                enforced = summ["perturbations"][cond][ends[row["w"]]]["detection"]
                assert (det["k"], det["n"]) == (enforced["k"], enforced["n"]), (row["w"], cond)
    png = plot_tradeoff(curve["rows"], tmp_path / "tradeoff.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
