"""Shared test settings (torch on one thread so the suite behaves on 2-core machines) and the
fixture every package uses for a random-weight tiny model."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """A random-weight tiny model saved with save_pretrained."""
    from agents.tiny_model import build_tiny_model, save_tiny

    model, processor = build_tiny_model(seed=0)
    return save_tiny(model, processor, tmp_path_factory.mktemp("tiny_vlm"))
