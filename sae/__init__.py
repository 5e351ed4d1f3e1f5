"""Sparse autoencoders on agent activations: Matryoshka top-k SAE, activation store, trainer,
metrics and decorrelated feature discovery.

Of physteer it imports storage only.

Imports only torch, safetensors, numpy, pyarrow, rich and matplotlib, so it works on any
activations (no envs, no agents).
"""

from sae._sparse import row_topk
from sae.config import SAEConfig, default_config
from sae.discovery import DiscoveryResult, FeatureEffect, discover, discover_store
from sae.matryoshka import MatryoshkaSAE, SparseCode
from sae.metrics import EvalResult, evaluate, fve, l0
from sae.store import ActivationStore, CorruptShardError
from sae.trainer import TrainConfig, TrainResult, latest_checkpoint, train_sae

__all__ = [
    "ActivationStore", "CorruptShardError", "DiscoveryResult", "EvalResult", "FeatureEffect",
    "MatryoshkaSAE", "SAEConfig", "SparseCode", "TrainConfig", "TrainResult", "default_config",
    "discover", "discover_store", "evaluate", "fve", "l0", "latest_checkpoint", "row_topk", "train_sae",
]  # fmt: skip
