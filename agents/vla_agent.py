"""VLAAgent: a tiny vision-language-action model whose own action tokens drive the arm.

No scripted expert is in the loop: every action is decoded from the logits the model puts on
its action tokens (see agents.action_tokens and agents.vla_model). One forward per decision
reads P(fragile) and a chunk of `horizon` future actions at dedicated slot positions; the agent
executes the first `chunk` of them, one per step, and asks again (`needs_image` is True only
then, so a runner renders only then). The prompt carries the env's instruction, the agent's
`question` (empty by default; prompt-injection perturbations append to it) and the state
tokens, including the agent's own grip effort (the gripper command it executed last), which
keeps the handling once the closed fingers hide the object's material. Where a wrapper replaced
the agent's action (a SARM monitor's veto in "hold" mode steps the env with a safe action), it
reports the action the env executed in `info[EXECUTED_ACTION_KEY]`, and the effort follows
that: the agent never conditions on a grip it did not execute.

Batched use: several environments ("lanes") share one agent; `act_batch` answers every lane
that needs a frame in one batched forward. Each lane has its own action queue, effort and
decision; `reset(seed, lane=i)` starts lane i's episode.

    agent = VLAAgent("runs/train-vla/ckpt", chunk=4, decoding="expectation")
    agent.reset(0)
    action = agent.act(obs, info)      # obs needs "state", and "image" when agent.needs_image
    agent.last_decision                # {"decided", "p_fragile", "action", "chunk", ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.action_tokens import DECODING_RULES, DEFAULT_DECODING
from agents.backend import VLMBackend
from agents.chunk_lanes import ChunkLanes
from agents.taps import ResidualTap
from agents.vla_model import TINY_VLA_DIR, PromptBuilder, load_vla
from agents.vlm_agent import default_tap_layer

#: info key where a wrapper that may replace the agent's action (monitors.sarm.SARMMonitor)
#: reports the action the env executed at the previous step (4 floats).
EXECUTED_ACTION_KEY = "executed_action"


@dataclass
class _Lane:
    """Per-episode state of one lane."""

    seed: int | None = None
    queue: list[np.ndarray] = field(default_factory=list)
    effort: float = -1.0  # gripper command executed at the previous step (open at reset)
    step: int = 0
    decision: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)  # the decided steps
    predicted: np.ndarray | None = None  # the last forward's whole predicted horizon (H × D)


class VLAAgent(ChunkLanes):
    """Acts from its own decoded action tokens (see module docstring)."""

    lane_class = _Lane

    def __init__(
        self,
        model: VLMBackend | str | Path = "tiny-vla",
        chunk: int | None = None,
        decoding: str = DEFAULT_DECODING,
        tap_layer: int | None | str = "default",
        question: str = "",
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        """Args:
        model: a loaded VLA backend, a checkpoint directory, or "tiny-vla" (agents/tiny_vla/).
        chunk: actions executed per forward, 1..horizon (default: the checkpoint's horizon).
        decoding: "expectation" (smooth in the logits; the default, and what the recipe's
            DAgger rounds roll out with), "gated" (the expectation, the gripper first decided
            open or closed) or "argmax" (see ActionTokenizer).
        tap_layer: decoder layer of the residual tap, "default" (2/3 depth) or None.
        question: extra text after the instruction (prompt injection appends here).
        device, dtype: used when `model` is not already loaded.

        Raises:
            ValueError: the checkpoint has no action tokens, or a bad chunk / decoding.
        """
        if decoding not in DECODING_RULES:
            raise ValueError(f"decoding={decoding!r}: expected one of {DECODING_RULES}")
        if str(model) == "tiny-vla":
            if not (TINY_VLA_DIR / "config.json").is_file():
                raise ValueError(
                    f"model='tiny-vla': no checkpoint in {TINY_VLA_DIR}; run `physteer train-vla` "
                    "or pass a checkpoint directory"
                )
            model = TINY_VLA_DIR
        self.backend, self.spec = load_vla(model, device, dtype)
        horizon = self.spec.horizon
        chunk = horizon if chunk is None else chunk
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= horizon:
            raise ValueError(
                f"chunk={chunk!r}: must be an int in 1..{horizon} (the checkpoint's horizon)"
            )
        if not isinstance(question, str):
            raise ValueError(f"question={question!r}: expected a str")
        self.chunk = chunk
        self.decoding = decoding
        self.question = question
        self.builder = PromptBuilder(self.backend, self.spec)
        self.tap: ResidualTap | None = None
        if tap_layer == "default":
            tap_layer = default_tap_layer(self.backend.n_layers)
        from agents.image_check import check_image_reaches

        check_image_reaches(self.backend, tap_layer)  # refuses a model whose image misses the taps
        if tap_layer is not None:
            self.tap = ResidualTap(tap_layer).attach(self.backend)
        self._lanes: dict[int, _Lane] = {0: _Lane()}

    # --- lanes (agents.chunk_lanes: queues, decisions, act_batch) ------------------------
    def _before_decide(self, infos: list[dict[str, Any]], states: list[_Lane]) -> None:
        """A wrapper that replaced the action reports the one executed: the effort follows it.
        (infos' EXECUTED_ACTION_KEY, where present, sets the lane's grip effort.)"""
        for info, s in zip(infos, states, strict=True):
            executed = info.get(EXECUTED_ACTION_KEY) if isinstance(info, dict) else None
            if executed is not None:  # what the env ran at the previous step, not what we asked
                s.effort = _executed_grip(executed)

    def _popped(self, state: _Lane, action: np.ndarray) -> None:
        state.effort = float(action[3])

    @torch.no_grad()
    def _decide(self, observations: list[dict], infos: list[dict], states: list[_Lane]) -> None:
        frames, texts = [], []
        for obs, info, s in zip(observations, infos, states, strict=True):
            if not isinstance(obs, dict) or "state" not in obs or "image" not in obs:
                raise ValueError(
                    "VLAAgent needs obs with 'state' and 'image' at a decision step "
                    f"(got keys {sorted(obs) if isinstance(obs, dict) else type(obs).__name__}); "
                    "use obs_mode 'rgb+state' or add the rendered frame"
                )
            instruction = info.get("instruction") if isinstance(info, dict) else None
            if not isinstance(instruction, str):
                raise ValueError("info['instruction'] is missing: pass the env's info")
            frames.append(np.asarray(obs["image"]))
            texts.append(
                self.builder.text(instruction, self.question, np.asarray(obs["state"]), s.effort)
            )
        out = self.backend.forward(self.builder.inputs(frames, texts))
        bins, frag = self.builder.read_slots(out.logits)
        actions = self.spec.action.decode_logits(bins, self.decoding)  # B × H × D
        p_fragile = self.backend.answer_probs(frag, ("yes", "no"))[:, 0].cpu().numpy()
        entropy = action_entropy(bins)
        for row, s in enumerate(states):
            change = chunk_change(s.predicted, actions[row], self.chunk)
            s.predicted = actions[row]
            s.queue = [np.clip(a, -1.0, 1.0).astype(np.float32) for a in actions[row, : self.chunk]]
            s.decision = {
                "p_fragile": float(p_fragile[row]),
                "decoding": self.decoding,
                "effort": s.effort,  # the grip effort the prompt carried
                # uncertainty signals of the failure-prediction baselines (monitors.signals)
                "action_entropy": float(entropy[row]),
                "chunk_change": change,
            }


def action_entropy(logits: torch.Tensor) -> np.ndarray:
    """Per row, the mean entropy of the action tokens' softmax over their K bins, divided by
    log K (0: every slot certain, 1: every slot uniform); logits are B × H × D × K."""
    x = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    logp = torch.log_softmax(x, dim=-1)
    h = -(logp.exp() * logp).sum(-1) / math.log(x.shape[-1])
    return h.flatten(1).mean(1).numpy()


def chunk_change(previous: np.ndarray | None, current: np.ndarray, executed: int) -> float:
    """How far a new forward's actions stray from what the previous forward predicted (action
    units, mean absolute difference): over the overlapping steps where the chunk executed is
    shorter than the horizon (STAC's consistency), else the jump from the previous horizon's
    last action to the new first one. 0 at an episode's first forward (nothing to compare)."""
    if previous is None:
        return 0.0
    overlap = previous.shape[0] - executed
    if overlap > 0:
        return float(np.abs(current[:overlap] - previous[executed:]).mean())
    return float(np.abs(current[0] - previous[-1]).mean())


def _executed_grip(executed: Any) -> float:
    """The gripper command of an executed action reported in info (4 finite floats)."""
    arr = np.asarray(executed, dtype=np.float64).reshape(-1)
    if arr.shape != (4,) or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"info[{EXECUTED_ACTION_KEY!r}]={executed!r}: expected the executed action, "
            "4 finite floats (dx, dy, dz, grip)"
        )
    return float(np.clip(arr[3], -1.0, 1.0))
