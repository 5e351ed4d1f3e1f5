"""PI0Agent: a flow-matching VLA of the π0 family drives the arm through the one loop.

Each decision denoises one action chunk (agents.pi0_model.PI0Backend.sample) from noise drawn
from the lane's episode seed and the decision's index, so an episode replays exactly and a lane
gets the same actions whether it is decided alone or batched with others (within float
tolerance). The agent executes the first `chunk` actions of the chunk, one per step, then
decides again (`needs_image_for` is True only then). The prompt is the env's instruction and the
agent's `question` (prompt injection appends there); the state is the env's 17 floats.

    agent = PI0Agent("runs/pi0", chunk=4, steps=10)
    agent.reset(0)
    action = agent.act(obs, info)       # obs needs "state", and "image" when agent.needs_image
    agent.last_decision                 # {"decided", "action", "chunk_index", "chunk_change", ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.chunk_lanes import ChunkLanes
from agents.pi0_folder import check_blend, check_noise_scale
from agents.pi0_model import PI0Backend, load_pi0
from agents.taps import ResidualTap
from agents.vla_agent import chunk_change
from agents.vlm_agent import default_tap_layer


def decision_noise(
    seed: int | None, decision: int, chunk: int, dims: int, draw: int = 0
) -> torch.Tensor:
    """(chunk × dims) standard normal noise of one decision, drawn from (episode seed, index);
    `draw` > 0: another draw of the same decision (the sample-variance signal's)."""
    key = [0 if seed is None else int(seed), int(decision), 0x70] + ([int(draw)] if draw else [])
    entropy = np.random.SeedSequence(key).generate_state(2)
    gen = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
    return torch.randn(chunk, dims, generator=gen)


STREAMS = ("vlm", "expert")


@dataclass
class _Lane:
    """Per-episode state of one lane."""

    seed: int | None = None
    queue: list[np.ndarray] = field(default_factory=list)
    step: int = 0
    n_decisions: int = 0
    decision: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    predicted: np.ndarray | None = None  # the last chunk (chunk_size × 4)


class PI0Agent(ChunkLanes):
    """Acts from its own denoised action chunks (see module docstring)."""

    lane_class = _Lane

    def __init__(self, model: PI0Backend | str | Path, chunk: int | None = None, steps: int | None = None,
                 tap_layer: int | None | str = "default", question: str = "", device: str = "cpu",
                 dtype: str = "float32", stream: str = "vlm", variance_draws: int = 0,
                 noise_scale: float | None = None, blend: float | None = None) -> None:  # fmt: skip
        """Args:
        model: a loaded PI0Backend or a π0 checkpoint folder (agents.pi0_model.load_pi0).
        chunk: actions executed per decision, 1..chunk_size (default: the checkpoint's
            n_action_steps, else its whole chunk).
        steps: denoising steps per decision, >= 1 (default: the config's num_inference_steps).
        tap_layer: decoder layer of the residual tap on `stream`, "default" (2/3 depth) or None.
        question: extra text after the instruction.
        device, dtype: used when `model` is a folder.
        stream: what taps, steering and monitors attach to (`self.backend`): "vlm" (the
            VLM prefix: image and instruction tokens) or "expert" (the action expert: its
            action tokens, agents.pi0_model.PI0ExpertView).
        variance_draws: extra chunks denoised per decision from other noise draws, whose
            spread is the decision's "sample_variance" signal (0: none, no extra cost).
        noise_scale: the scale of every decision's starting noise, in [0, 2] (None: the
            checkpoint's `noise_scale`, else 1, π0's own sampling; < 1 samples nearer the
            flow's mode, 0 starts every decision from zero).
        blend: the previous decision's share of each executed action its chunk also predicted,
            in [0, 1) (ACT's temporal ensembling over two chunks: with 4 of 8 actions executed,
            action i of a decision is (1 − blend)·its own + blend·the previous chunk's action
            4 + i); None: the checkpoint's `blend`, else 0 (π0's own execution).

        Raises:
            ValueError: a chunk longer than the model's, steps < 1, variance_draws not in
                0..64, or a bad checkpoint.
        """
        if stream not in STREAMS:
            raise ValueError(f"stream={stream!r}: choose one of {list(STREAMS)}")
        self.policy = model if isinstance(model, PI0Backend) else load_pi0(model, device, dtype)
        self.backend = (
            self.policy if stream == "vlm" else self.policy.expert
        )  # what hooks attach to
        self.stream = stream
        size = self.policy.chunk_size
        chunk = self.policy.n_action_steps if chunk is None else chunk
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= size:
            raise ValueError(
                f"chunk={chunk!r}: must be an int in 1..{size} (the model's chunk_size)"
            )
        steps = self.policy.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r}: denoising steps must be an int >= 1")
        if not isinstance(question, str):
            raise ValueError(f"question={question!r}: expected a str")
        if (
            isinstance(variance_draws, bool)
            or not isinstance(variance_draws, int)
            or not 0 <= variance_draws <= 64
        ):
            raise ValueError(
                f"variance_draws={variance_draws!r}: must be an int in 0..64 (0: no sample variance)"
            )
        self.chunk, self.steps, self.question = chunk, steps, question
        self.noise_scale = check_noise_scale(
            self.policy.noise_scale if noise_scale is None else noise_scale
        )
        self.variance_draws = variance_draws
        self.blend = check_blend(self.policy.blend if blend is None else blend)
        if tap_layer == "default":
            tap_layer = default_tap_layer(self.backend.n_layers)
        if stream == "expert":
            self.backend.check_image_reaches(
                self.backend.n_layers - 1 if tap_layer is None else tap_layer
            )
        else:
            from agents.image_check import check_image_reaches

            check_image_reaches(self.backend, tap_layer)
        self.tap = ResidualTap(tap_layer).attach(self.backend) if tap_layer is not None else None
        self._lanes: dict[int, _Lane] = {0: _Lane()}

    def _decide(self, observations: list[dict], infos: list[dict], states: list[_Lane]) -> None:
        frames, texts, env_states = [], [], []
        for obs, info in zip(observations, infos, strict=True):
            if not isinstance(obs, dict) or "state" not in obs or "image" not in obs:
                raise ValueError("PI0Agent needs obs with 'state' and 'image' at a decision step (got keys "
                                 f"{sorted(obs) if isinstance(obs, dict) else type(obs).__name__}); use obs_mode "
                                 "'rgb+state'")  # fmt: skip
            instruction = info.get("instruction") if isinstance(info, dict) else None
            if not isinstance(instruction, str):
                raise ValueError("info['instruction'] is missing: pass the env's info")
            frames.append(np.asarray(obs["image"]))
            texts.append(f"{instruction} {self.question.strip()}".strip())
            env_states.append(np.asarray(obs["state"], dtype=np.float32))
        b, env_states = self.policy, np.stack(env_states)
        others = self._other_draws(frames, texts, env_states, states)
        noise = self.noise_scale * torch.stack(
            [decision_noise(s.seed, s.n_decisions, b.chunk_size, b.action_dim) for s in states]
        )
        actions = b.sample(frames, texts, env_states, noise, self.steps)
        variance = None if others is None else self._sample_variance(actions, others)
        for row, s in enumerate(states):
            change = chunk_change(s.predicted, actions[row], self.chunk)
            executed = actions[row, : self.chunk]
            if self.blend and s.predicted is not None:  # the previous chunk's overlapping actions
                overlap = s.predicted[self.chunk : 2 * self.chunk]
                n, executed = len(overlap), executed.copy()
                executed[:n] = (1 - self.blend) * executed[:n] + self.blend * overlap
            s.predicted = actions[row]
            s.queue = [np.clip(a, -1.0, 1.0).astype(np.float32) for a in executed]
            s.decision = {
                "decision_index": s.n_decisions,
                "denoise_steps": self.steps,
                "chunk_change": change,
            }
            if variance is not None:
                s.decision["sample_variance"] = float(variance[row])
            s.n_decisions += 1

    def _other_draws(self, frames: list[np.ndarray], texts: list[str], env_states: np.ndarray,
                     states: list[_Lane]) -> np.ndarray | None:  # fmt: skip
        """Per lane, `variance_draws` more chunks of this decision denoised from other noise draws
        (lanes × draws × chunk × 4; None without draws). Run before the decision's own forward,
        so a tap keeps that forward's."""
        if not self.variance_draws:
            return None
        b, k = self.policy, self.variance_draws
        noise = self.noise_scale * torch.stack([decision_noise(s.seed, s.n_decisions, b.chunk_size, b.action_dim, d)
                                                for s in states for d in range(1, k + 1)])  # fmt: skip
        repeat = [i for i in range(len(states)) for _ in range(k)]
        chunks = b.sample([frames[i] for i in repeat], [texts[i] for i in repeat], env_states[repeat],
                          noise, self.steps)  # fmt: skip
        return chunks.reshape(len(states), k, *chunks.shape[1:])

    def _sample_variance(self, actions: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Per lane, the variance across the decision's own chunk and the other draws, over the
        executed actions and the 4 dimensions."""
        chunks = np.concatenate([actions[:, None], others], axis=1)[:, :, : self.chunk]
        return np.clip(chunks, -1.0, 1.0).var(axis=1).mean(axis=(1, 2))
