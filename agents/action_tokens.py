"""Action and state tokens of the tiny VLA (OpenVLA-style bins, one vocabulary token per bin).

`ActionTokenizer` discretises each action dimension (Δx, Δy, Δz, gripper; all in [-1, 1]) into
K uniform bins; every (dimension, bin) pair is a dedicated token of the model's vocabulary
(`<act_dx_07>`), as OpenVLA repurposes 256 tokens per dimension. The model predicts, at one
slot position per dimension, a distribution over that dimension's K tokens, and
`decode_logits` turns it into an action:

- "argmax": the centre of the most likely bin (OpenVLA). A step function of the model's
  internals: a steering vector moves the action only when it flips the top bin.
- "expectation" (the default, DEFAULT_DECODING): Σ_b p(b) · centre(b) under the softmax restricted to the
  dimension's K tokens. The action is then a smooth (differentiable) function of the logits, so
  of the residual stream: a steering of magnitude s moves the action by an amount that grows
  continuously with s. This is what makes graded steering measurable (e.g. grip force rising
  with an SAE steering toward "rigid" rather than jumping at one threshold).
- "gated": the expectation for the motion dimensions; the gripper, whose command is not
  continuous (≤ 0 opens the fingers, > 0 closes them with force ∝ the value), is first
  decided open or closed by the total probability of its closing bins (centre > 0) against
  that of its opening bins, and then takes the expectation over the chosen side's bins only.
  Under "expectation" a closing grip of 0.15 (the gentle level) with 15% of the mass left on
  "open" (−1) decodes to ≈ 0, i.e. fingers that let go of a held object; "gated" keeps the
  grip force a smooth function of the logits while the fingers stay closed.

`StateTokenizer` turns the proprioceptive state into tokens the same way (π0 and SmolVLA take
state; here as discrete tokens rather than a learned projection, so the checkpoint stays a
plain Idefics3 model that `agents.backend.load_vlm` loads and that taps, SAEs and
interventions see unchanged). It reads a few features of the env's 17-float state (geometry
relative to the end effector, finger width, holding) plus the agent's own grip effort, the
gripper command it executed at the previous step. Once the fingers close over the object the
frame no longer shows its material; the effort (≈0.15 gentle, 1.0 firm) carries the handling
chosen while the object was visible through the rest of the episode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

ACTION_DIMS = ("dx", "dy", "dz", "grip")
#: Decoding rules of ActionTokenizer.decode_logits (see the module docstring).
DECODING_RULES = ("expectation", "gated", "argmax")
#: The rule VLAAgent and every command use unless told otherwise: with it the shipped checkpoint
#: keeps fragile objects intact most often (README, "Decoding, measured").
DEFAULT_DECODING = "expectation"
#: The dimension the "gated" rule decides open/closed before averaging.
GRIP_DIM = "grip"
#: Allowed numbers of bins per dimension.
K_RANGE = (2, 1024)
_NAME = re.compile(r"^[a-z][a-z0-9]*$")
#: Size of the env's observation state (envs.franka_pick.STATE_SIZE).
ENV_STATE_SIZE = 17


def check_bins(k_bins: Any, name: str = "k_bins") -> int:
    """Validate a number of bins: an int in K_RANGE; ValueError naming K and the range."""
    lo, hi = K_RANGE
    if (
        isinstance(k_bins, bool)
        or not isinstance(k_bins, (int, np.integer))
        or not lo <= k_bins <= hi
    ):
        raise ValueError(f"{name}={k_bins!r}: K must be an int in [{lo}, {hi}]")
    return int(k_bins)


def _check_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    names = tuple(names)
    if not names:
        raise ValueError(f"{what}=(): give at least one name")
    for n in names:
        if not isinstance(n, str) or not _NAME.match(n):
            raise ValueError(
                f"{what} name {n!r}: use lowercase letters and digits, starting with a letter"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{what}={names}: names must be unique")
    return names


class _Bins:
    """Uniform bins over [low, high] with token strings `<{prefix}_{dim}_{bin}>`."""

    prefix = "bin"

    def __init__(self, k_bins: int, low: float, high: float, dims: Sequence[str]) -> None:
        self.k_bins = check_bins(k_bins)
        low, high = float(low), float(high)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"low={low}, high={high}: need finite low < high")
        self.low, self.high = low, high
        self.dims = _check_names(dims, "dims")
        self.edges = np.linspace(low, high, self.k_bins + 1)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2
        self.width = (high - low) / self.k_bins
        self._digits = len(str(self.k_bins - 1))

    @property
    def n_dims(self) -> int:
        """Number of dimensions."""
        return len(self.dims)

    def token(self, dim: str | int, bin_id: int) -> str:
        """The vocabulary token of bin `bin_id` of dimension `dim` (name or index)."""
        name = self.dims[dim] if isinstance(dim, (int, np.integer)) else dim
        if name not in self.dims:
            raise ValueError(f"dim {dim!r}: expected one of {self.dims}")
        if not 0 <= int(bin_id) < self.k_bins:
            raise ValueError(f"bin {bin_id}: valid bins are 0..{self.k_bins - 1}")
        return f"<{self.prefix}_{name}_{int(bin_id):0{self._digits}d}>"

    def tokens(self) -> list[str]:
        """Every token, dimension-major: dims[0] bins 0..K-1, then dims[1], ..."""
        return [self.token(d, b) for d in self.dims for b in range(self.k_bins)]

    def token_ids(self, tokenizer: Any) -> torch.Tensor:
        """(n_dims × K) vocabulary ids of the tokens; ValueError naming missing ones."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in self.tokens() if t not in vocab]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(self.tokens())} {self.prefix} tokens are not in the "
                f"vocabulary (e.g. {missing[:3]}): not a checkpoint built by agents.vla_model"
            )
        ids = [vocab[t] for t in self.tokens()]
        return torch.tensor(ids, dtype=torch.long).view(self.n_dims, self.k_bins)

    def to_bins(self, values: np.ndarray) -> np.ndarray:
        """Bin ids (int64) of values already in [low, high] units (clipped into range)."""
        idx = np.floor((np.clip(values, self.low, self.high) - self.low) / self.width)
        return np.clip(idx, 0, self.k_bins - 1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (see from_dict)."""
        return {"k_bins": self.k_bins, "low": self.low, "high": self.high, "dims": list(self.dims)}


class ActionTokenizer(_Bins):
    """K uniform bins per action dimension over [low, high]; one vocabulary token per bin.

    Args:
        k_bins: bins per dimension, an int in [2, 1024].
        low, high: the action range (the env's Box(-1, 1)).
        dims: dimension names (tokens are `<act_{dim}_{bin}>`).
    """

    prefix = "act"

    def __init__(
        self,
        k_bins: int,
        low: float = -1.0,
        high: float = 1.0,
        dims: Sequence[str] = ACTION_DIMS,
    ) -> None:
        super().__init__(k_bins, low, high, dims)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionTokenizer:
        """Rebuild from `to_dict()` output."""
        return cls(data["k_bins"], data["low"], data["high"], tuple(data["dims"]))

    def _check_actions(self, actions: np.ndarray | Sequence[float]) -> np.ndarray:
        arr = np.asarray(actions, dtype=np.float64)
        if arr.ndim == 0 or arr.shape[-1] != self.n_dims:
            raise ValueError(
                f"actions of shape {arr.shape}: the last axis must hold {self.n_dims} values {self.dims}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("actions contain NaN or inf")
        return arr

    def encode(self, actions: np.ndarray | Sequence[float]) -> np.ndarray:
        """Bin ids (int64, same shape) of actions (... × n_dims); values outside are clipped."""
        return self.to_bins(self._check_actions(actions))

    def decode(self, bin_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Actions (float32, same shape) at the centres of bins `bin_ids` (... × n_dims)."""
        ids = np.asarray(bin_ids)
        if ids.ndim == 0 or ids.shape[-1] != self.n_dims:
            raise ValueError(
                f"bin ids of shape {ids.shape}: the last axis must hold {self.n_dims} ids"
            )
        if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= self.k_bins:
            raise ValueError(f"bin ids must be integers in 0..{self.k_bins - 1}")
        return self.centres[ids].astype(np.float32)

    def decode_logits(
        self, logits: torch.Tensor | np.ndarray, rule: str = DEFAULT_DECODING
    ) -> np.ndarray:
        """Actions (... × n_dims, float32) from logits over each dimension's bins (... × n_dims × K).

        Args:
            logits: scores of the K tokens of each dimension (the model's logits gathered at
                `token_ids`); the softmax is taken over those K only.
            rule: "expectation" (Σ p·centre: smooth in the logits, the default), "gated"
                (the expectation, but the gripper's open/closed side is decided first; see the
                module docstring) or "argmax" (centre of the top bin: a step function).
        """
        if rule not in DECODING_RULES:
            raise ValueError(f"rule={rule!r}: expected one of {DECODING_RULES}")
        x = torch.as_tensor(logits).detach().to("cpu", torch.float64)
        if x.ndim < 2 or tuple(x.shape[-2:]) != (self.n_dims, self.k_bins):
            raise ValueError(
                f"logits of shape {tuple(x.shape)}: expected (..., {self.n_dims}, {self.k_bins})"
            )
        centres = torch.as_tensor(self.centres, dtype=torch.float64)
        if rule == "argmax":
            return centres[x.argmax(dim=-1)].numpy().astype(np.float32)
        p = torch.softmax(x, dim=-1)
        out = p @ centres
        if rule == "gated" and GRIP_DIM in self.dims:
            g = self.dims.index(GRIP_DIM)
            closing = centres > 0
            p_close = p[..., g, :][..., closing].sum(-1)
            side = torch.where((p_close >= 0.5)[..., None], closing, ~closing)  # ... × K
            mass = torch.where(side, p[..., g, :], torch.zeros_like(p[..., g, :]))
            out[..., g] = (mass @ centres) / mass.sum(-1).clamp_min(1e-12)
        return out.numpy().astype(np.float32)

    def soft_targets(self, actions: np.ndarray, sigma_bins: float = 1.0) -> np.ndarray:
        """Training targets (... × n_dims × K): a discretised Gaussian around each action.

        With `sigma_bins` = 0 the target is one-hot on the action's bin. A width of about one
        bin teaches the model that neighbouring bins are near misses, which keeps the expectation
        decoding calibrated (the mean of the target sits at the action, not at a bin centre).
        """
        arr = np.clip(self._check_actions(actions), self.low, self.high)
        if not sigma_bins >= 0:
            raise ValueError(f"sigma_bins={sigma_bins}: must be >= 0")
        if sigma_bins == 0:
            return np.eye(self.k_bins, dtype=np.float32)[self.encode(arr)]
        pos = (arr - self.low) / self.width - 0.5  # continuous bin coordinate
        z = (np.arange(self.k_bins) - pos[..., None]) / sigma_bins
        w = np.exp(-0.5 * z**2)
        return (w / w.sum(-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class StateFeature:
    """One tokenised state feature.

    Attributes:
        name: token name part (lowercase letters/digits).
        index: index into the env state (0..16), or -1 for the grip effort.
        minus: env-state index subtracted from it (relative geometry), or -1 for none.
        low, high: range covered by the bins (values outside are clipped).
        power: companding exponent: the value is mapped to sign(u)·|u|^power with u in [-1, 1]
            (0.5 gives finer bins near zero, where a relative position must be precise).
    """

    name: str
    index: int
    minus: int = -1
    low: float = -1.0
    high: float = 1.0
    power: float = 1.0


#: Default features: object and bin relative to the end effector, ee height, finger width,
#: holding, and the grip effort (last executed gripper command; carries the handling).
DEFAULT_STATE_FEATURES = (
    StateFeature("objx", 7, 0, -0.4, 0.4, 0.5),
    StateFeature("objy", 8, 1, -0.4, 0.4, 0.5),
    StateFeature("objz", 9, 2, -0.4, 0.4, 0.5),
    StateFeature("binx", 13, 0, -0.5, 0.5, 0.5),
    StateFeature("biny", 14, 1, -0.5, 0.5, 0.5),
    StateFeature("binz", 15, 2, -0.5, 0.5, 0.5),
    StateFeature("eez", 2, -1, 0.0, 0.4),
    StateFeature("width", 6, -1, 0.0, 0.08),
    StateFeature("hold", 16, -1, 0.0, 1.0),
    StateFeature("effort", -1, -1, -1.0, 1.0),
)


class StateTokenizer(_Bins):
    """Bins of a few proprioceptive features as tokens `<st_{feature}_{bin}>`.

    Args:
        n_bins: bins per feature, an int in [2, 1024].
        features: the StateFeatures to tokenise (default DEFAULT_STATE_FEATURES).
        state_size: size of the env state vector (17).
    """

    prefix = "st"

    def __init__(
        self,
        n_bins: int = 32,
        features: Sequence[StateFeature] = DEFAULT_STATE_FEATURES,
        state_size: int = ENV_STATE_SIZE,
    ) -> None:
        features = tuple(features)
        super().__init__(n_bins, -1.0, 1.0, [f.name for f in features])
        self.features = features
        self.state_size = int(state_size)
        for f in features:
            for idx in (f.index, f.minus):
                if not -1 <= idx < self.state_size:
                    raise ValueError(
                        f"feature {f.name}: index {idx} outside -1..{self.state_size - 1}"
                    )
            if not (f.low < f.high and f.power > 0):
                raise ValueError(f"feature {f.name}: need low < high and power > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateTokenizer:
        """Rebuild from `to_dict()` output."""
        feats = [StateFeature(**f) for f in data["features"]]
        return cls(data["k_bins"], feats, data.get("state_size", ENV_STATE_SIZE))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (see from_dict)."""
        return {
            "k_bins": self.k_bins,
            "state_size": self.state_size,
            "features": [asdict(f) for f in self.features],
        }

    def values(self, states: np.ndarray, grip_effort: np.ndarray | float) -> np.ndarray:
        """Companded feature values in [-1, 1] (N × n_features) of states (N × 17) and efforts (N)."""
        arr = np.asarray(states, dtype=np.float64)
        single = arr.ndim == 1
        arr = arr[None] if single else arr
        if arr.ndim != 2 or arr.shape[1] != self.state_size:
            raise ValueError(
                f"state of size {arr.shape[-1] if arr.ndim else 0} (shape {np.shape(states)}): "
                f"expected {self.state_size} floats per state (the env's observation state)"
            )
        effort = np.broadcast_to(np.asarray(grip_effort, dtype=np.float64), (arr.shape[0],))
        if not (np.all(np.isfinite(arr)) and np.all(np.isfinite(effort))):
            raise ValueError("state or grip effort contains NaN or inf")
        cols = []
        for f in self.features:
            v = effort if f.index < 0 else arr[:, f.index]
            if f.minus >= 0:
                v = v - arr[:, f.minus]
            u = np.clip(2 * (v - f.low) / (f.high - f.low) - 1, -1.0, 1.0)
            cols.append(np.sign(u) * np.abs(u) ** f.power)
        out = np.stack(cols, axis=1)
        return out[0] if single else out

    def encode(self, states: np.ndarray, grip_effort: np.ndarray | float) -> np.ndarray:
        """Bin ids (N × n_features, or n_features for one state) of states and grip efforts."""
        return self.to_bins(self.values(states, grip_effort))

    def text(self, state: np.ndarray, grip_effort: float) -> str:
        """The token string of one state, e.g. "<st_objx_12><st_objy_20>...", for a prompt."""
        ids = self.encode(state, grip_effort)
        if ids.ndim != 1:
            raise ValueError("text() takes one state (17,), not a batch")
        return "".join(self.token(i, int(b)) for i, b in enumerate(ids))
