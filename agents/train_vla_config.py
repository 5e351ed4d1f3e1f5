"""Settings of `physteer train-vla` (a light module: the CLI builds its flags without importing
transformers)."""

from __future__ import annotations

from dataclasses import dataclass

from agents.action_tokens import check_bins


@dataclass
class TrainVLAConfig:
    """Settings of `train_vla` (all of them are recorded in the training report)."""

    base: str = "tiny"
    init: str = ""  # a VLA checkpoint to continue from (DAgger rounds); "" builds one from `base`
    out_dir: str = "runs/train-vla/ckpt"
    k_bins: int = 32
    state_bins: int = 32
    seed: int = 0
    epochs: int = 8
    batch_size: int = 32
    lr: float = 3e-3  # measured on 1k rows: reaches 1e-3's fit of dy/dz in about half the steps
    weight_decay: float = 0.01
    warmup_steps: int = 50
    label_sigma: float = 1.0  # width (bins) of the soft action targets; 0 = one-hot
    frag_weight: float = 0.5  # weight of the <slot_frag> answer
    cotrain_weight: float = 0.5  # weight of the plain-prompt questions
    cotrain_batch: int = 32
    eval_fraction: float = 0.15  # share of episodes held out
    # Share of held-object rows (gripper closed on the object) trained, in each batch, with the
    # image features of a held row of the other material. Over the bin the frame hides the
    # material; with frames that contradict it, only the grip effort in the state tells the
    # handling, so the policy learns to keep the handling it chose. 0: off (the shipped recipe).
    holding_swap: float = 0.0
    threads: int = 2
    feature_batch: int = 32

    def validate(self) -> None:
        """Raise ValueError on an out-of-range setting."""
        check_bins(self.k_bins, "k_bins")
        check_bins(self.state_bins, "state_bins")
        for name in ("epochs", "batch_size", "cotrain_batch", "threads", "feature_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}: must be > 0")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction={self.eval_fraction}: must be in (0, 1)")
        if not 0 <= self.holding_swap <= 1:
            raise ValueError(f"holding_swap={self.holding_swap}: must be in [0, 1]")
        for name in ("label_sigma", "frag_weight", "cotrain_weight", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
