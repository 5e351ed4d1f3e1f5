"""The one interface every steering method implements (AxBench's shape: fit, then steer).

    method = make_method("dom")                     # steering.registry
    method.fit(data)                                # FitData: labelled activations per layer
    with method.intervention(-1.0).attach(backend): # strength: signed, + toward fragile
        agent.act(...)
    # detached: the model is bit-identical to before (weight edits restored from a copy)

A method declares what it needs (`needs`: "labelled" activations, "frames" to run forwards on,
"sae" with discovered fragility features), what it touches (`acts_on`), the strengths it
accepts (`strength_range`, 0 always the exact no-op) and its supervision. `fit` records the
samples used and the seconds spent (`fit_info`); `save` / `load_method` keep a fitted method
in a folder (method.json + state.safetensors; `steering.registry.load_method` reads it), so a run's workers load what the driver fitted.

Strength convention: a signed number, positive toward fragile, negative toward rigid. For
methods that add a direction it is in units of the class-mean distance ‖μ_fragile − μ_rigid‖
at the method's layer (−1 moves a token by that distance toward rigid); methods without a sign
(ablation: the fraction of a direction removed) declare `signed = False`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

FORMAT_VERSION = 1
METHOD_FILE, STATE_FILE = "method.json", "state.safetensors"
NEEDS = ("labelled", "frames", "sae", "demonstrations")
#: Where a residual edit may act (agents.hooks.POSITION_NAMES): the image tokens, the prompt's
#: text, the VLA's state tokens or its output slots, every position, or the last one.
POSITIONS = ("image", "text", "state", "slots", "all", "last")


@dataclass
class FitData:
    """What methods fit on: activations of labelled frames at one or more decoder layers.

    Attributes:
        acts: layer → (n × d) float tensor, one row per image token (rows of one frame share
            `group`), the same rows at every layer.
        material: (n,) "fragile" / "rigid" per row.
        color: (n,) "red" / "blue" per row.
        group: (n,) the frame each row comes from (for pooling and grouped splits).
        layer: the layer a method acts at unless it chooses its own (the agent's tap layer).
        frames: (N × H × W × 3) uint8 frames, for methods that run forwards (may be None).
        frame_material: (N,) the material of each frame.
        sae: a fitted MatryoshkaSAE at `layer` (or None).
        fragility_features: [(latent, rigid level, fragile level)] discovered on it (or None).
        pair: (n,) per row, the scene it shows when the data are contrast pairs (the two frames
            of one scene, one fragile and one rigid, everything else equal), or None.
        demos: demonstrations of each handling as a loss through the model
            (steering.behaviour.VLABehaviour or PlannerBehaviour), for methods supervised by
            behaviour (or None).
        source: where the data came from (recorded in fit_info).
    """

    acts: dict[int, torch.Tensor]
    material: np.ndarray
    color: np.ndarray
    group: np.ndarray
    layer: int
    frames: np.ndarray | None = None
    frame_material: np.ndarray | None = None
    sae: Any = None
    fragility_features: list[tuple[int, float, float]] | None = None
    demos: Any = None
    pair: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.material)
        if self.layer not in self.acts:
            raise ValueError(f"layer={self.layer}: the data has layers {sorted(self.acts)}")
        for layer, a in self.acts.items():
            if a.ndim != 2 or a.shape[0] != n:
                raise ValueError(f"acts[{layer}] has shape {tuple(a.shape)}: expected ({n}, d), "
                                 f"one row per material label")  # fmt: skip
        if len(self.color) != n or len(self.group) != n:
            raise ValueError(f"material, color and group must have one entry per row ({n}), "
                             f"got {len(self.color)} colors and {len(self.group)} groups")  # fmt: skip
        if self.pair is not None and len(self.pair) != n:
            raise ValueError(f"pair has {len(self.pair)} entries for {n} rows")
        found = set(np.unique(self.material).tolist())
        if found != {"fragile", "rigid"}:
            raise ValueError(
                f"materials {sorted(found)}: fitting needs rows of both 'fragile' and 'rigid'"
            )

    @property
    def layers(self) -> list[int]:
        """The layers the data holds."""
        return sorted(self.acts)

    def has(self, need: str) -> bool:
        """Whether the data offers `need` (one of NEEDS)."""
        if need == "frames":
            return self.frames is not None and self.frame_material is not None
        if need == "sae":
            return self.sae is not None and bool(self.fragility_features)
        if need == "demonstrations":
            return self.demos is not None and len(self.demos) > 0
        return need == "labelled"

    def split(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(fragile rows, rigid rows) at `layer` (default: the data's layer)."""
        a = self.acts[self.layer if layer is None else layer].float()
        fragile = torch.as_tensor(self.material == "fragile")
        return a[fragile], a[~fragile]

    def class_means(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_fragile, μ_rigid) at `layer`."""
        fragile, rigid = self.split(layer)
        return fragile.mean(0), rigid.mean(0)

    def dom(self, layer: int | None = None) -> torch.Tensor:
        """μ_fragile − μ_rigid at `layer`: the difference of means every unit is measured in."""
        mu_f, mu_r = self.class_means(layer)
        return mu_f - mu_r


class SteeringMethod:
    """Base of every steering method: fit on FitData, then `intervention(strength)`.

    Subclasses set the class attributes and implement `_fit(data, backend)` (store what they
    learned as tensors in `self.state` and plain values in `self.params`) and
    `_intervention(strength, seed)` (an unattached edit: agents.interventions hooks, or
    steering.edits' weight edits and stacks). Strength 0 never reaches `_intervention`: the base
    returns a no-op edit, so 0 is exactly unsteered.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""  # the citation of the method implemented
    needs: ClassVar[tuple[str, ...]] = ("labelled",)
    acts_on: ClassVar[str] = "residual"  # or "ffn", "weights"
    supervision: ClassVar[str] = "concept labels"  # or "behaviour", "none"
    signed: ClassVar[bool] = True  # the sign of the strength picks the material
    strength_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)  # any finite strength
    per_seed: ClassVar[bool] = False  # its edit is drawn per episode seed (a control)
    needs_backend: ClassVar[bool] = False  # fit reads the model itself (weights, forwards)
    #: the effect grows from 0 at strength 0 (adding or scaling); False for clamps, whose
    #: weakest strength already sets a value (a dose curve is not interpolated from 0)
    from_zero: ClassVar[bool] = True
    #: strengths of a dose curve toward one material (made negative toward rigid when signed)
    dose: ClassVar[tuple[float, ...]] = (0.25, 0.5, 1.0, 2.0, 4.0)

    #: where the edit acts unless `positions` is given (one of POSITIONS)
    default_positions: ClassVar[str] = "image"
    #: False: the method fixes where it acts (weight edits, neuron clamps act at every token)
    choose_positions: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        """Args:
        params: the method's settings (saved with it); every residual method takes
            `positions`, one of POSITIONS ("image" by default, where the fit data come from).
        """
        positions = params.get("positions", self.default_positions)
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r} for steering method {self.name!r}: choose one of {POSITIONS}")  # fmt: skip
        if positions != self.default_positions and not self.choose_positions:
            raise ValueError(f"steering method {self.name!r} fixes where it acts: positions={positions!r} is not "
                             f"allowed (it edits weights or neurons at every token)")  # fmt: skip
        self.params: dict[str, Any] = dict(params)
        self.state: dict[str, torch.Tensor] = {}
        self.fit_info: dict[str, Any] = {}
        self.layer: int | None = None

    @property
    def positions(self) -> str:
        """The token positions the edit acts at (agents.hooks position names)."""
        return str(self.params.get("positions", self.default_positions))

    # --- fitting -------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether fit (or load) has run."""
        return self.layer is not None

    def check_data(self, data: FitData) -> None:
        """ValueError naming what this method needs that `data` lacks (before any work)."""
        missing = [n for n in self.needs if not data.has(n)]
        if missing:
            raise ValueError(f"steering method {self.name!r} needs {', '.join(missing)} data, which this run lacks "
                             f"(it has: {', '.join(n for n in NEEDS if data.has(n))})")  # fmt: skip

    def fit(self, data: FitData, backend: Any = None) -> SteeringMethod:
        """Fit on `data` (and `backend`, for methods that run forwards); records fit_info."""
        self.check_data(data)
        if ("frames" in self.needs or self.needs_backend) and backend is None:
            raise ValueError(
                f"steering method {self.name!r} reads the model to fit: pass the backend"
            )
        start = time.perf_counter()
        self.layer, self.state, self.fit_info = data.layer, {}, {}
        self._fit(data, backend)
        self.fit_info = {"n_rows": int(len(data.material)), "n_frames": int(len(np.unique(data.group))),
                         "fit_seconds": round(time.perf_counter() - start, 4), "source": data.source,
                         **self.fit_info}  # fmt: skip
        return self

    def _fit(self, data: FitData, backend: Any) -> None:
        raise NotImplementedError

    # --- steering ------------------------------------------------------------------------
    def check_strength(self, strength: float) -> float:
        """The strength as a float; ValueError naming it and the method's range otherwise."""
        lo, hi = self.strength_range
        value = float(strength)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(
                f"strength {strength!r} of steering method {self.name!r}: allowed [{lo:g}, {hi:g}]"
            )
        return value

    def intervention(self, strength: float, seed: int = 0) -> Any:
        """The edit at `strength`, not yet attached (`.attach(backend)` → a context manager)."""
        value = self.check_strength(strength)
        if not self.fitted:
            raise ValueError(
                f"steering method {self.name!r} is not fitted: call fit(data) or load_method(dir)"
            )
        if value == 0.0:
            from steering.edits import EditStack

            return EditStack([])
        return self._intervention(value, seed)

    def _intervention(self, strength: float, seed: int) -> Any:
        raise NotImplementedError

    def dose_strengths(self, toward: str) -> list[float]:
        """The dose curve's strengths toward `toward` ("fragile" or "rigid")."""
        sign = -1.0 if (self.signed and toward == "rigid") else 1.0
        return [sign * s for s in self.dose]

    def units(self) -> int:
        """How many units (directions, dimensions, neurons, weights) the method touches."""
        return int(self.fit_info.get("units", 1))

    def describe(self) -> dict[str, Any]:
        """Plain facts for tables: name, paper, data, supervision, what it touches, fit info."""
        return {"method": self.name, "paper": self.paper, "needs": list(self.needs), "acts_on": self.acts_on,
                "supervision": self.supervision, "layer": self.layer, "units": self.units(),
                "positions": self.positions,
                "strength_range": [v if math.isfinite(v) else None for v in self.strength_range],
                **self.fit_info}  # fmt: skip

    # --- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write state.safetensors, then method.json (last: a method.json means a whole save)."""
        from storage import write_json, write_safetensors

        if not self.fitted:
            raise ValueError(f"steering method {self.name!r} is not fitted: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_safetensors(directory / STATE_FILE, {k: v.contiguous() for k, v in self.state.items()} or
                          {"_empty": torch.zeros(0)})  # fmt: skip
        doc = {"format_version": FORMAT_VERSION, "name": self.name, "layer": self.layer,
               "params": self.params, "fit_info": self.fit_info}  # fmt: skip
        module = type(self).__module__
        if not module.startswith("steering."):  # a user's method: its file, for the workers
            import inspect

            doc["file"] = inspect.getfile(type(self))
        self._save_extra(directory)
        write_json(directory / METHOD_FILE, doc)
        return directory

    def _save_extra(self, directory: Path) -> None:
        """Hook for methods with files of their own (the SAE clamp's SAE)."""

    def _restore(
        self, doc: dict[str, Any], state: dict[str, torch.Tensor], directory: Path
    ) -> None:
        self.layer = int(doc["layer"])
        self.fit_info = dict(doc.get("fit_info") or {})
        self.state = {k: v for k, v in state.items() if k != "_empty"}
