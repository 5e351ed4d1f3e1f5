"""The VLA study on a π0: its store is filled from the π0's own closed-loop decisions on the
stream it steers (the expert's action tokens exist only inside a decision), with the labels of
each episode; settings a π0 cannot take are refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agents.pi0_build import build_pi0
from cli.main import main
from sae import ActivationStore

FLAGS = ["--agent", "pi0", "--collect-episodes", "16", "--max-steps", "12", "--seeds", "2", "--sae-steps", "50",
         "--chunk", "3", "--executor", "serial", "--envs-per-worker", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def pi0(tmp_path_factory):
    return build_pi0(tmp_path_factory.mktemp("pi0") / "pi0", seed=1, hidden=48, chunk=6)


def test_the_store_holds_the_streams_decisions_with_their_labels(pi0, tmp_path, capsys):
    # random weights: discovery finds no fragility feature, and the study says so after its store
    assert main(["vla-study", "--model", str(pi0), "--stream", "expert", "--out", str(tmp_path), "--name", "s",
                 *FLAGS]) == 2  # fmt: skip
    assert "found no fragility feature" in capsys.readouterr().err
    store = ActivationStore.open(tmp_path / "s" / "store")
    acts, meta = store.load_all(with_metadata=True)
    meta = meta.to_pylist()
    assert {m["material"] for m in meta} == {"fragile", "rigid"} and {m["model"] for m in meta} == {
        f"{pi0}:expert"
    }
    first = [i for i, m in enumerate(meta) if m["episode"] == 1_000_000 and m["step"] == 0]
    logged = load_file(
        str(tmp_path / "s" / "collect" / "activations" / "unsteered" / "seed_1000000.safetensors")
    )
    assert len(first) == int(logged["n_image_tokens"]) == 6  # the expert's action tokens
    torch.testing.assert_close(acts[first], logged["decision"][0, :6].float())
    dom = load_file(str(tmp_path / "s" / "store" / "dom_vector.safetensors"))["dom"]
    fragile = np.array([m["material"] == "fragile" for m in meta])
    torch.testing.assert_close(dom, acts[fragile].double().mean(0).float() - acts[~fragile].double().mean(0).float(),
                               atol=1e-5, rtol=0)  # fmt: skip


@pytest.mark.parametrize(("flags", "message"), [
    (["--neuron-words", "gently"], r"neuron_words=\['gently'\]: a π0 has no action vocabulary"),
    (["--stream", "cache"], "stream 'cache' is not allowed"),
    (["--collect-episodes", "2"], "collect_episodes=2"),
])  # fmt: skip
def test_bad_pi0_settings_fail_before_any_work(pi0, tmp_path, capsys, flags, message):
    import re

    assert main(["vla-study", "--model", str(pi0), "--out", str(tmp_path), *FLAGS, *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())
