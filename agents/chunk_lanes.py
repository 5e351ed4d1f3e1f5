"""ChunkLanes: the lane machinery of agents that decide an action chunk per forward and execute
it one action per step (agents.vla_agent.VLAAgent, agents.pi0_agent.PI0Agent).

Each lane keeps a queue of the chunk's actions still to execute; a lane whose queue is empty
needs a frame (`needs_image_for`), and every such lane is decided in one batched forward
(`_decide`, the subclass's). Each executed step records the lane's decision: "decided" (a
forward ran this step), the step, the index within the chunk and the action. Subclasses give
the lane state class (`lane_class`: seed, queue, step, decision, decisions) and may react to
the env's info before deciding (`_before_decide`) and to each action popped (`_popped`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agents.protocol import LaneViews, check_lane


class ChunkLanes(LaneViews):
    """Per-lane action queues over one batched model (see module docstring)."""

    lane_class: ClassVar[type]
    chunk: int
    tap: Any = None
    _lanes: dict[int, Any]

    def lane(self, i: int) -> Any:
        """The state of lane `i` (created on first use)."""
        return self._lanes.setdefault(check_lane(i), self.lane_class())

    def reset(self, seed: int | None = None, lane: int = 0) -> None:
        """Start a new episode on `lane` (its queue emptied, its state new)."""
        self._lanes[check_lane(lane)] = self.lane_class(seed=seed)
        if self.tap is not None and len(self._lanes) == 1:
            self.tap.clear()

    def needs_image_for(self, lane: int = 0) -> bool:
        """True when `lane`'s next act runs the model."""
        return not self.lane(lane).queue

    def decision_for(self, lane: int = 0) -> dict[str, Any] | None:
        """Lane's last step: decided (a forward ran), the chunk index, step, action, and what
        the subclass's forward recorded."""
        return self.lane(lane).decision

    def act_batch(self, observations: list[dict[str, np.ndarray]], infos: list[dict[str, Any]],
                  lanes: list[int]) -> list[np.ndarray]:  # fmt: skip
        """One action per lane; every lane that needs a frame is answered in one forward.

        Args:
            observations: per lane, the env observation (the subclass says what it reads).
            infos: per lane, the env info.
            lanes: distinct lane ids, in the order of observations and infos.
        """
        if not len(observations) == len(infos) == len(lanes):
            raise ValueError(f"{len(observations)} observations, {len(infos)} infos, {len(lanes)} lanes: "
                             "give one of each per lane")  # fmt: skip
        if len(set(int(x) for x in lanes)) != len(lanes):
            raise ValueError(f"lanes={lanes}: lane ids must be distinct")
        states = [self.lane(x) for x in lanes]
        self._before_decide(infos, states)
        need = [i for i, s in enumerate(states) if not s.queue]
        if need:
            self._decide(
                [observations[i] for i in need], [infos[i] for i in need], [states[i] for i in need]
            )
        out = []
        for i, s in enumerate(states):
            action = s.queue.pop(0)
            self._popped(s, action)
            s.decision = {**(s.decision or {}), "decided": i in need, "step": s.step,
                          "chunk_index": self.chunk - 1 - len(s.queue), "action": action.tolist()}  # fmt: skip
            if i in need:
                s.decisions.append(s.decision)
            s.step += 1
            out.append(action.copy())
        return out

    def _before_decide(self, infos: list[dict[str, Any]], states: list[Any]) -> None:
        """Hook: read the env's info into the lanes' states before any forward."""

    def _popped(self, state: Any, action: np.ndarray) -> None:
        """Hook: the lane's next action was taken from its queue."""

    def _decide(self, observations: list[dict], infos: list[dict], states: list[Any]) -> None:
        """Fill each lane's queue (and its `decision` record) from one batched forward."""
        raise NotImplementedError

    def close(self) -> None:
        """Detach the tap from the model."""
        if self.tap is not None:
            self.tap.remove()
