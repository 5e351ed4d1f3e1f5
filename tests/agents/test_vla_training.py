"""VLA mode, its data and training: chunk labels, Demonstrations (validation, round trip,
concatenation) and `train_vla` (deterministic, reported, the holding swap)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.backend import load_vlm
from agents.vla_data import Demonstrations, chunk_labels, previous_grip
from envs.expert import ScriptedExpert
from envs.franka_pick import FrankaPickEnv


def test_chunk_labels_and_previous_grip():
    actions = np.arange(20, dtype=np.float32).reshape(5, 4) / 20
    episodes = np.array([7, 7, 7, 9, 9])
    chunks = chunk_labels(actions, episodes, 3)
    np.testing.assert_array_equal(chunks[0], actions[[0, 1, 2]])
    np.testing.assert_array_equal(chunks[1], actions[[1, 2, 2]])  # repeats past the end
    np.testing.assert_array_equal(chunks[3], actions[[3, 4, 4]])
    np.testing.assert_array_equal(
        previous_grip(actions, episodes), [-1, actions[0, 3], actions[1, 3], -1, actions[3, 3]]
    )
    with pytest.raises(ValueError, match="contiguous"):
        chunk_labels(actions, np.array([1, 2, 1, 2, 2]), 2)


def _demos(n_episodes: int = 2, steps: int = 8) -> Demonstrations:
    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="rgb+state")
    rows = {k: [] for k in ("f", "s", "a", "m", "e", "i")}
    for ep in range(n_episodes):
        obs, info = env.reset(seed=ep)
        expert = ScriptedExpert("gentle" if info["object"]["material"] == "fragile" else "firm")
        for _ in range(steps):
            a = expert.act(info)
            for key, value in zip(
                "fsamei",
                (
                    obs["image"],
                    obs["state"],
                    a,
                    info["object"]["material"],
                    ep,
                    info["instruction"],
                ),
                strict=True,
            ):
                rows[key].append(value)
            obs, *_, info = env.step(a)
    env.close()
    ep = np.array(rows["e"])
    acts = np.array(rows["a"])
    return Demonstrations(
        np.stack(rows["f"]),
        np.array(rows["s"]),
        previous_grip(acts, ep),
        chunk_labels(acts, ep, 2),
        rows["m"],
        ep,
        rows["i"],
    )


def test_demonstrations_validate_and_round_trip(tmp_path):
    demos = _demos(2, 3)
    with pytest.raises(ValueError, match=r"states of shape \(6, 16\).*17"):
        Demonstrations(
            demos.frames,
            demos.states[:, :16],
            demos.efforts,
            demos.labels,
            demos.materials,
            demos.episodes,
            demos.instructions,
        )
    with pytest.raises(ValueError, match="materials"):
        Demonstrations(
            demos.frames,
            demos.states,
            demos.efforts,
            demos.labels,
            ["glass"] * 6,
            demos.episodes,
            demos.instructions,
        )
    back = Demonstrations.load(demos.save(tmp_path / "demos"))
    assert isinstance(back.frames, np.memmap) and np.array_equal(back.frames, demos.frames)
    assert back.horizon == 2 and list(back.materials) == list(demos.materials)


def test_concatenated_frames_read_like_one_array(tmp_path):
    """Demonstrations.concat keeps each part's (memory-mapped) frames and reads rows on demand:
    every index form the trainer uses gives what np.concatenate would."""
    from agents.vla_data import ConcatFrames

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 255, (n, 4, 5, 3), dtype=np.uint8) for n in (3, 1, 4)]
    whole, frames = np.concatenate(parts), ConcatFrames(parts)
    assert (
        frames.shape == whole.shape
        and frames.dtype == np.uint8
        and len(frames) == 8
        and frames.ndim == 4
    )
    for index in (
        0,
        3,
        -1,
        slice(2, 6),
        slice(None, None, 3),
        np.array([7, 0, 3, 3]),
        whole[:, 0, 0, 0] > 100,
    ):
        assert np.array_equal(frames[index], whole[index]), index
    assert np.array_equal(np.asarray(frames), whole)
    with pytest.raises(ValueError, match="shapes"):
        ConcatFrames([parts[0], parts[0][:, :2]])
    a = Demonstrations.load(_demos(1, 3).save(tmp_path / "a"))
    b = _demos(2, 3)
    b = Demonstrations(b.frames[3:], b.states[3:], b.efforts[3:], b.labels[3:], b.materials[3:], b.episodes[3:],
                       b.instructions[3:])  # fmt: skip
    both = Demonstrations.concat([a, b])
    assert isinstance(both.frames, ConcatFrames) and len(both) == 6
    assert np.array_equal(both.frames[[0, 5]], np.stack([a.frames[0], b.frames[2]]))


_FIELDS = ("frames", "states", "efforts", "labels", "materials", "episodes", "instructions")


def test_train_vla_is_deterministic_and_reports(tiny_dir, tmp_path):
    from agents.train_vla import TrainVLAConfig, train_vla

    demos = _demos(2, 8)
    # The same rows from two folders, as a DAgger round sees them: their image features are
    # computed and cached in the folders on the first run ("b") and read back on the next ("c").
    halves = [Demonstrations(*(np.asarray(getattr(demos, n))[rows] for n in _FIELDS))
              for rows in (slice(0, 8), slice(8, 16))]  # fmt: skip
    folders = [h.save(tmp_path / f"part{i}") for i, h in enumerate(halves)]
    joined = Demonstrations.concat([Demonstrations.load(f) for f in folders])
    reports, lines = [], []
    for run in ("a", "b", "c"):
        cfg = TrainVLAConfig(
            base=str(tiny_dir),
            out_dir=str(tmp_path / run),
            k_bins=16,
            state_bins=8,
            epochs=2,
            batch_size=4,
            cotrain_batch=4,
            warmup_steps=2,
            eval_fraction=0.5,
            threads=1,
        )
        if run == "a":
            reports.append(train_vla(demos, cfg, log=lambda s: None))
        else:
            reports.append(train_vla(joined, cfg, log=lines.append, feature_folders=folders))
    saved = json.loads((tmp_path / "a" / "training_report.json").read_text())
    assert saved["eval"]["rows"] == 8 and set(saved["eval"]) >= {
        "dx",
        "grip",
        "frag_slot_acc",
        "cotrain_acc",
    }
    assert saved["history"][-1]["action"] < saved["history"][0]["action"]
    # What made it, to rebuild it under the same stack: every package constraints.txt pins exactly.
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (Path(__file__).parents[2] / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert (
        pinned >= {"torch", "transformers", "numpy", "pybullet"}
        and set(saved["versions"]) == pinned
    )
    assert saved["versions"]["torch"] == importlib.metadata.version("torch")
    a, b, c = (load_vlm(str(tmp_path / r), device="cpu").model.state_dict() for r in "abc")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert reports[0]["eval"] == reports[1]["eval"] == reports[2]["eval"]
    assert all(len(list(f.glob("image_features-*.npy"))) == 1 for f in folders)
    assert sum("image features of 8 frames from" in line for line in lines) == 2  # run "c" only
    with pytest.raises(ValueError, match=r"hold 8 frames; the demonstrations have 16 rows"):
        train_vla(demos, cfg, feature_folders=folders[:1])
    with pytest.raises(ValueError, match=r"k_bins=1: K must be"):
        train_vla(demos, TrainVLAConfig(k_bins=1))


def test_holding_swap_gives_held_rows_the_other_materials_frames():
    """TrainVLAConfig.holding_swap: a held row trains on a held frame of the other material; rows
    not held keep their own; share 0 changes nothing and draws nothing."""
    from types import SimpleNamespace

    from agents.train_vla import _held_pools, _swap_held_frames

    held = np.array([1, 1, 1, 1, 0, 0], bool)
    fragile = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    data = SimpleNamespace(held=held, fragile=fragile)
    rows = np.arange(6)
    gen = np.random.default_rng(0)
    pools = _held_pools(data, rows)
    assert np.array_equal(_swap_held_frames(data, rows, pools, 0.0, gen), rows)
    assert gen.random() == np.random.default_rng(0).random()  # nothing drawn
    source = _swap_held_frames(data, rows, pools, 1.0, np.random.default_rng(1))
    assert set(source[:2]) <= {2, 3} and set(source[2:4]) <= {0, 1} and list(source[4:]) == [4, 5]
