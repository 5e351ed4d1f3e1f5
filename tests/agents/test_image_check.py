"""A model whose image never reaches the positions physteer taps is refused before any episode,
naming what was found (agents.image_check); the shipped models pass."""

from __future__ import annotations

import pytest
import torch

from agents.backend import load_vlm


def test_a_cut_vision_path_is_refused(tiny_dir):
    from agents.vlm_agent import VLMAgent

    backend = load_vlm(str(tiny_dir), device="cpu", dtype="float32")
    with torch.no_grad():  # the connector maps every frame to zeros: the image never arrives
        for p in backend.model.model.connector.parameters():
            p.zero_()
    with pytest.raises(ValueError, match=r"the positions of the image token \(id \d+\) do not change when the "
                                         r"frame changes, at decoder layer\(s\) \[0, 1\]"):  # fmt: skip
        VLMAgent(backend, tap_layer=1)


def test_shipped_models_pass():
    from agents.vla_agent import VLAAgent
    from agents.vlm_agent import VLMAgent

    for agent in (VLMAgent("tiny"), VLAAgent("tiny-vla")):
        found = agent.backend.image_check
        assert min(found["frame_change"].values()) > 1.0
        assert found["image_precedes_question"] and found["question_change"] == 0.0


@pytest.mark.parametrize("agent", ["vla", "vlm"])
def test_a_corrupt_weights_file_is_named_before_any_episode(tmp_path, agent, capsys):
    """A truncated checkpoint (today's raw SafetensorError) is a clear error from `physteer run`,
    naming the file, before any episode or folder."""
    import shutil

    from agents.tiny_model import TINY_VLM_DIR
    from agents.vla_model import TINY_VLA_DIR
    from cli.main import main

    folder = tmp_path / "model"
    shutil.copytree(TINY_VLA_DIR if agent == "vla" else TINY_VLM_DIR, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["run", "--agent", agent, "--model", str(folder), "--seeds", "0", "--name", "bad",
                 "--out", str(tmp_path / "runs")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"weights file {weights} is truncated or corrupt" in err
    assert not (tmp_path / "runs").exists()
