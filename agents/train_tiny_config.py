"""Settings of `physteer train-tiny` (a light module: the CLI builds its flags without importing
torch or transformers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainConfig:
    """Settings of `train_tiny` (all of them are recorded in the training report)."""

    n_train: int = 2400
    n_eval: int = 320
    seed: int = 0
    train_seed: int = 0  # first env seed of the training renders
    eval_seed: int = 1_000_000  # first env seed of the held-out renders
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 40
    flip_prob: float = 0.5
    zoom_prob: float = 0.5  # share of training images zoomed in on the object (0 = off)
    aux_weight: float = 1.0  # weight of the training-only fragility loss on image tokens
    max_zoom: float = 3.0  # zoom factor drawn uniformly from [1, max_zoom]
    probe_layer: int = 2
    # The language recipe (agents.language_tasks): descriptions, claims, handling questions and
    # handling instructions beside the two questions, one item per batch, weighted.
    language: bool = False
    language_weight: float = 1.0
    threads: int = 2
    out_dir: str = str(Path(__file__).parent / "tiny_vlm")  # agents.tiny_model.TINY_VLM_DIR
    cache_dir: str = "runs/train-tiny"

    def validate(self) -> None:
        """Raise ValueError on an out-of-range setting."""
        for name in ("n_train", "n_eval", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.n_eval < 16:
            raise ValueError(
                f"n_eval={self.n_eval}: need >= 16 for every (color, material, shade) cell"
            )
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}: must be > 0")
        from agents.tiny_model import check_save_target

        check_save_target(self.out_dir)
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob={self.flip_prob}: must be in [0, 1]")
        if not 0 <= self.zoom_prob <= 1:
            raise ValueError(f"zoom_prob={self.zoom_prob}: must be in [0, 1]")
        if not self.aux_weight >= 0:
            raise ValueError(f"aux_weight={self.aux_weight}: must be >= 0")
        if not self.language_weight >= 0:
            raise ValueError(f"language_weight={self.language_weight}: must be >= 0")
        if not self.max_zoom >= 1:
            raise ValueError(f"max_zoom={self.max_zoom}: must be >= 1")
        train = range(self.train_seed, self.train_seed + self.n_train)
        held = range(self.eval_seed, self.eval_seed + self.n_eval)
        if train.start < held.stop and held.start < train.stop:
            raise ValueError(
                f"training seeds {train.start}..{train.stop - 1} overlap evaluation seeds "
                f"{held.start}..{held.stop - 1}: choose disjoint train_seed / eval_seed"
            )
