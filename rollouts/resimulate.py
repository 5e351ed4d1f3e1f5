"""Re-simulating a run's logged episodes through the one closed loop (rollouts.episode).

A run folder logs each step's proposed action, whether a monitor vetoed it, and the end-effector
and object heights and breakage after it, but not the camera frames or the 17-d state. To get
them back (rollouts.lerobot), a ReplayAgent (agents.protocol) plays the actions the env
executed, in an env built from the run's config and reset with the episode's seed, and a
recorder keeps the frame and state before each action and checks each step against the log:
the first step that differs stops the replay with a ValueError naming it.

    replayer = Replayer(config)                  # config.json of the run
    sim = replayer.replay(episode_row, step_rows)
    sim["images"], sim["states"], sim["actions"], sim["task"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rollouts.episode import EXECUTED_COLUMNS
from rollouts.recorders import Recorder, StepView

ACTION_COLUMNS = ("a_dx", "a_dy", "a_dz", "a_grip")  # the logged (proposed) action of a step row


def executed_actions(config: dict[str, Any], episode: dict[str, Any], steps: list[dict[str, Any]]
                     ) -> tuple[np.ndarray, bool]:  # fmt: skip
    """(T × 4 float32 actions the env executed, whether the monitor stopped the episode at the
    last of them) from the logged step rows: a vetoed step gets the monitor's safe action; with
    on_veto "stop" the episode ends at its first veto, where the env was not stepped.

    Raises:
        ValueError: the step rows skip a step.
    """
    actions, last_grip = [], -1.0
    for i, row in enumerate(steps):
        if row["step"] != i:
            raise ValueError(
                f"episode {episode['condition']}/{episode['seed']}: step rows skip from {i - 1} to {row['step']}"
            )
        vetoed = bool(row.get("vetoed", row.get("sarm_veto", False)))
        if row.get(EXECUTED_COLUMNS[0]) is not None:  # logged as executed (a fallback's action too)
            action = [row[c] for c in EXECUTED_COLUMNS]
        else:  # older logs: the monitor's safe action on a vetoed step
            action = [0.0, 0.0, 0.0, last_grip] if vetoed else [row[c] for c in ACTION_COLUMNS]
        actions.append(np.array(action, dtype=np.float32))
        if vetoed and config.get("on_veto") == "stop":
            return np.stack(actions), True  # the monitor truncated the episode here
        last_grip = float(actions[-1][3])
    return np.stack(actions), False


class _Replayed(Recorder):
    """One replayed episode: the frame and 17-d state before each action and the executed action;
    after each step the logged ee / object heights and breakage must equal the env's."""

    name = "replay"

    def __init__(
        self, label: str, steps: list[dict[str, Any]], n: int, render: bool, stopped: bool
    ) -> None:
        self.label, self.steps, self.n, self.render, self.stopped = label, steps, n, render, stopped
        self.images: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.task = ""

    def after_act(self, view: StepView) -> None:
        """Keep what the env showed before the action, and the action."""
        if self.render:
            self.images.append(view.frame())
        self.states.append(np.asarray(view.obs["state"], dtype=np.float32))
        self.actions.append(np.asarray(view.action, dtype=np.float32))
        self.task = str(view.info["instruction"])

    def after_step(self, view: StepView) -> bool:
        """Check the step against the log; end the episode at the log's last row."""
        last = view.step == self.n - 1
        if last and self.stopped:
            return True  # in the run the monitor stopped here: the env was not stepped, nothing to check
        row, info = self.steps[view.step], view.next_info
        got = {
            "ee_z": float(info["ee_pos"][2]),
            "object_z": float(info["object_pos"][2]),
            "broken": bool(info["broken"]),
        }
        diff = {k: (row[k], v) for k, v in got.items() if row[k] != v}
        if diff:
            raise ValueError(f"episode {self.label} does not replay: at step {view.step} (logged, replayed) "
                             f"differ: {diff}; the env or the run's config changed since the run")  # fmt: skip
        return last

    def finish(self, view: StepView) -> None:
        """An env that ends before the log does not replay it."""
        if len(self.actions) < self.n:
            raise ValueError(f"episode {self.label} does not replay: the env ended after step {view.step - 1} "
                             f"but the log has {self.n} steps; the env or the run's config changed since the run")  # fmt: skip

    def result(self) -> dict[str, Any]:
        """images (T × H × W × 3 uint8, or None), states (T × 17), actions (T × 4), task."""
        return {"images": np.stack(self.images) if self.render else None, "states": np.stack(self.states),
                "actions": np.stack(self.actions), "task": self.task}  # fmt: skip


class Replayer:
    """Re-simulates logged episodes of one run through the one closed loop (rollouts.episode):
    a ReplayAgent plays each episode's executed actions in the env built from the run's config.

    Args:
        config: the run's config.json (image_size, max_steps, object_pattern, renderer,
            unbreakable, material, on_veto).
        render: keep the camera frames (False: states and actions only, nothing rendered).
    """

    def __init__(self, config: dict[str, Any], render: bool = True) -> None:
        from agents.protocol import ReplayAgent
        from rollouts.episode import ClosedLoop

        self.config, self.render = config, render
        self.agent = ReplayAgent()
        self._recorder: _Replayed | None = None
        self.loop = ClosedLoop(self.agent, image_size=int(config.get("image_size", 384)),
                               max_steps=int(config.get("max_steps", 200)), record_decisions=False,
                               recorders=lambda spec: [self._recorder],
                               object_pattern=config.get("object_pattern", "material"),
                               renderer=config.get("renderer", "tiny"),
                               unbreakable=bool(config.get("unbreakable", False)))  # fmt: skip

    def replay(self, episode: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
        """One logged episode re-simulated: see `replay_frames`."""
        from rollouts.conditions import parse_condition
        from rollouts.episode import EpisodeSpec

        actions, stopped = executed_actions(self.config, episode, steps)
        self.agent.set_actions(0, actions)
        self._recorder = _Replayed(
            f"{episode['condition']}/{episode['seed']}", steps, len(actions), self.render, stopped
        )
        # the episode's reset options as the runner gave them (a forced material, a shift)
        options = parse_condition(episode["condition"]).reset_options(self.config.get("material"))
        (record,) = self.loop.run([EpisodeSpec(int(episode["seed"]), options=options)])
        return record.extra["replay"]

    def close(self) -> None:
        """Release the env."""
        self.loop.close()


def replay_frames(config: dict[str, Any], episode: dict[str, Any], steps: list[dict[str, Any]], render: bool = True
                  ) -> dict[str, Any]:  # fmt: skip
    """Re-simulate one logged episode from its seed and actions; frames, states, actions, task.

    Returns a dict with "images" (T × H × W × 3 uint8, or None without `render`), "states"
    (T × 17 float32, before each action), "actions" (T × 4 float32, executed) and "task" (the
    instruction). Raises ValueError naming the step where the replay leaves the log.
    """
    replayer = Replayer(config, render)
    try:
        return replayer.replay(episode, steps)
    finally:
        replayer.close()
