"""physteer.envs: the FrankaPick Gymnasium environment and its scripted expert.

Imports numpy, pybullet and gymnasium only: no other physteer package, no torch, no transformers.

Importing this package registers `physteer/FrankaPick-v0`; `gym.make("envs:physteer/FrankaPick-v0")`
imports it for you.
"""

from gymnasium.envs.registration import register, registry

from envs.franka_pick import EnvConfig, FrankaPickEnv
from envs.objects import COLORS, MATERIALS, SHADES, SHAPES, ObjectSpec

ENV_ID = "physteer/FrankaPick-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.franka_pick:FrankaPickEnv", max_episode_steps=None)

__all__ = [
    "COLORS",
    "ENV_ID",
    "MATERIALS",
    "SHADES",
    "SHAPES",
    "EnvConfig",
    "FrankaPickEnv",
    "ObjectSpec",
]
