"""Demonstrations for the tiny VLA, collected through the one closed loop.

Two sources: a noisy oracle (below), and DAgger rounds (agents.dagger.DaggerAgent: the trained
policy drives and the oracle labels the states it reaches), passed as `agent`.

A NoisyOracle (agents.protocol) handles each object as its true material asks (gentle for
fragile, firm for rigid) while noise is injected into the executed motion; the loop records
every step's state, the executed action and the oracle's CLEAN action (the label: what to do
from where the arm actually is, so the policy learns to recover), and a camera frame every
`frame_every` steps. Episodes are seeded, so a demonstration set is reproducible.

    demos = collect_demonstrations(n_episodes=64, seed=7_000_000, horizon=4)
    demos.save("runs/vla-demos")     # agents.vla_data.Demonstrations
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from envs.expert import PROFILES, HandlingProfile
from rollouts.episode import ClosedLoop, EpisodeSpec
from rollouts.recorders import Recorder, StepView

#: The oracle's labelling rules, recorded with every demonstration folder `physteer train-vla`
#: writes; bump it when they change (envs.expert in recover mode, agents.protocol.NoisyOracle),
#: so a folder an older oracle labelled is not reused. DAgger folders also record
#: agents.dagger.DAGGER_LABELS_VERSION.
ORACLE_VERSION = 1
#: The demonstrations' rigid release height (m above the bin floor) when none is given: the
#: planner's firm profile's.
RIGID_RELEASE = PROFILES["firm"].release_height


def oracle_profiles(rigid_release: float = RIGID_RELEASE) -> dict[str, HandlingProfile]:
    """The VLA oracle's material → HandlingProfile: gentle for fragile; firm for rigid, released
    `rigid_release` m above the bin floor (carried 2 cm above that, or at CARRY if higher).

    Why a setting: the gentle carry (0.16 m) sits where the planner's firm profile lets go
    (0.15 m above the bin), so in the demonstrations a fragile object held over the bin is in
    the state of a rigid one about to be released. A higher rigid release keeps the two apart;
    measured (README, VLA mode), that did not stop the policy's grip jump there.

    Raises:
        ValueError: a height outside envs.expert.HandlingProfile's range.
    """
    return {
        "fragile": PROFILES["gentle"],
        "rigid": replace(PROFILES["firm"], release_height=float(rigid_release)),
    }


class DemoSteps(Recorder):
    """Per step: state, executed and clean actions, instruction; a frame on every one of the first
    `dense_steps` steps (the approach, otherwise rare in the data) and every `frame_every` after;
    with `release_frames`, also on every step the gripper is low over the bin (`low_over_bin`:
    where a gentle release happens, a few steps per episode)."""

    name = "demo"

    def __init__(
        self, frame_every: int, dense_steps: int = 16, release_frames: bool = False
    ) -> None:
        self.frame_every, self.dense_steps = frame_every, dense_steps
        self.release_frames = release_frames
        self.rows: list[dict[str, Any]] = []

    def after_act(self, view: StepView) -> None:
        """Record the step (the frame only on kept steps)."""
        keep = view.step < self.dense_steps or view.step % self.frame_every == 0
        keep = keep or (self.release_frames and low_over_bin(view.info))
        self.rows.append({
            "state": np.asarray(view.obs["state"], dtype=np.float32),
            "executed": np.asarray(view.action, dtype=np.float32),
            "label": np.asarray(view.agent.decision_for(view.lane)["label"], dtype=np.float32),
            "material": view.info["object"]["material"], "instruction": view.info["instruction"],
            "frame": view.frame() if keep else None,
        })  # fmt: skip

    def result(self) -> list[dict[str, Any]]:
        """The episode's rows in step order."""
        return self.rows


def collect_demonstrations(n_episodes: int, seed: int = 7_000_000, horizon: int = 4, frame_every: int = 2,
                           sigma: float = 0.3, prob: float = 0.5, image_size: int = 384, max_steps: int = 200,
                           progress: Any = None, agent: Any = None, n_envs: int = 1,
                           rigid_release: float = RIGID_RELEASE,
                           handling_words: tuple[str | None, ...] = (None,),
                           release_frames: bool = False) -> Any:  # fmt: skip
    """Run `n_episodes` labelled episodes (env seeds seed..seed+n-1, balanced over the env's
    design blocks) and return agents.vla_data.Demonstrations of the kept steps.

    Args:
        n_episodes: episodes (a multiple of 16 is exactly balanced).
        seed: first env seed (keep it apart from evaluation seeds).
        horizon: clean future actions per label (action chunks).
        frame_every: keep every this-many steps (frames cost memory).
        sigma, prob: executed-motion noise of the default agent (agents.protocol.NoisyOracle).
        image_size, max_steps: env settings.
        progress: optional callable(n_done).
        agent: the agent that acts; its decisions must carry "label" (default a NoisyOracle;
            agents.dagger.DaggerAgent for DAgger rounds: the policy drives, the oracle labels).
        n_envs: lanes stepped together (a model-driven agent answers them in one forward).
        rigid_release: the default agent's rigid release height (see `oracle_profiles`).
        handling_words: the instructions' handling words (envs.language; None: the plain
            instruction), one per block of 16 seeds in turn, so each word gets whole balanced
            blocks; the oracle follows the word (agents.protocol.ScriptedAgent).
        release_frames: also keep every step low over the bin (DemoSteps).
    """
    from agents.protocol import NoisyOracle
    from agents.vla_data import Demonstrations, chunk_labels, previous_grip
    from envs.language import check_handling_word

    if n_episodes < 1 or frame_every < 1 or horizon < 1 or n_envs < 1:
        raise ValueError(f"n_episodes={n_episodes}, frame_every={frame_every}, horizon={horizon}, "
                         f"n_envs={n_envs}: each must be >= 1")  # fmt: skip
    if not handling_words:
        raise ValueError("handling_words is empty: give at least one (None: the plain instruction)")
    for word in handling_words:
        check_handling_word(word)
    agent = (
        agent
        if agent is not None
        else NoisyOracle(sigma, prob, profile_for=oracle_profiles(rigid_release))
    )
    loop = ClosedLoop(agent, n_envs=n_envs, image_size=image_size, max_steps=max_steps, record_decisions=False,
                      recorders=lambda spec: [DemoSteps(frame_every, release_frames=release_frames)])  # fmt: skip
    rows, episodes = [], []
    try:
        for start in range(0, n_episodes, n_envs):
            seeds = range(seed + start, seed + min(n_episodes, start + n_envs))
            specs = [
                EpisodeSpec(s, options=handling_options(handling_words, s - seed)) for s in seeds
            ]
            for s, record in zip(seeds, loop.run(specs), strict=True):
                steps = record.extra["demo"]
                rows += steps
                episodes += [s] * len(steps)
            if progress is not None:
                progress(seeds[-1] - seed + 1)
    finally:
        loop.close()
    episodes_arr = np.asarray(episodes)
    labels = chunk_labels(np.stack([r["label"] for r in rows]), episodes_arr, horizon)
    efforts = previous_grip(np.stack([r["executed"] for r in rows]), episodes_arr)
    keep = np.array([r["frame"] is not None for r in rows])
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    return Demonstrations(
        frames=np.stack([r["frame"] for r in kept]), states=np.stack([r["state"] for r in kept]),
        efforts=efforts[keep], labels=labels[keep], materials=np.array([r["material"] for r in kept]),
        episodes=episodes_arr[keep], instructions=np.array([r["instruction"] for r in kept]),
    )  # fmt: skip


#: Height above the bin floor (m) below which `low_over_bin` holds: under the firm profile's
#: release (0.15), above the gentle one's (0.05) by the lowering's last steps.
LOW_OVER_BIN = 0.12


def low_over_bin(info: dict[str, Any]) -> bool:
    """The gripper is over the bin (within envs.expert.BIN_REACH in x, y) and less than
    LOW_OVER_BIN above its floor: the lowering's last steps, a gentle release, the retreat's first."""
    from envs.expert import BIN_REACH

    ee, bin_pos = np.asarray(info["ee_pos"]), np.asarray(info["bin_pos"])
    return bool(
        np.linalg.norm(ee[:2] - bin_pos[:2]) < BIN_REACH and ee[2] - bin_pos[2] < LOW_OVER_BIN
    )


def handling_options(words: tuple[str | None, ...], index: int) -> dict[str, Any] | None:
    """Reset options of the `index`-th episode: words[(index // 16) % len(words)] as the
    instruction's handling word (None: no options, the plain instruction)."""
    word = words[(index // 16) % len(words)]
    return None if word is None else {"handling": word}


def other_handling_demonstrations(n_episodes: int, seed: int, frame_every: int = 3, max_steps: int = 200,
                                  horizon: int = 4, n_envs: int = 1) -> tuple[Any, np.ndarray]:  # fmt: skip
    """Demonstrations of each material handled as the other is (the firm profile on fragile
    objects, the gentle one on rigid: `oracle_profiles` swapped), and per row the material whose
    handling it shows (`toward`): what behaviour-supervised steering trains on
    (steering.methods.reft). Executed motion is noisy and labels clean, as in
    `collect_demonstrations`, whose arguments these are."""
    from agents.protocol import NoisyOracle

    own = oracle_profiles()
    swapped = NoisyOracle(0.3, 0.5, profile_for={"fragile": own["rigid"], "rigid": own["fragile"]})
    demos = collect_demonstrations(n_episodes, seed, horizon=horizon, frame_every=frame_every,
                                   max_steps=max_steps, agent=swapped, n_envs=n_envs)  # fmt: skip
    toward = np.where(demos.materials == "fragile", "rigid", "fragile")
    return demos, toward


def dagger_demonstrations(checkpoint: str, n_episodes: int, seed: int, horizon: int = 4, frame_every: int = 3,
                          n_envs: int = 4, max_steps: int = 200, progress: Any = None,
                          rigid_release: float = RIGID_RELEASE,
                          handling_words: tuple[str | None, ...] = (None,),
                          label_release: bool = False, release_frames: bool = False) -> Any:  # fmt: skip
    """One DAgger round: the VLA at `checkpoint` drives `n_episodes` episodes (seeds seed..),
    the oracle labels every state it reaches (agents.dagger.DaggerAgent). The VLA decodes with
    the expectation rule, as the recipe always has, whatever VLAAgent's default. Returns
    agents.vla_data.Demonstrations, ready to join the earlier rounds' (Demonstrations.concat).
    The oracle releases rigid objects `rigid_release` m above the bin floor (`oracle_profiles`);
    instructions carry `handling_words` and `release_frames` as in `collect_demonstrations`;
    `label_release` as in agents.dagger.DaggerAgent."""
    from agents.dagger import DaggerAgent
    from agents.protocol import ScriptedAgent
    from agents.vla_agent import VLAAgent

    oracle = ScriptedAgent(oracle_profiles(rigid_release), recover=True)
    agent = DaggerAgent(
        VLAAgent(checkpoint, decoding="expectation", tap_layer=None),
        oracle,
        label_release=label_release,
    )
    try:
        return collect_demonstrations(n_episodes, seed=seed, horizon=horizon, frame_every=frame_every,
                                      agent=agent, n_envs=n_envs, max_steps=max_steps, progress=progress,
                                      handling_words=handling_words, release_frames=release_frames)  # fmt: skip
    finally:
        agent.close()
