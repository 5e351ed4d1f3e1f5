"""π0 through transformers' own PI0ForConditionalGeneration: random-weight checkpoints built from
the config class run `physteer run --agent pi0`, replay exactly, batch lanes within 1e-5 of one
by one, can be tapped and steered on the VLM stream, and bad checkpoints or settings are refused
before any episode, each named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from agents.pi0_build import build_pi0
from cli.main import main

ACTION_COLUMNS = ("a_dx", "a_dy", "a_dz", "a_grip")


@pytest.fixture(scope="module")
def pi0_dir(tmp_path_factory):
    return build_pi0(tmp_path_factory.mktemp("pi0") / "pi0", seed=1, hidden=48, chunk=6)


def run_pi0(model, out, name, *flags):
    argv = ["run", "--agent", "pi0", "--model", str(model), "--seeds", "0,1", "--max-steps", "16",
            "--image-size", "96", "--name", name, "--out", str(out), *flags]  # fmt: skip
    assert main(argv) == 0
    rows = pq.read_table(out / name / "steps.parquet").to_pylist()
    return {s: np.array([[r[k] for k in ACTION_COLUMNS] for r in sorted((r for r in rows if r["seed"] == s),
                                                                      key=lambda r: r["step"])])
            for s in (0, 1)}  # fmt: skip


@pytest.mark.parametrize("sizes", [{"hidden": 64, "chunk": 10, "expert_hidden": 32}, {"hidden": 32, "chunk": 4, "layers": 3}])  # fmt: skip
def test_a_random_pi0_runs_replays_and_batches(tmp_path, sizes):
    model = build_pi0(tmp_path / "pi0", seed=2, **sizes)
    serial = run_pi0(model, tmp_path, "serial", "--executor", "serial", "--chunk", "3")
    assert all(a.shape == (16, 4) and np.abs(a).max() <= 1 for a in serial.values())
    assert not np.array_equal(serial[0], serial[1])  # seeds draw their own noise and scenes
    assert main(["replay", str(tmp_path / "serial"), "unsteered/1"]) == 0  # exit 1 if it differs
    batched = run_pi0(
        model, tmp_path, "lanes", "--executor", "serial", "--chunk", "3", "--envs-per-worker", "2"
    )
    for s in (0, 1):
        assert np.abs(serial[s] - batched[s]).max() <= 1e-5
    # exported, the columns that do not apply to a π0 (no scripted profile, no fragility slot) are left out
    assert (
        main(["export-lerobot", str(tmp_path / "serial"), str(tmp_path / "ds"), "--no-video"]) == 0
    )
    names = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())["features"]
    assert "physteer.grip_force" in names and not {"physteer.profile", "physteer.p_fragile"} & set(
        names
    )


def test_the_image_reaches_the_tap_and_steering_moves_the_chunk(pi0_dir):
    from agents.interventions import AddVector
    from agents.pi0_agent import PI0Agent, decision_noise

    agent = PI0Agent(pi0_dir, tap_layer=0)
    b = agent.backend
    assert (
        min(b.image_check["frame_change"].values()) > 1e-3
        and b.image_check["image_precedes_question"]
    )
    frames = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    states, noise = (
        np.zeros((2, 17), np.float32),
        torch.stack([decision_noise(s, 0, 6, 8) for s in (0, 1)]),
    )
    texts = ["Put the red object in the bin."] * 2
    plain = b.sample(frames, texts, states, noise)
    assert agent.tap.latest_batch.shape[:2] == (
        2,
        b.image_tokens + 1,
    )  # image positions and the last
    vector = torch.randn(b.hidden_size, generator=torch.Generator().manual_seed(0))
    with AddVector(vector, 3.0, layer=0, positions="image").attach(b):
        steered = b.sample(frames, texts, states, noise)
    assert np.abs(steered - plain).max() > 1e-4
    assert np.array_equal(
        b.sample(frames, texts, states, noise), plain
    )  # removed: exactly as before
    agent.close()


def edit_json(path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(("change", "flags", "message"), [
    ("no-stats", [], "no normalisation statistics (state_mean, state_std, actions_mean, actions_std missing"),
    ("actions-3", [], "max_action_dim=3 is smaller than the env's 4 action dimensions"),
    ("corrupt", [], "model.safetensors"),
    ("execute-9", [], "n_action_steps=9 in processor_config.json must be an int in 1..6"),
    ("noise-3", [], "noise_scale in processor_config.json=3: must be a number in [0, 2]"),
    (None, ["--noise-scale", "-0.5"], "noise_scale=-0.5: must be a number in [0, 2]"),
    (None, ["--chunk", "7"], "chunk=7: must be an int in 1..6 (the π0 checkpoint's chunk_size)"),
    (None, ["--denoise-steps", "0"], "denoise_steps=0: must be an int >= 1"),
])  # fmt: skip
def test_bad_checkpoints_and_settings_before_any_episode(
    pi0_dir, tmp_path, capsys, change, flags, message
):
    model = tmp_path / "model"
    shutil.copytree(pi0_dir, model)
    if change == "no-stats":
        (model / "processor_config.json").write_text(
            json.dumps({"processor_class": "PI0Processor"})
        )
    elif change == "actions-3":
        edit_json(model / "config.json", max_action_dim=3)
    elif change == "execute-9":
        edit_json(model / "processor_config.json", n_action_steps=9)
    elif change == "noise-3":
        edit_json(model / "processor_config.json", noise_scale=3)
    elif change == "corrupt":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    argv = ["run", "--agent", "pi0", "--model", str(model), "--seeds", "0", "--name", "bad", "--out", str(tmp_path), *flags]  # fmt: skip
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_last_vlm_layer_reaches_no_action(pi0_dir):
    """Why PI0Backend.layers leaves the VLM's last decoder layer out: the expert reads each
    layer's keys and values, computed from the layer's input, so editing the last layer's
    output changes no action at all (an edit one layer down does)."""
    from agents.pi0_model import load_pi0

    b = load_pi0(pi0_dir)
    last = b.model.model.vlm.language_model.layers[-1]
    frames = np.full((1, 96, 96, 3), 90, np.uint8)
    args = (
        frames,
        ["Put the blue object in the bin."],
        np.zeros((1, 17), np.float32),
        torch.ones(1, 6, 8),
    )
    plain = b.sample(*args)
    hook = last.register_forward_hook(lambda m, a, out: out + 5.0)
    try:
        assert np.array_equal(b.sample(*args), plain)
    finally:
        hook.remove()
    assert len(b.layers) == len(b.model.model.vlm.language_model.layers) - 1


def test_agent_eval_and_sarm_eval_take_a_pi0(pi0_dir, tmp_path, monkeypatch):
    """`physteer agent-eval --agent pi0` runs every color × material cell; `physteer sarm-eval
    --agent pi0 --stream expert` trains an SAE on the action expert's tokens and fits and
    calibrates scorers on them (the SAE's contrast steering among its perturbations), and the
    flow baselines beside them: chunk change and the sample variance of extra noise draws."""
    out = tmp_path / "eval"
    assert main(["agent-eval", "--agent", "pi0", "--model", str(pi0_dir), "--seeds", "1", "--max-steps", "8",
                 "--denoise-steps", "2", "--out", str(out)]) == 0  # fmt: skip
    doc = json.loads((out / "summary.json").read_text())
    assert doc["config"]["agent"] == "pi0" and len(doc["episodes"]) == 4
    monkeypatch.chdir(tmp_path)
    assert main(["sarm-eval", "--agent", "pi0", "--model", str(pi0_dir), "--fit-episodes", "20", "--episodes", "1",
                 "--scorers", "mahalanobis,sae,chunk-change,sample-variance", "--variance-draws", "2",
                 "--sae-steps", "50", "--max-steps", "8", "--stream", "expert",
                 "--name", "sarm", "--no-sweep", "--no-plots"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "runs" / "sarm" / "summary.json").read_text())
    assert summary["config"]["agent"] == "pi0" and summary["config"]["stream"] == "expert"
    scorers = {"mahalanobis-mean", "sae-mean", "chunk-change", "sample-variance"}
    assert scorers <= set(summary["thresholds"])
    clean = [r for r in summary["records"] if r["condition"] == "clean" and r["monitor"] is None]
    variances = [d["scores"]["sample-variance"] for r in clean for d in r["decisions"]]
    assert variances and all(v > 0 for v in variances)  # draws of a random π0 differ
    first = clean[0]["decisions"][0]["scores"]["chunk-change"]
    assert first == 0.0  # the first decision has no earlier chunk to compare with
    assert (
        summary["d"]
        == json.loads((pi0_dir / "config.json").read_text())["dit_config"]["hidden_size"]
    )
    assert (
        main(["agent-eval", "--agent", "pi0", "--seeds", "1"]) == 2
    )  # no --model: named before any episode


def test_a_pi0_run_exports_a_dataset_lerobot_doctor_passes(pi0_dir, tmp_path):
    """`physteer export-lerobot` of a π0 run, video included: lerobot-doctor (a validator of
    LeRobot v3 datasets) finds no failing check (format, video, distribution among them)."""
    import subprocess
    import sys
    from pathlib import Path

    run_pi0(pi0_dir, tmp_path, "run", "--executor", "serial")
    assert main(["export-lerobot", str(tmp_path / "run"), str(tmp_path / "ds")]) == 0
    doctor = Path(sys.executable).parent / "lerobot-doctor"
    out = subprocess.run([str(doctor), "check", str(tmp_path / "ds")], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, timeout=300)  # fmt: skip
    checks = [line for line in out.stdout.splitlines() if line.startswith("[")]
    for name in ("Metadata & Format Compliance", "Video Integrity", "Data Distribution"):
        assert any(name in line for line in checks), out.stdout[-2000:]
    assert not [line for line in checks if line.startswith("[FAIL]")], out.stdout[-2000:]


def test_the_action_expert_stream_is_tapped_and_steered(pi0_dir, tmp_path):
    """stream="expert": the tap reads the action tokens of an expert layer (the last denoising
    step), an edit there moves the chunk and comes off exactly, and a run logs that stream's
    activations (its width is the expert's)."""
    from agents.interventions import AddVector
    from agents.pi0_agent import PI0Agent, decision_noise

    agent = PI0Agent(pi0_dir, stream="expert", tap_layer=1)
    view, policy = agent.backend, agent.policy
    assert view.image_check["frame_change"][1] > 1e-4
    frames = np.random.default_rng(1).integers(0, 255, (1, 96, 96, 3), dtype=np.uint8)
    args = (
        frames,
        ["Put the red object in the bin."],
        np.zeros((1, 17), np.float32),
        decision_noise(0, 0, 6, 8)[None],
    )
    plain = policy.sample(*args)
    assert agent.tap.latest_batch.shape == (
        1,
        policy.chunk_size + 1,
        view.hidden_size,
    )  # 6 actions + the last
    with AddVector(torch.ones(view.hidden_size), 2.0, layer=0, positions="image").attach(view):
        assert np.abs(policy.sample(*args) - plain).max() > 1e-4
    assert np.array_equal(policy.sample(*args), plain)
    agent.close()
    run_pi0(
        pi0_dir, tmp_path, "expert", "--executor", "serial", "--stream", "expert", "--layer", "1"
    )
    from safetensors.torch import load_file

    logged = load_file(tmp_path / "expert" / "activations" / "unsteered" / "seed_0.safetensors")
    assert (
        logged["decision"].shape[1:] == (policy.chunk_size + 1, view.hidden_size)
        and int(logged["layer"]) == 1
    )


def test_flow_matching_training_lowers_the_loss_on_demonstrations(tmp_path):
    """agents.train_pi0: a tiny π0 trained end to end on a few noisy-oracle demonstrations lowers
    PI0's own flow-matching loss; its batches equal PI0Backend.prepare's inputs; the saved folder
    loads as any π0 checkpoint, with the demonstrations' statistics."""
    from agents.pi0_folder import PI0Stats
    from agents.pi0_model import load_pi0
    from agents.train_pi0 import TrainPI0Config, batch_inputs, save_pi0, train_pi0
    from rollouts.vla_demos import collect_demonstrations

    demos = collect_demonstrations(2, seed=3_100_002, horizon=4, frame_every=6, max_steps=60)
    cfg = TrainPI0Config(hidden=32, expert_hidden=16, layers=2, image_size=64, chunk=4, steps=40, batch_size=8,
                         lr=3e-3, warmup_steps=5)  # fmt: skip
    backend, history = train_pi0(demos, cfg)
    assert history[-1]["loss"] < history[0]["loss"]
    rows = np.array([0, len(demos) - 1])
    texts = [str(demos.instructions[i]) for i in rows]
    ref = backend.prepare(np.asarray(demos.frames[rows]), texts)
    prompts = {t: backend.prepare(np.zeros((1, 8, 8, 3), np.uint8), t) for t in set(texts)}
    got = batch_inputs(
        backend, prompts, texts, backend.pixel_values(np.asarray(demos.frames[rows]))
    )
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    loaded = load_pi0(save_pi0(backend, tmp_path / "ckpt", {"history": history}))
    assert np.allclose(
        loaded.stats.actions_std, PI0Stats.from_folder(tmp_path / "ckpt").actions_std
    )
    assert (tmp_path / "ckpt" / "training_report.json").is_file() and loaded.chunk_size == 4


def test_learning_rate_warms_up_then_follows_the_schedule():
    from agents.train_pi0 import TrainPI0Config, learning_rate

    cosine = TrainPI0Config(steps=1000, warmup_steps=100, lr=1e-3)
    assert learning_rate(cosine, 0) == pytest.approx(1e-5)
    assert learning_rate(cosine, 99) == pytest.approx(1e-3)
    assert learning_rate(cosine, 550) == pytest.approx(5e-4)  # half way through the decay
    assert learning_rate(cosine, 999) < 1e-6
    constant = TrainPI0Config(steps=1000, warmup_steps=100, lr=1e-3, schedule="constant")
    assert learning_rate(constant, 999) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"schedule='linear'.*'cosine', 'constant'"):
        TrainPI0Config(schedule="linear").validate()


def test_the_checkpoints_n_action_steps_is_the_default_chunk(pi0_dir, tmp_path):
    from agents.pi0_agent import PI0Agent

    assert PI0Agent(pi0_dir, tap_layer=None).chunk == 6  # none written: the whole chunk
    model = tmp_path / "model"
    shutil.copytree(pi0_dir, model)
    edit_json(model / "processor_config.json", n_action_steps=2)
    assert PI0Agent(model, tap_layer=None).chunk == 2
    assert PI0Agent(model, chunk=5, tap_layer=None).chunk == 5  # an explicit chunk wins


def test_the_noise_scale_scales_the_starting_noise_and_defaults_to_the_checkpoints(
    pi0_dir, tmp_path
):
    from agents.pi0_agent import PI0Agent

    rng = np.random.default_rng(4)
    obs = {
        "image": rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
        "state": np.zeros(17, np.float32),
    }
    info = {"instruction": "Put the red object in the bin."}

    def first_chunk(model, **kw):
        agent = PI0Agent(model, chunk=6, tap_layer=None, **kw)
        agent.reset(7)
        return np.stack([agent.act(obs, info) for _ in range(6)])

    own = first_chunk(pi0_dir)
    assert np.array_equal(
        first_chunk(pi0_dir, noise_scale=1.0), own
    )  # 1: π0's own sampling, bit for bit
    half = first_chunk(pi0_dir, noise_scale=0.5)
    assert np.abs(half - own).max() > 1e-4
    model = tmp_path / "model"
    shutil.copytree(pi0_dir, model)
    edit_json(model / "processor_config.json", noise_scale=0.5)
    assert np.array_equal(first_chunk(model), half)  # the checkpoint's default
    assert np.array_equal(first_chunk(model, noise_scale=1.0), own)  # an explicit scale wins


def test_blend_mixes_the_previous_chunks_overlap_into_the_executed_actions(pi0_dir, tmp_path):
    """With chunk 3 of 6 executed, the second decision's action i is (1 − w)·its own + w·the
    first chunk's action 3 + i (clipped); the first decision is its own; w = 0 is π0's own
    execution bit for bit; the checkpoint's "blend" is the default; the run's fingerprint
    changes with it (a resume cannot mix blends); a blend of 1 is refused by name."""
    from agents.pi0_agent import PI0Agent
    from agents.pi0_folder import pi0_fingerprint

    rng = np.random.default_rng(5)
    info = {"instruction": "Put the red object in the bin."}
    observations = [{"image": rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
                     "state": rng.normal(0, 0.05, 17).astype(np.float32)} for _ in range(6)]  # fmt: skip

    def run(model, **kw):
        agent = PI0Agent(model, chunk=3, tap_layer=None, **kw)
        agent.reset(3)
        return np.stack([agent.act(o, info) for o in observations])

    own = run(pi0_dir)
    assert np.array_equal(run(pi0_dir, blend=0.0), own)
    agent = PI0Agent(pi0_dir, chunk=3, tap_layer=None)
    agent.reset(3)
    for o in observations[:3]:
        agent.act(o, info)
    first_chunk = agent.lane(0).predicted.copy()  # the first decision's whole chunk (6 actions)
    mixed = run(pi0_dir, blend=0.25)
    assert np.array_equal(mixed[:3], own[:3])  # nothing before it to blend with
    second_own = own[3:6]  # the second decision's own actions (clipped), without blending
    expected = np.clip(0.75 * np.clip(second_own, -1, 1) + 0.25 * first_chunk[3:6], -1, 1)
    inside = np.abs(second_own).max(axis=1) < 1  # rows clipping did not change
    assert np.allclose(mixed[3:6][inside], expected[inside], atol=1e-6) and not np.array_equal(
        mixed, own
    )
    model = tmp_path / "model"
    shutil.copytree(pi0_dir, model)
    before = pi0_fingerprint(model)
    edit_json(model / "processor_config.json", blend=0.25)
    assert np.array_equal(run(model), mixed) and pi0_fingerprint(model) != before
    with pytest.raises(ValueError, match="blend=1.0"):
        PI0Agent(pi0_dir, blend=1.0)
    assert main(["agent-eval", "--agent", "vla", "--blend", "0.2", "--seeds", "1"]) == 2


def test_sample_variance_is_a_signal_that_leaves_the_actions_and_the_tap_alone(pi0_dir):
    from agents.pi0_agent import PI0Agent

    rng = np.random.default_rng(3)
    obs = [{"image": rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
            "state": rng.normal(size=17).astype(np.float32)} for _ in range(2)]  # fmt: skip
    infos = [{"instruction": "Put the red object in the bin."}] * 2
    runs = {}
    for draws in (0, 3):
        agent = PI0Agent(pi0_dir, chunk=2, tap_layer=0, variance_draws=draws)
        for lane, seed in enumerate((5, 6)):
            agent.reset(seed, lane)
        actions = agent.act_batch(obs, infos, [0, 1])
        runs[draws] = (
            actions,
            agent.tap.latest_batch.clone(),
            [agent.decision_for(k) for k in (0, 1)],
        )
    (plain, tapped, decisions), (same, tapped_too, with_draws) = runs[0], runs[3]
    assert all(
        np.array_equal(a, b) for a, b in zip(plain, same, strict=True)
    )  # the decision's own chunk
    assert torch.equal(tapped, tapped_too)  # the tap keeps the decision's own forward
    assert all("sample_variance" not in d for d in decisions)
    values = [d["sample_variance"] for d in with_draws]
    assert all(np.isfinite(v) and v > 0 for v in values) and values[0] != values[1]
    with pytest.raises(ValueError, match="variance_draws=-1: must be an int in 0..64"):
        PI0Agent(pi0_dir, variance_draws=-1)


def test_sample_variance_reaches_the_step_log_and_only_a_pi0_takes_draws(pi0_dir, tmp_path):
    from rollouts.experiment_config import ExperimentConfig
    from studies.monitor_bench.config import MonitorBenchConfig

    run_pi0(
        pi0_dir, tmp_path, "draws", "--executor", "serial", "--chunk", "4", "--variance-draws", "2"
    )
    rows = pq.read_table(tmp_path / "draws" / "steps.parquet").to_pylist()
    decided = [r["sample_variance"] for r in rows if r["decided"]]
    assert decided and all(v > 0 for v in decided)
    assert all(np.isnan(r["sample_variance"]) for r in rows if not r["decided"])
    with pytest.raises(ValueError, match="variance_draws 2, noise_scale None, blend None: a π0.s"):
        ExperimentConfig(agent="vla", model="tiny", variance_draws=2).validate()
    with pytest.raises(
        ValueError, match=r"scorers \['action-entropy'\] read signals agent 'pi0' does not report"
    ):
        MonitorBenchConfig(agent="pi0", model=str(pi0_dir), scorers=("action-entropy",)).check()
    bench = MonitorBenchConfig(agent="pi0", model=str(pi0_dir), scorers=("sample-variance", "chunk-change"),
                               enforce=("chunk-change",))  # fmt: skip
    bench.check()
    assert bench.experiment("x", ["unsteered"], [0]).variance_draws == 4
