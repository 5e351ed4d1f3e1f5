"""DAgger data: the policy drives, the oracle labels (Ross, Gordon & Bagnell 2011).

Behaviour cloning alone trains on the states an expert visits; a policy that drifts off them
(a gentle grasp that slips, a gripper that closes a little early) meets states it never saw and
does not recover. DAgger runs the learned policy, asks the oracle at every state the POLICY
reaches what it would do from there, and adds those labels to the training set.

`DaggerAgent` is a lanes-protocol agent (agents.protocol): its executed actions are the
policy's; its decision carries the policy's decision plus `"label"`, the oracle's action from
the same observation (the same field NoisyOracle writes, so rollouts.vla_demos records both
alike). The oracle is a ScriptedAgent: it reads the true material, and its expert's phase
machine is brought back to the scene where its timers left it out of step with the policy (a
held object it thought open-handed; the gripper low over the object, fingers not on it, where
it would lift; see `act_batch`). With `label_release`, a policy that holds the object over the
bin at the oracle's release height is labelled "let go" (the oracle's release phase): without
it, every label of a held object says "keep holding", so the policy learns when to open its
fingers from the noisy-oracle demonstrations alone.

    agent = DaggerAgent(VLAAgent("runs/vla"), ScriptedAgent(recover=True))
    # run it through rollouts.episode.ClosedLoop with a DemoSteps recorder
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.protocol import Agent, ScriptedAgent
from envs.expert import over_object

#: Version of the DAgger labelling rules below, recorded with every DAgger folder `physteer
#: train-vla` writes (bump it when they change, so a folder older rules labelled is not reused).
#: 1: follow a policy that holds the object; 2: also a policy at the object, fingers not on it.
DAGGER_LABELS_VERSION = 2

#: Expert phases in which the fingers are open: a held object contradicts them.
UNHELD_PHASES = ("approach", "descend", "release", "retreat")
#: Expert phases that mean "go (back) up": the approach to hover height, and the lift, which in
#: recover mode turns into an approach once it finds no object in the fingers.
RISING_PHASES = ("approach", "lift")


class DaggerAgent:
    """Executes `policy`'s actions; labels each step with `oracle`'s action (see module doc).

    Args:
        policy: the learner (any lanes-protocol agent, e.g. agents.vla_agent.VLAAgent).
        oracle: the labeller (default ScriptedAgent(recover=True): gentle on fragile, firm on
            rigid, and back for an object the policy lost).
        label_release: label "let go" where the policy holds the object at the oracle's
            release spot (`ScriptedExpert.at_release`); off, such states are labelled "keep
            holding" like every held state (labels v2, the shipped recipes).
    """

    def __init__(
        self, policy: Agent, oracle: ScriptedAgent | None = None, label_release: bool = False
    ) -> None:
        self.policy = policy
        self.oracle = oracle if oracle is not None else ScriptedAgent(recover=True)
        self.label_release = bool(label_release)
        self.tap = getattr(policy, "tap", None)
        self._labels: dict[int, list[float]] = {}

    def reset(self, seed: int | None = None, lane: int = 0) -> None:
        """Start lane `lane`'s episode in both the policy and the oracle."""
        self.policy.reset(seed, lane)
        self.oracle.reset(seed, lane)
        self._labels.pop(int(lane), None)

    def needs_image_for(self, lane: int = 0) -> bool:
        """The policy's need: the oracle reads only the env's info."""
        return self.policy.needs_image_for(lane)

    @property
    def needs_image(self) -> bool:
        """Lane 0's need for a frame."""
        return self.needs_image_for(0)

    def act_batch(
        self, observations: list[dict[str, Any]], infos: list[dict[str, Any]], lanes: list[int]
    ) -> list[np.ndarray]:
        """The policy's actions; the oracle's (from the same observations) become the labels."""
        executed = self.policy.act_batch(observations, infos, lanes)
        for info, i in zip(infos, lanes, strict=True):
            # The oracle's phase machine advances on its own timers, out of step with the
            # policy's; where they disagree, the labels must follow the scene:
            expert = self.oracle.lane(int(i)).expert
            if self.label_release and info.get("holding") and expert.at_release(info):
                # held at the release spot: the oracle lets go, whatever its timers say (resume
                # would say "lower" here, and "lower" holds on one step more, every step)
                if expert.phase != "release":
                    expert.start("release")
            elif info.get("holding") and expert.phase in UNHELD_PHASES:
                # the policy grasped before the oracle reached "close" (or still holds after it
                # let go): labelling "fingers open" here would drop the object it carries.
                expert.resume(info)
            elif self._at_object_ungripped(info) and expert.phase in RISING_PHASES:
                # the policy is over the object, low, its fingers not on it (it closed too high,
                # or later than the oracle's close timer): the oracle's lift (then "lost: open
                # and go back up to hover") was 96% of the labels of such rigid states in the
                # recipe's DAgger round under labels v1, and taught closing, lifting and
                # reopening in a loop. From the scene: descend to grasp height, or close there.
                expert.resume(info)
        labels = self.oracle.act_batch(observations, infos, lanes)
        self._labels.update({int(i): a.tolist() for i, a in zip(lanes, labels, strict=True)})
        return executed

    @staticmethod
    def _at_object_ungripped(info: dict[str, Any]) -> bool:
        """Not holding, fingers not both on the object, gripper above it (within ALIGNED in
        x, y) and below hover height."""
        if (
            info.get("holding")
            or info.get("gripped")
            or "ee_pos" not in info
            or "object_pos" not in info
        ):
            return False
        return over_object(
            np.asarray(info["ee_pos"], dtype=np.float64),
            np.asarray(info["object_pos"], dtype=np.float64),
        )

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """Lane 0's executed action."""
        return self.act_batch([obs], [info], [0])[0]

    def decision_for(self, lane: int = 0) -> dict[str, Any] | None:
        """The policy's decision for the lane, with the oracle's action as "label"."""
        decision = self.policy.decision_for(lane)
        label = self._labels.get(int(lane))
        if label is None:
            return decision
        return {**(decision or {}), "label": label, "oracle_phase": self.oracle.phase_for(lane)}

    @property
    def last_decision(self) -> dict[str, Any] | None:
        """Lane 0's last decision."""
        return self.decision_for(0)

    def close(self) -> None:
        """Close the policy (detaches its tap)."""
        close = getattr(self.policy, "close", None)
        if close is not None:
            close()
