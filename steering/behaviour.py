"""Demonstrations of a handling, as a loss through the model: what behaviour-supervised methods
(steering.methods.reft) train on.

A demonstration row shows the handling of one material on an object of the other (the firm
expert's grip on a fragile object: a demonstration "toward rigid"). A method trains its edit so
the model, edited, does what the rows show; the model's weights never change.

- VLABehaviour: rows of agents.vla_data.Demonstrations (frame, state, grip effort, the
  expert's action chunk); the loss is the cross-entropy of the VLA's action slots against the
  expert's binned actions (the token VLA's own training loss, agents.train_vla, without its
  co-training terms).
- PlannerBehaviour: labelled frames and the answer to the fragility question that makes the
  planner choose the demonstrated handling (" no" → the firm profile); the loss is the
  cross-entropy of that answer. The planner's behaviour is its answer: the profile follows.

    demos = VLABehaviour(backend, collect_demonstrations(16, profile_for=swapped))
    loss = demos.loss(backend, rows)          # differentiable, with any hook attached
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MATERIALS = ("fragile", "rigid")


def _check_toward(toward: np.ndarray) -> np.ndarray:
    toward = np.asarray(toward).astype(str)
    bad = sorted(set(toward.tolist()) - set(MATERIALS))
    if bad:
        raise ValueError(f"toward={bad}: each demonstration row goes toward one of {MATERIALS}")
    return toward


class VLABehaviour:
    """The token VLA's demonstrations as a loss.

    Attributes:
        toward: (N,) the material whose handling each row demonstrates.
        source: a line for fit_info (where the rows came from).
    """

    def __init__(self, backend: Any, demos: Any, toward: np.ndarray, source: str = "", label_sigma: float = 1.0) -> None:  # fmt: skip
        """Args:
        backend: the VLA's VLMBackend (its prompt layout is read from the checkpoint).
        demos: agents.vla_data.Demonstrations.
        toward: per row, the material whose handling the row's labels show.
        label_sigma: width in bins of the soft targets (agents.action_tokens.soft_targets).
        """
        from agents.vla_model import PromptBuilder, VLASpec

        self.demos, self.toward, self.source = demos, _check_toward(toward), source
        if len(self.toward) != len(demos):
            raise ValueError(f"{len(self.toward)} 'toward' labels for {len(demos)} demonstration rows")  # fmt: skip
        self.spec = VLASpec.from_backend(backend)
        self.builder = PromptBuilder(backend, self.spec, demos.frames.shape[1:])
        labels = np.asarray(demos.labels)
        labels = labels[:, None] if labels.ndim == 2 else labels
        if labels.shape[1] < self.spec.horizon:
            raise ValueError(f"labels hold {labels.shape[1]} steps; the model predicts {self.spec.horizon}")  # fmt: skip
        self.targets = torch.from_numpy(
            self.spec.action.soft_targets(labels[:, : self.spec.horizon], label_sigma)
        )

    def __len__(self) -> int:
        return len(self.toward)

    def loss(self, backend: Any, rows: np.ndarray) -> torch.Tensor:
        """Mean cross-entropy of the action slots against the rows' expert actions."""
        d = self.demos
        texts = [self.builder.text(str(d.instructions[i]), "", d.states[i], float(d.efforts[i])) for i in rows]  # fmt: skip
        inputs = self.builder.inputs([d.frames[i] for i in rows], texts)
        logits = backend.model(**inputs, use_cache=False, logits_to_keep=self.spec.n_slots).logits
        bins, _ = self.builder.read_slots(logits)
        logp = torch.log_softmax(bins, dim=-1)
        return -(self.targets[rows].to(logp.device) * logp).sum(-1).mean()


class PlannerBehaviour:
    """The planner's demonstrations: frames and the fragility answer of the handling shown."""

    def __init__(self, frames: np.ndarray, toward: np.ndarray, source: str = "") -> None:
        """Args:
        frames: (N × H × W × 3) uint8 frames.
        toward: per frame, the handling demonstrated ("fragile": the gentle profile, answer
            " yes"; "rigid": the firm profile, answer " no").
        """
        self.frames, self.toward, self.source = frames, _check_toward(toward), source
        if len(self.toward) != len(frames):
            raise ValueError(f"{len(self.toward)} 'toward' labels for {len(frames)} frames")

    def __len__(self) -> int:
        return len(self.toward)

    def loss(self, backend: Any, rows: np.ndarray) -> torch.Tensor:
        """Mean −log P(the demonstrated answer) among {yes, no} for the rows' frames."""
        from agents.backend import FRAGILE_QUESTION

        logits = backend.model(**backend.prepare([self.frames[i] for i in rows], FRAGILE_QUESTION)).logits  # fmt: skip
        probs = backend.answer_probs(logits[:, -1].float(), ("yes", "no"))
        yes = torch.as_tensor(self.toward[rows] == "fragile", device=probs.device)
        chosen = torch.where(yes, probs[:, 0], probs[:, 1])
        return -torch.log(chosen.clamp_min(1e-12)).mean()
