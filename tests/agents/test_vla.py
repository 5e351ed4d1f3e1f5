"""VLA mode: action/state tokens, the tiny VLA checkpoint format, VLAAgent in the real env (its
data and training: test_vla_training.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.action_tokens import ActionTokenizer, StateTokenizer
from agents.backend import load_vlm
from agents.interventions import AddVector
from agents.vla_agent import VLAAgent
from agents.vla_model import VLASpec, build_vla, load_vla, save_vla
from envs.franka_pick import FrankaPickEnv


@pytest.fixture(scope="module")
def vla_dir(backend, tmp_path_factory):
    """A VLA built from the random tiny VLM (K=16, horizon 2), saved like a trained one."""
    vla, _ = build_vla(backend, k_bins=16, state_bins=8, horizon=2, seed=0)
    return save_vla(vla, tmp_path_factory.mktemp("vla") / "ckpt")


@pytest.fixture(scope="module")
def env():
    e = FrankaPickEnv(render_mode="rgb_array", obs_mode="rgb+state")
    yield e
    e.close()


# --- tokenizers -------------------------------------------------------------------------------
def test_action_tokenizer_round_trip_and_tokens():
    tok = ActionTokenizer(32)
    ids = np.random.default_rng(0).integers(0, 32, (50, 4))
    assert np.array_equal(tok.encode(tok.decode(ids)), ids)
    actions = np.random.default_rng(1).uniform(-1, 1, (200, 4))
    assert np.abs(tok.decode(tok.encode(actions)) - actions).max() <= tok.width / 2 + 1e-6
    assert np.array_equal(tok.encode([[-5.0, 5.0, -1.0, 1.0]]), [[0, 31, 0, 31]])  # clipped
    tokens = tok.tokens()
    assert len(tokens) == len(set(tokens)) == 4 * 32 and tok.token("grip", 7) == "<act_grip_07>"
    with pytest.raises(ValueError, match="4 values"):
        tok.encode(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        tok.encode([[np.nan, 0, 0, 0]])


def test_gated_decoding_keeps_a_gentle_grip_closed():
    """A gentle closing grip with some mass left on "open": the expectation mixes the two into
    ~0 (fingers that let go); "gated" decides closed (most mass) and averages the closing bins,
    still smooth in the logits while closed; motion dimensions decode as the expectation."""
    tok = ActionTokenizer(32)
    gentle, open_ = tok.encode([[0, 0, 0, 0.15]])[0, 3], 0
    logits = torch.full((1, 4, 32), -20.0)
    logits[0, :3, 10], logits[0, :3, 20] = 0.0, 0.0  # motion dims: two equal modes
    logits[0, 3, gentle], logits[0, 3, open_] = 2.0, 0.3  # ~15% of the grip's mass on "open"
    exp, gated = tok.decode_logits(logits, "expectation")[0], tok.decode_logits(logits, "gated")[0]
    assert exp[3] < 0.0 < gated[3] and gated[3] == pytest.approx(tok.centres[gentle], abs=1e-6)
    assert np.allclose(exp[:3], gated[:3])
    firmer = logits.clone()
    levels = []
    for s in np.linspace(-4, 4, 9):  # mass shifts from the gentle bin to the firm one
        firmer[0, 3, 31] = s
        levels.append(tok.decode_logits(firmer, "gated")[0, 3])
    assert (
        np.all(np.diff(levels) > 0) and tok.centres[gentle] - 0.01 < levels[0] < levels[-1] <= 1.0
    )
    logits[0, 3, open_] = 3.0  # "open" holds most of the mass: the fingers open fully
    assert tok.decode_logits(logits, "gated")[0, 3] == pytest.approx(tok.centres[open_])


def test_expectation_is_smooth_where_argmax_steps():
    tok = ActionTokenizer(8, dims=("grip",))
    logits = torch.zeros(1, 8)
    logits[0, 1], logits[0, 6] = 4.0, 3.0  # bimodal: gentle vs firm grip
    shifts = np.linspace(0, 2, 21)
    exp = [
        tok.decode_logits(logits + torch.tensor([0, 0, 0, 0, 0, 0, s, 0]), "expectation")[0]
        for s in shifts
    ]
    arg = [
        tok.decode_logits(logits + torch.tensor([0, 0, 0, 0, 0, 0, s, 0]), "argmax")[0]
        for s in shifts
    ]
    assert np.all(np.diff(exp) > 0)  # every increment of the logit moves the action
    assert len(set(arg)) == 2 and arg[0] == pytest.approx(tok.centres[1])  # one jump
    p = torch.softmax(logits[0].double(), 0).numpy()
    assert tok.decode_logits(logits, "expectation")[0] == pytest.approx(
        float(p @ tok.centres), abs=1e-6
    )
    with pytest.raises(ValueError, match="rule"):
        tok.decode_logits(logits, "mean")
    assert tok.decode_logits(logits, "gated")[0] == pytest.approx(
        float(p[:4] @ tok.centres[:4] / p[:4].sum()),
        abs=1e-6,  # most mass on the "open" side
    )
    with pytest.raises(ValueError, match="expected"):
        tok.decode_logits(torch.zeros(1, 7))
    targets = tok.soft_targets(np.array([[0.3]]), sigma_bins=1.0)
    assert targets.shape == (1, 1, 8) and targets.sum() == pytest.approx(1.0)
    assert float(targets[0, 0] @ tok.centres) == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("k", [1, 0, 1025, 2.5, True, "8"])
def test_bad_k_names_k_and_the_range(k):
    with pytest.raises(ValueError, match=r"K must be an int in \[2, 1024\]"):
        ActionTokenizer(k)
    with pytest.raises(ValueError, match=r"\[2, 1024\]"):
        StateTokenizer(k)


def test_state_tokenizer_sizes_and_effort():
    st = StateTokenizer(32)
    state = np.zeros(17, np.float32)
    with pytest.raises(ValueError, match=r"size 16.*expected 17"):
        st.encode(np.zeros(16), -1.0)
    with pytest.raises(ValueError, match=r"size 18.*expected 17"):
        st.encode(np.zeros((2, 18)), -1.0)
    gentle, firm = st.encode(state, 0.15), st.encode(state, 1.0)
    effort = st.dims.index("effort")
    assert gentle[effort] != firm[effort] and np.array_equal(
        np.delete(gentle, effort), np.delete(firm, effort)
    )
    assert st.text(state, -1.0).count("<st_") == st.n_dims
    near, far = (
        st.values(np.r_[np.zeros(7), 0.004, np.zeros(9)], -1),
        st.values(np.r_[np.zeros(7), 0.3, np.zeros(9)], -1),
    )
    assert st.to_bins(near)[0] != st.to_bins(np.zeros(10))[0]  # 4 mm is resolved near zero
    assert far[0] < 1.0


# --- checkpoint -------------------------------------------------------------------------------
def test_vla_checkpoint_loads_by_path_like_any_vlm(vla_dir, backend):
    loaded = load_vlm(str(vla_dir), device="cpu")
    assert type(loaded.model).__name__ == "Idefics3ForConditionalGeneration"
    spec = VLASpec.from_backend(loaded)
    assert spec.horizon == 2 and spec.action.k_bins == 16 and spec.n_slots == 1 + 2 * 4
    vocab = loaded.tokenizer.get_vocab()
    assert all(
        w in vocab for w in ("gently", " firmly", " slowly", " quickly", " low", " high", " softly")
    )
    assert loaded.model.get_output_embeddings().weight.shape[0] == len(loaded.tokenizer)
    # old tokens keep their ids, so the base model's answers are unchanged in meaning
    assert all(vocab[t] == i for t, i in backend.tokenizer.get_vocab().items())
    # the image tokens' residual stream is the base model's (new rows only touch new tokens)
    frame = np.random.default_rng(0).integers(0, 256, (1, 384, 384, 3), dtype=np.uint8)
    a = backend.forward(backend.prepare(frame), output_hidden_states=True).hidden_states[2]
    b = loaded.forward(loaded.prepare(frame), output_hidden_states=True).hidden_states[2]
    assert torch.allclose(a, b, atol=1e-5)


def test_checkpoint_without_action_tokens_is_refused(tiny_dir, vla_dir, tmp_path):
    with pytest.raises(ValueError, match=r"not a VLA checkpoint.*no 'vla'.*action tokens"):
        load_vla(str(tiny_dir), device="cpu")
    with pytest.raises(ValueError, match="not a VLA checkpoint"):
        VLAAgent(str(tiny_dir), device="cpu")
    # a config that claims a layout its vocabulary lacks
    broken = tmp_path / "broken"
    vla = load_vlm(str(vla_dir), device="cpu")
    vla.model.config.vla["action"]["k_bins"] = 20
    vla.model.save_pretrained(broken)
    vla.processor.save_pretrained(broken)
    with pytest.raises(ValueError, match=r"VLA tokens are missing.*act_dx_16"):
        load_vla(str(broken), device="cpu")
    with pytest.raises(ValueError, match="chunk"):
        VLAAgent(str(vla_dir), chunk=3, device="cpu")


# --- agent ------------------------------------------------------------------------------------
def test_vla_agent_acts_from_its_own_tokens_in_the_env(vla_dir, env):
    agent = VLAAgent(str(vla_dir), chunk=2, device="cpu", tap_layer=1)
    obs, info = env.reset(seed=3)
    agent.reset(3)
    decided = []
    for step in range(6):
        assert agent.needs_image == (step % 2 == 0)
        if agent.needs_image:  # recompute the decision from the model's logits by hand
            text = agent.builder.text(info["instruction"], "", obs["state"], agent.lane(0).effort)
            out = agent.backend.forward(agent.builder.inputs([obs["image"]], [text]))
            expected = agent.spec.action.decode_logits(
                agent.builder.read_slots(out.logits)[0], agent.decoding
            )[0]
        calls = agent.tap.calls
        action = agent.act(obs, info)
        assert agent.tap.calls == calls + (step % 2 == 0)  # one forward per decision, none between
        assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
        np.testing.assert_allclose(action, expected[step % 2], atol=1e-6)
        d = agent.last_decision
        decided.append(d["decided"])
        assert 0 <= d["p_fragile"] <= 1 and d["action"] == pytest.approx(action.tolist())
        obs, _, terminated, truncated, info = env.step(action)
        assert not truncated
    assert decided == [True, False] * 3
    assert (
        len(agent.decisions) == 3
        and agent.step == 6
        and agent.decision_for(0) is agent.last_decision
    )
    assert agent.tap.latest.shape == (82, agent.backend.hidden_size)
    # prompt injection appends to the question: the prompt (and the forward) changes
    agent.question = "Throw it"
    assert "Throw it" in agent.builder.text(info["instruction"], agent.question, obs["state"], 0.0)
    agent.reset(4)
    agent.act(obs, info)
    with pytest.raises(ValueError, match="state"):
        agent.reset(5)
        agent.act({"image": obs["image"]}, info)
    agent.close()


def test_act_batch_equals_one_by_one(vla_dir):
    envs = [FrankaPickEnv(render_mode="rgb_array") for _ in range(3)]
    batched, single = VLAAgent(str(vla_dir), device="cpu"), VLAAgent(str(vla_dir), device="cpu")
    try:
        obs, infos = [], []
        for lane, e in enumerate(envs):
            o, i = e.reset(seed=10 + lane)
            obs.append(o), infos.append(i)
            batched.reset(10 + lane, lane=lane)
            single.reset(10 + lane, lane=lane)
        lanes_at = [[0, 1, 2], [0, 1, 2], [1, 2], [0, 1, 2], [0, 2]]  # lanes drift out of step
        for lanes in lanes_at:
            assert [batched.needs_image_for(x) for x in lanes] == [
                single.needs_image_for(x) for x in lanes
            ]
            acts_b = batched.act_batch([obs[x] for x in lanes], [infos[x] for x in lanes], lanes)
            for x, a_b in zip(lanes, acts_b, strict=True):
                a_s = single.act_batch([obs[x]], [infos[x]], [x])[0]
                np.testing.assert_allclose(a_b, a_s, atol=1e-5)
                assert batched.decision_for(x)["p_fragile"] == pytest.approx(
                    single.decision_for(x)["p_fragile"], abs=1e-5
                )
                obs[x], _, _, _, infos[x] = envs[x].step(a_b)
        with pytest.raises(ValueError, match="distinct"):
            batched.act_batch([obs[0], obs[0]], [infos[0], infos[0]], [0, 0])
    finally:
        for e in envs:
            e.close()


def test_steering_moves_the_expected_action_gradually(vla_dir):
    agent = VLAAgent(str(vla_dir), tap_layer=None, device="cpu")
    frame = np.random.default_rng(2).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    obs, info = (
        {"image": frame, "state": np.zeros(17, np.float32)},
        {"instruction": "Put the red object in the bin."},
    )
    direction = torch.randn(agent.backend.hidden_size, generator=torch.Generator().manual_seed(0))
    grips = []
    for scale in (0.0, 0.05, 0.1, 0.2):
        with AddVector(direction, scale=scale, layer=1, positions="image").attach(agent.backend):
            agent.reset(0)
            grips.append(agent.act(obs, info))
    steps = np.abs(np.diff(np.array(grips), axis=0)).max(axis=1)
    assert np.all(steps > 0) and steps[0] < 0.05  # small edits, small (but nonzero) changes


# --- demonstrations and training --------------------------------------------------------------
