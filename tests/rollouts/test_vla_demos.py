"""Behaviour-cloning demonstrations come from the one closed loop, with clean labels under
noisy execution, and replay exactly from their seeds."""

import numpy as np
import pytest

from rollouts.vla_demos import collect_demonstrations


def test_demonstrations_are_reproducible_and_labelled_with_the_clean_action():
    a = collect_demonstrations(2, seed=7_000_000, horizon=3, frame_every=5)
    b = collect_demonstrations(2, seed=7_000_000, horizon=3, frame_every=5)
    assert len(a) == len(b) > 4
    for name in ("frames", "states", "efforts", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (
        a.frames.shape[1:] == (384, 384, 3)
        and a.labels.shape[1:] == (3, 4)
        and a.states.shape[1] == 17
    )
    assert set(a.episodes.tolist()) == {7_000_000, 7_000_001}
    assert a.efforts[0] == -1.0  # nothing executed before an episode's first step
    # the label is the oracle's handling of the true material: firm (grip 1.0) or gentle (0.15)
    grips = {m: a.labels[a.materials == m][:, 0, 3].max() for m in set(a.materials.tolist())}
    for material, grip in grips.items():
        assert grip == (0.15 if material == "fragile" else 1.0) or grip == -1.0


def test_noise_moves_the_executed_motion_not_the_label():
    from agents.protocol import NoisyOracle

    agent = NoisyOracle(sigma=0.5, prob=1.0)
    agent.reset(3, lane=0)
    info = {"ee_pos": [0.0, 0.0, 0.2], "object_pos": [0.1, 0.0, 0.02], "bin_pos": [0.0, 0.3, 0.0],
            "holding": False, "object": {"material": "fragile"}}  # fmt: skip
    executed = agent.act({}, info)
    label = np.asarray(agent.decision_for(0)["label"])
    assert not np.allclose(executed[:3], label[:3]) and executed[3] == label[3]


def test_dagger_round_executes_the_policy_and_labels_with_the_oracle(tmp_path):
    """A DAgger round: the VLA's own actions are executed, the oracle's from the same states are
    the labels; rounds join the oracle's demonstrations and the held-out split stays put."""
    from agents.backend import load_vlm
    from agents.train_vla import split_episodes
    from agents.vla_data import Demonstrations
    from agents.vla_model import build_vla, save_vla
    from rollouts.vla_demos import dagger_demonstrations

    vla, _ = build_vla(load_vlm("tiny", device="cpu"), k_bins=16, state_bins=8, horizon=3, seed=0)
    ckpt = save_vla(vla, tmp_path / "ckpt")
    rounds = [dagger_demonstrations(str(ckpt), 2, seed=7_100_000, horizon=3, frame_every=5, n_envs=2, max_steps=12)
              for _ in range(2)]  # fmt: skip
    d = rounds[0]
    for name in ("frames", "states", "efforts", "labels"):  # batched lanes replay exactly
        np.testing.assert_array_equal(getattr(d, name), getattr(rounds[1], name))
    assert set(d.episodes.tolist()) == {7_100_000, 7_100_001}
    # an untrained policy's grip commands (the efforts) are its own, not the oracle's labels
    assert not np.allclose(d.efforts[1:], d.labels[:-1, 0, 3])
    oracle = collect_demonstrations(2, seed=7_000_000, horizon=3, frame_every=5)
    both = Demonstrations.concat([oracle, d])
    assert len(both) == len(oracle) + len(d)
    with pytest.raises(ValueError, match="share episode ids"):
        Demonstrations.concat([d, d])
    # an episode's side of the split does not depend on which other episodes exist
    ids = np.arange(100)
    _, held_small = split_episodes(ids[:50], 0.2, seed=0)
    _, held_all = split_episodes(ids, 0.2, seed=0)
    assert np.array_equal(held_small, held_all[:50]) and 10 <= held_all.sum() <= 30


def test_expert_goes_back_for_an_object_it_lost_while_carrying():
    from envs.expert import ScriptedExpert

    expert = ScriptedExpert("gentle", recover=True)
    expert.phase = "carry"
    info = {
        "ee_pos": [0.0, 0.1, 0.16],
        "object_pos": [0.0, 0.0, 0.02],
        "bin_pos": [0.0, 0.3, 0.0],
        "holding": False,
    }
    actions = [expert.act(info) for _ in range(7)]
    assert expert.phase == "approach" and actions[-1][3] == -1.0  # fingers open, back to the object
    planner_expert = ScriptedExpert("gentle")  # off by default: the planner's episodes as before
    planner_expert.phase = "carry"
    for _ in range(7):
        planner_expert.act(info)
    assert planner_expert.phase == "carry"


def test_dagger_oracle_follows_a_policy_that_grasped_early():
    """The oracle's phase machine lags a policy that grasps before it reached "close": while the
    object is held the label must keep the fingers closed (and carry on), not open them."""
    from agents.dagger import DaggerAgent
    from agents.protocol import ExpertAgent

    agent = DaggerAgent(ExpertAgent("firm"))
    agent.reset(0, lane=0)
    assert agent.oracle.phase_for(0) == "approach"
    info = {"ee_pos": [0.0, 0.0, 0.06], "object_pos": [0.0, 0.0, 0.05], "bin_pos": [0.0, 0.3, 0.0],
            "holding": True, "object": {"material": "rigid"}}  # fmt: skip
    agent.act({}, info)
    label = agent.decision_for(0)["label"]
    assert label[3] == 1.0 and agent.oracle.phase_for(0) == "lift"  # firm grip kept, lifting


def test_dagger_oracle_labels_a_policy_at_the_object_from_the_scene():
    """A policy low over the object with its fingers not on it is told to descend or to close
    there, not (as the oracle's lift, then "lost", said) to open and rise to hover height; a
    policy whose fingers grip the object is still told to lift it."""
    from agents.dagger import DaggerAgent
    from agents.protocol import ExpertAgent

    scene = {
        "object_pos": [0.0, 0.0, 0.03],
        "bin_pos": [0.0, 0.3, 0.0],
        "object": {"material": "rigid"},
    }

    def label_after_lift(ee_z: float, gripped: bool) -> tuple[list[float], str]:
        agent = DaggerAgent(ExpertAgent("firm"))
        agent.reset(0, lane=0)
        agent.act({}, {**scene, "ee_pos": [0.0, 0.0, 0.06], "holding": True})  # oracle lifting
        assert agent.oracle.phase_for(0) == "lift"
        agent.act({}, {**scene, "ee_pos": [0.0, 0.0, ee_z], "holding": False, "gripped": gripped})
        return agent.decision_for(0)["label"], agent.oracle.phase_for(0)

    label, phase = label_after_lift(0.033, gripped=False)  # closed late, at grasp height
    assert phase == "close" and label[3] == 1.0 and label[2] <= 0.0
    label, phase = label_after_lift(0.06, gripped=False)  # closed too high
    assert phase == "descend" and label[3] == -1.0 and label[2] < 0.0
    label, phase = label_after_lift(0.033, gripped=True)  # gripped: the lift goes on
    assert phase == "lift" and label[3] == 1.0 and label[2] > 0.0
    agent = DaggerAgent(ExpertAgent("firm"))
    agent.reset(0, lane=0)
    agent.act({}, {**scene, "ee_pos": [0.05, 0.0, 0.06], "holding": False})  # beside it: approach
    assert agent.oracle.phase_for(0) == "approach" and agent.decision_for(0)["label"][2] > 0.0


def test_dagger_release_labels_let_go_at_the_oracles_release_spot():
    """With label_release, a policy holding the object over the bin at the oracle's release
    height is labelled "open the fingers, stay put" for as long as it holds on (past the release
    phase's own timer); higher up, or off the bin, or without the option, "keep holding"."""
    from agents.dagger import DaggerAgent
    from agents.protocol import ExpertAgent
    from envs.expert import PROFILES

    gentle = PROFILES["gentle"].release_height
    scene = {"object_pos": [0.0, 0.3, 0.06], "bin_pos": [0.0, 0.3, 0.01], "holding": True,
             "object": {"material": "fragile"}}  # fmt: skip

    def labels(height: float, label_release: bool, steps: int = 1, dx: float = 0.0) -> list:
        agent = DaggerAgent(ExpertAgent("gentle"), label_release=label_release)
        agent.reset(0, lane=0)
        out = []
        for _ in range(steps):
            agent.act({}, {**scene, "ee_pos": [dx, 0.3, 0.01 + height]})
            out.append(agent.decision_for(0)["label"])
        return out

    held = labels(gentle, label_release=True, steps=9)  # 9 > the release phase's 6 steps
    assert all(lab[3] == -1.0 and lab[:3] == [0.0, 0.0, 0.0] for lab in held)
    for lab in labels(gentle, label_release=False, steps=9):
        assert lab[3] > 0  # v2 labels: a held object is never let go
    assert labels(gentle + 0.05, label_release=True)[0][3] > 0  # above the release height: lower
    assert labels(gentle, label_release=True, dx=0.06)[0][3] > 0  # beside the bin: hold on


def test_train_vla_refuses_cached_demonstrations_made_with_other_settings(tmp_path, capsys):
    """A demonstrations folder records what made it; train-vla refuses one made otherwise (the
    setting named, both values given) before any work, and leaves the folder as it was."""
    from agents.vla_data import Demonstrations
    from cli.main import main
    from rollouts.vla_demos import ORACLE_VERSION

    n = 3
    demos = Demonstrations(frames=np.zeros((n, 8, 8, 3), np.uint8), states=np.zeros((n, 17)), efforts=-np.ones(n),
                           labels=np.zeros((n, 4, 4)), materials=["fragile"] * n, episodes=[0, 0, 1],
                           instructions=["pick"] * n)  # fmt: skip
    made_with = {"oracle": ORACLE_VERSION, "episodes": 4, "demo_seed": 7_000_000, "horizon": 4, "frame_every": 3,
                 "noise_sigma": 0.3, "noise_prob": 0.5}  # fmt: skip
    folder = demos.save(tmp_path / "demos", made_with=made_with)
    assert Demonstrations.made_with_of(folder) == made_with
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    out = tmp_path / "ckpt"
    argv = ["train-vla", "--demos", str(folder), "--episodes", "8", "--out-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "episodes: 4 there, 8 asked" in err and str(folder) in err
    older = {**made_with, "oracle": ORACLE_VERSION - 1}
    demos.save(folder, made_with=older)  # labelled by an older oracle: refused too
    assert (
        main(["train-vla", "--demos", str(folder), "--episodes", "4", "--out-dir", str(out)]) == 2
    )
    assert f"oracle: {ORACLE_VERSION - 1} there, {ORACLE_VERSION} asked" in capsys.readouterr().err
    # a DAgger folder labelled by older DAgger rules (no dagger_labels recorded) is refused too
    from agents.dagger import DAGGER_LABELS_VERSION

    demos.save(folder, made_with=made_with)
    dagger = demos.save(tmp_path / "demos-dagger1", made_with={**made_with, "dagger_round": 1})
    argv = [
        "train-vla",
        "--demos",
        str(folder),
        "--episodes",
        "4",
        "--dagger-rounds",
        "1",
        "--out-dir",
        str(out),
    ]
    assert main(argv) == 2
    assert f"dagger_labels: None there, {DAGGER_LABELS_VERSION} asked" in capsys.readouterr().err
    # a folder made before holding_swap existed was made without it (0.0): asked for 0.5, refused
    demos.save(
        dagger, made_with={**made_with, "dagger_round": 1, "dagger_labels": DAGGER_LABELS_VERSION}
    )
    assert main(argv + ["--holding-swap", "0.5"]) == 2
    assert "holding_swap: 0.0 there, 0.5 asked" in capsys.readouterr().err
    # ... and so was one made before rigid_release existed (the planner's 0.15)
    assert main(argv + ["--rigid-release", "0.25"]) == 2
    assert "rigid_release: 0.15 there, 0.25 asked" in capsys.readouterr().err
    assert main(argv + ["--rigid-release", "0.5"]) == 2  # out of the profile's range
    assert "--rigid-release 0.5" in (err := capsys.readouterr().err) and "[0.02, 0.35]" in err
    # ... and one made before handling words existed had the plain instruction only
    assert main(argv + ["--handling-words", "plain,gently"]) == 2
    assert "handling_words: 'plain' there, 'plain,gently' asked" in capsys.readouterr().err
    # ... and one made before --dagger-release existed was labelled without release labels
    assert main(argv + ["--dagger-release"]) == 2
    assert "dagger_release: False there, True asked" in capsys.readouterr().err
    assert main(argv + ["--handling-words", "plain,roughly"]) == 2  # not a handling word
    assert (
        "--handling-words 'plain,roughly'" in (err := capsys.readouterr().err) and "firmly" in err
    )
    assert not out.exists() and (dagger / "frames.npy").is_file()
    assert not out.exists() and sorted(p.name for p in folder.iterdir()) == [
        name for name, _ in before
    ]


def test_oracle_rigid_release_height_moves_the_rigid_carry_and_release_only():
    """train-vla --rigid-release: the VLA oracle carries and lets go of rigid objects higher;
    the gentle profile (fragile objects) is the planner's."""
    from cli.vla import PLANNER_RIGID_RELEASE
    from envs.expert import PROFILES, ScriptedExpert
    from rollouts.vla_demos import RIGID_RELEASE, oracle_profiles

    assert (
        PLANNER_RIGID_RELEASE == RIGID_RELEASE == PROFILES["firm"].release_height
    )  # the CLI's copy

    profiles = oracle_profiles(0.25)
    assert (
        profiles["fragile"] == PROFILES["gentle"] and oracle_profiles()["rigid"] == PROFILES["firm"]
    )
    assert (
        profiles["rigid"].release_height == 0.25 and profiles["rigid"].grip == PROFILES["firm"].grip
    )
    held = {
        "ee_pos": [0.0, 0.3, 0.2],
        "object_pos": [0.0, 0.3, 0.17],
        "bin_pos": [0.0, 0.3, 0.0],
        "holding": True,
    }
    for profile, rises in ((PROFILES["firm"], False), (profiles["rigid"], True)):
        expert = ScriptedExpert(profile)
        expert.phase = "lift"  # over the bin at 0.2 m: the high release first rises to carry height
        assert (expert.act(held)[2] > 0) == rises


def test_handling_words_take_whole_blocks_of_seeds_and_the_oracle_follows_them():
    """collect_demonstrations(handling_words=...): each word's episodes carry it in their
    instruction, one word per block of 16 seeds; labels follow the word, not the material."""
    from rollouts.vla_demos import handling_options

    words = (None, "firmly")
    assert [handling_options(words, i) for i in (0, 15, 16, 31, 32)] == [
        None, None, {"handling": "firmly"}, {"handling": "firmly"}, None,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="handling word 'roughly'"):
        collect_demonstrations(1, seed=7_000_000, handling_words=("roughly",))
    demos = collect_demonstrations(2, seed=7_000_000, horizon=2, frame_every=5, max_steps=60,
                                   handling_words=("gently",))  # fmt: skip
    assert all(str(i).endswith("in the bin gently.") for i in demos.instructions)
    rigid = demos.materials == "rigid"
    assert rigid.any()
    # the gentle profile closes the gripper at its gentle grip on rigid objects too
    closing = demos.labels[:, 0, 3]
    assert 0 < closing[rigid].max() < 0.5


def test_release_frames_add_the_steps_low_over_the_bin():
    """--release-frames keeps, beside every --frame-every step, every step the gripper spends low
    over the bin (the gentle release); without it the demonstrations are what they were."""
    from envs.expert import BIN_REACH
    from rollouts.vla_demos import LOW_OVER_BIN, collect_demonstrations

    kw = dict(seed=7_000_000, horizon=4, frame_every=3, image_size=64, handling_words=("gently",))
    plain = collect_demonstrations(2, **kw)
    dense = collect_demonstrations(2, **kw, release_frames=True)
    assert len(dense) > len(plain)

    def rows(d):
        return {(int(e), s.tobytes()) for e, s in zip(d.episodes, d.states, strict=True)}

    assert rows(plain) <= rows(dense)  # the same episodes, the same kept steps, and more
    extra = [
        s
        for e, s in zip(dense.episodes, dense.states, strict=True)
        if (int(e), s.tobytes()) not in rows(plain)
    ]
    for state in extra:  # state: ee position (0:3), bin position (13:16)
        assert (
            np.linalg.norm(state[:2] - state[13:15]) < BIN_REACH
            and state[2] - state[15] < LOW_OVER_BIN
        )
