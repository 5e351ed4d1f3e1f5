"""`--agent vla` through the runner: episodes from the VLA's own action tokens, with steering,
a perturbation, batching and replay; bad VLA input fails before any episode."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from cli.main import main
from rollouts.experiment import run_experiment
from rollouts.experiment_config import ExperimentConfig
from rollouts.replay import replay


@pytest.fixture(scope="module")
def vla_dir(tmp_path_factory):
    """A VLA built from a random tiny VLM (K 16, horizon 2), saved like a trained one."""
    from agents.backend import load_vlm
    from agents.tiny_model import build_tiny_model, save_tiny
    from agents.vla_model import build_vla, save_vla

    root = tmp_path_factory.mktemp("vla")
    model, processor = build_tiny_model(seed=0)
    base = load_vlm(str(save_tiny(model, processor, root / "vlm")), device="cpu")
    vla, _ = build_vla(base, k_bins=16, state_bins=8, horizon=2, seed=0)
    return save_vla(vla, root / "ckpt"), root / "vlm"


def test_vla_runs_steered_perturbed_batched_and_replays(vla_dir, tmp_path):
    ckpt, _ = vla_dir
    d = 128  # the tiny model's width
    import torch

    from storage import write_safetensors

    vector = write_safetensors(
        tmp_path / "v.safetensors",
        {"dom": torch.randn(d, generator=torch.Generator().manual_seed(0))},
    )
    common = dict(out=str(tmp_path), agent="vla", model=str(ckpt), seeds=[0, 1], max_steps=24, vector=str(vector),
                  conditions=["unsteered", "dom:+3", "noise:0.3@4"], executor="serial")  # fmt: skip
    one = run_experiment(ExperimentConfig(name="one", **common), progress=False)
    four = run_experiment(
        ExperimentConfig(name="four", envs_per_worker=2, **common), progress=False
    )
    steps = pq.read_table(one / "steps.parquet").to_pylist()
    assert {s["condition"] for s in steps} == {"unsteered", "dom:+3", "noise:0.3@4"}
    actions = {c: np.array([[s["a_dx"], s["a_dy"], s["a_dz"], s["a_grip"]] for s in steps if s["condition"] == c])
               for c in ("unsteered", "dom:+3")}  # fmt: skip
    assert not np.array_equal(
        actions["unsteered"], actions["dom:+3"]
    )  # steering moves the VLA's own actions
    batched = pq.read_table(four / "steps.parquet").to_pylist()
    key = lambda s: (s["condition"], s["seed"], s["step"])  # noqa: E731
    for a, b in zip(sorted(steps, key=key), sorted(batched, key=key), strict=True):
        np.testing.assert_allclose([a["a_dx"], a["a_dy"], a["a_dz"], a["a_grip"]],
                                   [b["a_dx"], b["a_dy"], b["a_dz"], b["a_grip"]], atol=1e-5)  # fmt: skip
    result = replay(one, "noise:0.3@4/1")
    assert result["actions_equal"] and result["outcome_equal"], result["differences"]


def test_bad_vla_input_fails_before_any_episode(vla_dir, tmp_path, capsys):
    ckpt, vlm = vla_dir
    assert main(["run", "--agent", "vla", "--model", str(vlm), "--out", str(tmp_path)]) == 2
    assert "not a VLA checkpoint" in capsys.readouterr().err
    assert (
        main(
            ["run", "--agent", "vla", "--model", str(ckpt), "--chunk", "0", "--out", str(tmp_path)]
        )
        == 2
    )
    assert "chunk=0" in capsys.readouterr().err
    assert (
        main(
            ["run", "--agent", "vla", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
