"""The agent protocol and the oracle ScriptedAgent.

An agent is anything with `reset(seed)`, `act(obs, info) -> action` and a `tap` attribute
(the latest activations and their token positions, or None for agents without a network).
`last_decision` (a dict, or None) is what the agent wants logged for the current step.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from envs.expert import PROFILES, HandlingProfile, ScriptedExpert

#: Handling profile per material: gentle keeps fragile objects intact, firm is faster.
DEFAULT_PROFILE_FOR = {"fragile": "gentle", "rigid": "firm"}


@runtime_checkable
class TapLike(Protocol):
    """What monitors read from an agent's tap."""

    latest: torch.Tensor | None  # (n_tokens × d) activations of the last forward
    positions: torch.Tensor | None  # (n_tokens,) their token positions


@runtime_checkable
class Agent(Protocol):
    """An agent acting in the FrankaPick env."""

    tap: TapLike | None
    last_decision: dict[str, Any] | None

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode."""

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """Return the action (4,) float32 for the current observation and info."""


def check_profile_map(profile_for: dict[str, str | HandlingProfile]) -> dict[str, HandlingProfile]:
    """Validate a material → profile mapping (keys fragile and rigid)."""
    missing = {"fragile", "rigid"} - set(profile_for)
    if missing:
        raise ValueError(
            f"profile_for lacks {sorted(missing)}: give a profile for fragile and rigid"
        )
    out = {}
    for material, profile in profile_for.items():
        if isinstance(profile, HandlingProfile):
            out[material] = profile
        elif profile in PROFILES:
            out[material] = PROFILES[profile]
        else:
            raise ValueError(
                f"profile {profile!r} for {material!r} is unknown; choose one of {sorted(PROFILES)}"
            )
    return out


class ScriptedAgent:
    """Oracle: reads the true material from info["object"] and hands the expert its profile.

    gentle for fragile objects, firm for rigid ones (configurable with `profile_for`).
    """

    def __init__(self, profile_for: dict[str, str | HandlingProfile] | None = None) -> None:
        """Args:
        profile_for: material → profile name or HandlingProfile (default DEFAULT_PROFILE_FOR).
        """
        self.profile_for = check_profile_map(profile_for or DEFAULT_PROFILE_FOR)
        self.expert = ScriptedExpert(self.profile_for["fragile"])
        self.tap: TapLike | None = None
        self.last_decision: dict[str, Any] | None = None
        self.seed: int | None = None

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (the oracle is deterministic; the seed is only recorded)."""
        self.seed = seed
        self.expert.reset()
        self.last_decision = None

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """Choose the profile from info["object"]["material"], then the expert's action."""
        try:
            material = info["object"]["material"]
        except (KeyError, TypeError) as exc:
            raise ValueError("info['object']['material'] is missing: pass the env's info") from exc
        if material not in self.profile_for:
            raise ValueError(f"material {material!r}: expected one of {sorted(self.profile_for)}")
        profile = self.profile_for[material]
        self.expert.profile = profile
        self.last_decision = {
            "p_fragile": 1.0 if material == "fragile" else 0.0,
            "fragile": material == "fragile",
            "profile": profile.name,
            "decided": True,
        }
        return self.expert.act(info)
