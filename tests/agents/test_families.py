"""Every common VLM family through the same code: load by path, image tokens, taps, interventions,
P(yes), the SARM monitor and a `physteer run`. Each family is a tiny random-weight instance built
locally from its transformers config class (agents.tiny_families), saved with its processor."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from agents.backend import VLMBackend, load_vlm
from agents.interventions import AddVector, NeuronOverride, SAEFeatureSteering
from agents.neurons import random_cluster, select_cluster
from agents.taps import ResidualTap
from agents.tiny_families import FAMILIES, build_family
from agents.vlm_agent import VLMAgent
from envs import FrankaPickEnv
from monitors.sae_scorer import SAEReconstructionScorer
from monitors.sarm import SARMMonitor
from sae import MatryoshkaSAE, default_config

#: Image tokens per 384² frame, as each family's processor makes them.
IMAGE_TOKENS = {"idefics3": 4, "idefics3-split": 20, "smolvlm2": 4, "qwen2_5_vl": 16,
                "llava": 16, "paligemma": 16}  # fmt: skip


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Family name → saved folder, built on first use (once per session)."""
    root = tmp_path_factory.mktemp("families")
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_family(name, root / name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def backends(family_dirs) -> dict:
    """Family name → VLMBackend loaded by path through load_vlm (once per session)."""
    cache: dict = {}

    def get(name: str) -> VLMBackend:
        if name not in cache:
            cache[name] = load_vlm(str(family_dirs(name)), device="cpu", dtype="float32")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Two 384² camera frames of the env (a red and a blue object)."""
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=384)
    out = []
    for seed in (0, 1):
        env.reset(seed=seed)
        out.append(env.render())
    env.close()
    return np.stack(out)


def expected_count(backend: VLMBackend, inputs: dict) -> int:
    """Image tokens per frame by the family's own rule, read off the processor and its output."""
    proc, kind = backend.processor, backend.model_type
    if kind in ("idefics3", "smolvlm"):
        return proc.image_seq_len * inputs["pixel_values"].shape[1]  # tiles + the global image
    if kind == "qwen2_5_vl":
        return int(inputs["image_grid_thw"][0].prod()) // proc.image_processor.merge_size**2
    if kind == "llava":
        crop = proc.image_processor.crop_size["height"]
        return (crop // proc.patch_size) ** 2
    if kind == "paligemma":
        return proc.image_seq_length
    raise AssertionError(f"no rule for {kind}")


@pytest.mark.parametrize("family", FAMILIES)
def test_image_positions_and_tap_match_the_processor(family, backends, frames) -> None:
    backend = backends(family)
    ref = backend.processor_inputs(list(frames))
    fast = backend.prepare(list(frames))
    assert set(fast) == set(ref) and all(torch.equal(fast[k], ref[k]) for k in ref)
    mask = ref["input_ids"] == backend.image_token_id
    n = expected_count(backend, ref)
    assert n == IMAGE_TOKENS[family]
    assert mask.sum(dim=1).tolist() == [n, n]
    with ResidualTap(0).attach(backend) as tap:
        out = backend.forward(ref, output_hidden_states=True)
    want = mask.nonzero()[:, 1].view(2, n)
    assert torch.equal(tap.positions_batch[:, :n].cpu(), want)
    assert tap.n_image_tokens == n and tap.latest.shape == (n + 1, backend.hidden_size)
    hidden = out.hidden_states[1]  # output of decoder layer 0
    rows = torch.arange(2).unsqueeze(1)
    torch.testing.assert_close(tap.latest_batch, hidden[rows, tap.positions_batch].float())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_image_reaches_the_tapped_positions(family, backends) -> None:
    """The load-time check (agents.image_check) passes every family: a changed frame changes the
    image positions at the first and the last layer; a changed question leaves them alone where
    the image precedes it, except in PaliGemma's prefix-LM (bidirectional over the prefix)."""
    from agents.image_check import MIN_CHANGE, check_image_reaches

    backend = backends(family)
    found = check_image_reaches(backend, backend.n_layers - 1)
    assert min(found["frame_change"].values()) > MIN_CHANGE
    if found["image_precedes_question"] and family != "paligemma":
        assert found["question_change"] < 1e-4


def test_image_splitting_changes_the_token_count(family_dirs, frames) -> None:
    split = load_vlm(str(family_dirs("idefics3-split")), device="cpu")
    whole = load_vlm(str(family_dirs("idefics3-split")), device="cpu", image_splitting=False)
    count = [
        int((b.prepare([frames[0]])["input_ids"] == b.image_token_id).sum()) for b in (split, whole)
    ]
    assert count == [20, 4]  # 2×2 tiles + the global image, 4 tokens each; or the frame alone
    with pytest.raises(ValueError, match="no image splitting"):
        load_vlm(str(family_dirs("llava")), device="cpu", image_splitting=False)


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())  # noqa: SLF001


@pytest.mark.parametrize("family", FAMILIES)
def test_every_intervention_changes_logits_and_leaves_no_trace(family, backends, frames) -> None:
    backend = backends(family)
    d = backend.hidden_size
    base = backend.next_token_logits(list(frames))
    hooks = _hooks(backend.model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sae = MatryoshkaSAE(default_config(d)).eval()
        vector = torch.randn(d)
    prefix = sae.config.prefixes[1]
    interventions = {
        "add": AddVector(vector, scale=8.0, layer=0),
        "add-last": AddVector(vector, scale=8.0, layer=1, positions="image+last"),
        "sae-delta": SAEFeatureSteering(sae, feature=3, magnitude=20.0, prefix=prefix, layer=0),
        "sae-replace": SAEFeatureSteering(sae, 3, 20.0, prefix=prefix, mode="replace", layer=0),
        "neuron": NeuronOverride(0, list(range(8)), 10.0),
        "cluster": select_cluster(backend, "fragile", size=6).override(10.0),
        "random-cluster": random_cluster(backend, 1, 6, seed=0).override(10.0),
    }
    for name, intervention in interventions.items():
        with intervention.attach(backend):
            steered = backend.next_token_logits(list(frames))
        assert (steered - base).abs().max() > 1e-3, f"{family}: {name} did not change the logits"
        assert torch.equal(backend.next_token_logits(list(frames)), base), (
            f"{family}: {name} left a trace"
        )
        assert _hooks(backend.model) == hooks


@pytest.mark.parametrize("family", FAMILIES)
def test_prob_yes_float32_and_bfloat16(family, backends, family_dirs, frames) -> None:
    backend = backends(family)
    p = backend.prob_yes(list(frames))
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    one_by_one = np.array([backend.prob_yes([f])[0] for f in frames])
    np.testing.assert_allclose(p, one_by_one, atol=1e-5)
    half = load_vlm(str(family_dirs(family)), device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    with ResidualTap(0).attach(half) as tap:
        q = half.prob_yes(list(frames))
    assert tap.latest.dtype == torch.float32
    np.testing.assert_allclose(q, p, atol=0.05)


def _decision_acts(agent: VLMAgent, env: FrankaPickEnv, seeds: range) -> list[torch.Tensor]:
    acts = []
    for seed in seeds:
        env.reset(seed=seed)
        agent.p_fragile(env.render())
        acts.append(agent.tap.image_activations.clone())
    return acts


@pytest.mark.parametrize("family", FAMILIES)
def test_sarm_monitor_scores_and_vetoes(family, backends, family_dirs, tmp_path) -> None:
    backend = backends(family)
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="rgb+state", image_size=128)
    hooks = _hooks(backend.model)
    agent = VLMAgent(backend, decide_every=1, tap_layer=0)
    try:
        clean = _decision_acts(agent, env, range(12))
        scorer = SAEReconstructionScorer(steps=150, batch_size=64, lr=5e-3, model=family, layer=0)
        scorer.fit(clean)
        scorer.calibrate(scorer.score_many(clean), method="sigma", k=3.0)  # max |z| of 12 < 3.2
        monitor = SARMMonitor(env, agent.tap, scorer, on_veto="hold")
        obs, info = monitor.reset(seed=3)  # a calibration scene: scored, below the threshold
        agent.reset(3)
        obs, _, _, _, info = monitor.step(agent.act(obs, info))
        assert info["sarm"]["new"] and np.isfinite(info["sarm"]["score"])
        assert not info["sarm"]["veto"], info["sarm"]
        norm = float(torch.cat(clean).norm(dim=1).mean())
        direction = torch.randn(backend.hidden_size, generator=torch.Generator().manual_seed(1))
        with AddVector(direction / direction.norm() * 4 * norm, layer=0).attach(backend):
            obs, _, _, _, info = monitor.step(agent.act(obs, info))
        assert info["sarm"]["veto"] and info["sarm"]["reason"].startswith("anomalous"), info["sarm"]
        assert info["sarm"]["action"] == "hold"
        scorer.save(tmp_path / "scorer")
    finally:
        agent.close()
        env.close()
    assert _hooks(backend.model) == hooks
    _physteer_run(family, family_dirs(family), tmp_path)


def _physteer_run(family: str, model_dir, tmp_path) -> None:
    """`physteer run --model DIR --seeds 0-1` under the monitor saved above completes."""
    from cli.main import main

    rc = main([
        "run", "--model", str(model_dir), "--seeds", "0-1", "--max-steps", "20",
        "--decide-every", "5", "--image-size", "128", "--layer", "0", "--executor", "serial",
        "--monitors", str(tmp_path / "scorer"), "--out", str(tmp_path / "runs"), "--name", family,
    ])  # fmt: skip
    assert rc == 0
    episodes = pq.read_table(tmp_path / "runs" / family / "episodes.parquet").to_pylist()
    assert sorted(e["seed"] for e in episodes) == [0, 1]
    assert all(e["decisions"] >= 1 and 0 < e["p_fragile_first"] < 1 for e in episodes)
    steps = pq.read_table(tmp_path / "runs" / family / "steps.parquet").to_pylist()
    scores = [
        v for row in steps for k, v in row.items() if k.startswith("score:") and row["decided"]
    ]
    assert scores and all(np.isfinite(scores)), "the monitor scored no decision"
    assert json.loads((tmp_path / "runs" / family / "config.json").read_text())["model"] == str(
        model_dir
    )


def test_unsupported_models_fail_at_load_naming_what_is_missing(family_dirs, tmp_path) -> None:
    # A family without a chat template and without a prompt builder of its own.
    llava = shutil.copytree(family_dirs("llava"), tmp_path / "llava-no-template")
    (llava / "chat_template.jinja").unlink()
    doc = json.loads((llava / "processor_config.json").read_text())
    doc.pop("chat_template", None)
    (llava / "processor_config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="no chat template.*prompt builder"):
        load_vlm(str(llava), device="cpu")
    # A text-only model: no image-text-to-text class, no image processor.
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents.tiny_families import build_tokenizer

    text = tmp_path / "text-only"
    tok = build_tokenizer([], "<s>", "</s>", "<pad>", chat_template="{{ messages }}")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2)).save_pretrained(text)  # fmt: skip
    tok.save_pretrained(text)
    with pytest.raises(ValueError, match="text-only|LlamaConfig"):
        load_vlm(str(text), device="cpu")
    with pytest.raises(ValueError, match="family 'gpt2'"):
        build_family("gpt2", tmp_path / "x")


def test_video_processors_are_optional(family_dirs, backends, monkeypatch) -> None:
    """Qwen2.5-VL and SmolVLM2 processors carry a video processor that needs torchvision: without
    it they load for images only; a package needed even for images is named at load."""
    from transformers.models.smolvlm import processing_smolvlm
    from transformers.utils import is_torchvision_available

    for family in ("qwen2_5_vl", "smolvlm2"):
        processor = backends(family).processor
        assert getattr(processor, "image_only", False) is not is_torchvision_available()
        assert processor.image_processor is not None and processor.tokenizer is not None
    monkeypatch.setattr(processing_smolvlm, "num2words", None)  # as if it were not installed
    with pytest.raises(ValueError, match="needs num2words.*pip install num2words"):
        load_vlm(str(family_dirs("smolvlm2")), device="cpu")
