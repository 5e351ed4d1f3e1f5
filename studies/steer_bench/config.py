"""Settings of the steering benchmark (studies.steer_bench.run): one config dataclass → its CLI."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: The built-in methods a benchmark ranks by default (steering.registry: controls run beside them).
DEFAULT_METHODS = ("dom", "pca", "lat", "probe", "sae", "neuron", "ablation", "selective", "austeer",
                   "conceptor", "cast", "lineas", "steer2edit", "loreft")  # fmt: skip
AGENTS = ("vla", "vlm")
FIT_DATA = ("unpaired", "paired")
COLLECT_SEED = 2_000_000  # first env seed of the fit frames (episodes use seeds below)
DEMO_SEED = 2_100_000  # first env seed of the demonstration episodes (behaviour-supervised methods)
CALIBRATION_SEED = 10_000  # first env seed of the calibration episodes (evaluation: 0..seeds-1)
#: Fields whose values made the cached resources and fitted methods; a rerun must keep them.
RESOURCE_FIELDS = ("agent", "model", "layer", "images", "sae_steps", "sae_expansion", "sae_lr", "methods",
                   "method_files", "material", "target", "calibration_seeds", "refine_rounds", "seeds", "max_steps",
                   "positions", "method_params", "demo_episodes", "fit_data")  # fmt: skip


@dataclass
class SteerBenchConfig:
    """The steering benchmark (saved as bench_config.json in its folder).

    Attributes:
        name: benchmark folder name under `out`.
        out: parent folder of benchmark folders.
        agent: "vla" (the VLA's own actions move the arm) or "vlm" (the planner chooses a
            handling profile from its fragility answer).
        model: checkpoint folder ("tiny": the embedded tiny VLA, or tiny VLM with agent vlm).
        layer: decoder layer every method fits at and acts on unless it chooses its own (None:
            the agent's default tap layer).
        methods: steering methods to compare (steering.registry names; a user's own with
            --method-files); the controls (random direction, random neurons) always run beside.
        method_files: Python files defining a user's own steering methods.
        positions: where every method that lets you choose acts: "image" (the image tokens,
            where the fit data come from), "text" (the instruction or question), "state" (the
            VLA's state tokens), "slots" (the VLA's output slots), "all" or "last". Weight
            edits and neuron clamps act at every token whatever this says.
        method_params: a method's own settings as NAME.KEY=VALUE (VALUE read as JSON, else a
            string), e.g. "loreft.rank=1" (ReFT-r1) or "lineas.sparsity=0.01".
        fit_data: what the label-fitted methods fit on: "unpaired" (each frame its own scene)
            or "paired" (contrast pairs: each scene rendered with its object fragile and rigid,
            everything else equal; LAT then uses the true pairs).
        demo_episodes: demonstration episodes of each material handled as the other is (the
            behaviour-supervised methods' data: LoReFT), env seeds from 2,100,000.
        material: the objects steered (toward the other material): "fragile" (toward rigid:
            firmer grip) or "rigid" (toward fragile: gentler).
        target: the effect every method's strength is chosen to reach on calibration seeds, as a
            fraction of the way from the unsteered grip to the scripted expert's grip on the
            other material (0.5: halfway).
        calibration_seeds: episodes per dose point on calibration seeds (env seeds from 10000,
            disjoint from evaluation); the strength is chosen here, never on evaluation seeds.
        refine_rounds: bisection rounds after the dose curve: each runs every interpolated
            strength on the calibration seeds and interpolates again (0: the dose curve alone).
        seeds: evaluation episodes per method and arm (env seeds 0..seeds-1).
        images: labelled frames every method fits on (activations at every layer).
        sae_steps: SAE training steps (the SAE method's dictionary).
        sae_expansion: SAE latents per residual dimension.
        sae_lr: SAE learning rate (None: sae.TrainConfig's default).
        max_steps: steps before an episode is truncated.
        executor: "serial", "processes" or "ray" (see `physteer run`).
        workers: processes or Ray actors, each holding its own model.
        envs_per_worker: environments a worker steps together (one batched forward).
        device: torch device of the model ("cpu", "cuda", "auto").
    """

    name: str = "steer-bench"
    out: str = "runs"
    agent: str = "vla"
    model: str = "tiny"
    layer: int | None = None
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    method_files: list[str] = field(default_factory=list)
    positions: str = "image"
    method_params: list[str] = field(default_factory=list)
    demo_episodes: int = 16
    fit_data: str = "unpaired"
    material: str = "fragile"
    target: float = 0.5
    calibration_seeds: int = 6
    refine_rounds: int = 2
    seeds: int = 20
    images: int = 256
    sae_steps: int = 1500
    sae_expansion: float = 4.0
    sae_lr: float | None = None
    max_steps: int = 200
    executor: str = "processes"
    workers: int = 2
    envs_per_worker: int = 4
    device: str = "cpu"

    @property
    def root(self) -> Path:
        """The benchmark folder."""
        return Path(self.out) / self.name

    @property
    def other(self) -> str:
        """The material the steering goes toward."""
        return "rigid" if self.material == "fragile" else "fragile"

    @property
    def direction(self) -> int:
        """The expected sign of the peak-grip change (+1: fragile objects steered toward rigid)."""
        return 1 if self.material == "fragile" else -1

    def validate(self) -> list[str]:
        """ValueError naming the first bad setting before any work; returns every method name
        (the user's files imported, each name known, each method's data need met)."""
        from steering.registry import CONTROLS, load_method_files, method_class, method_settings

        for name, low in (("calibration_seeds", 2), ("refine_rounds", 0), ("seeds", 2), ("images", 16), ("sae_steps", 1),
                          ("max_steps", 1), ("workers", 1), ("envs_per_worker", 1), ("demo_episodes", 2)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an int >= {low}")
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r}: a folder name without '/'")
        if self.agent not in AGENTS:
            raise ValueError(f"agent={self.agent!r}: allowed {list(AGENTS)}")
        if self.material not in ("fragile", "rigid"):
            raise ValueError(f"material={self.material!r}: allowed ['fragile', 'rigid']")
        if not (math.isfinite(self.target) and 0 < self.target <= 1):
            raise ValueError(
                f"target={self.target!r}: a fraction of the way to the expert, in (0, 1]"
            )
        if not self.sae_expansion > 0 or (self.sae_lr is not None and not 0 < self.sae_lr < 1):
            raise ValueError(
                f"sae_expansion={self.sae_expansion} must be > 0 and sae_lr={self.sae_lr} in (0, 1)"
            )
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods={self.methods}: give at least one method, each once")
        if self.method_files:
            load_method_files(self.method_files)
        names = [*self.methods, *(c for c in CONTROLS if c not in self.methods)]
        from steering.base import POSITIONS

        if self.fit_data not in FIT_DATA:
            raise ValueError(f"fit_data={self.fit_data!r}: allowed {list(FIT_DATA)}")
        if self.fit_data == "paired" and self.images % 2:
            raise ValueError(f"images={self.images}: paired fit data need an even number of frames")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions={self.positions!r}: allowed {list(POSITIONS)}")
        params = self.parsed_method_params()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(
                f"method_params name {unknown}, which this run does not run (methods: {names})"
            )
        for name, given in params.items():
            allowed = method_settings(name)
            if set(given) - set(allowed):
                raise ValueError(f"method_params {sorted(set(given) - set(allowed))} of method {name!r}: "
                                 f"it takes {allowed}")  # fmt: skip
        for name in names:
            method_class(name)(**self.method_kwargs(name))  # ValueError naming a bad setting
        self.experiment("episodes", [0], ["unsteered"], self.material, False, None).validate()
        saved = self.root / "bench_config.json"
        if saved.is_file():
            old = json.loads(saved.read_text())
            # a field added since the folder was made counts as its default
            defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
            changed = [k for k in RESOURCE_FIELDS
                       if old.get(k, defaults.get(k)) != json.loads(json.dumps(getattr(self, k)))]  # fmt: skip
            if changed:
                raise ValueError(f"{self.root} holds a benchmark made with other {changed} "
                                 f"({ {k: old.get(k) for k in changed} }); use another --name")  # fmt: skip
        return names

    def parsed_method_params(self) -> dict[str, dict[str, Any]]:
        """method_params as {method: {key: value}}; ValueError naming an entry not NAME.KEY=VALUE."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.method_params:
            head, eq, text = entry.partition("=")
            name, dot, key = head.partition(".")
            if not (eq and dot and name and key.isidentifier()):
                raise ValueError(
                    f"method_params entry {entry!r}: expected NAME.KEY=VALUE, e.g. loreft.rank=1"
                )
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            out.setdefault(name, {})[key] = value
        return out

    def method_kwargs(self, name: str) -> dict[str, Any]:
        """What method `name` is built with: the run's positions (where the method lets you
        choose them) and its method_params."""
        from steering.registry import method_class

        kwargs = dict(self.parsed_method_params().get(name, {}))
        if method_class(name).choose_positions and "positions" not in kwargs:
            kwargs["positions"] = self.positions
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for bench_config.json."""
        return asdict(self)

    def experiment(self, name: str, seeds: list[int], conditions: list[str], material: str, unbreakable: bool,
                   methods: str | None, agent: str | None = None, object_pattern: str = "material") -> Any:  # fmt: skip
        """The runner's ExperimentConfig of one of the benchmark's episode sets."""
        from rollouts.experiment_config import ExperimentConfig

        return ExperimentConfig(
            name=name, out=str(self.root / "episodes"), conditions=conditions, seeds=seeds, material=material,
            unbreakable=unbreakable, agent=agent or self.agent, model=self.model, layer=self.layer,
            max_steps=self.max_steps, holding=False, executor=self.executor, workers=self.workers,
            envs_per_worker=self.envs_per_worker, device=self.device, methods=methods,
            method_files=list(self.method_files), object_pattern=object_pattern,
        )  # fmt: skip


def method_condition(name: str, strength: float) -> str:
    """The condition string of a method at a strength."""
    return f"method:{name}:{strength:+.4g}"


QUICK = {"calibration_seeds": 2, "seeds": 2, "images": 32, "sae_steps": 60, "max_steps": 60, "demo_episodes": 4,
         "methods": ["dom", "ablation", "steer2edit"]}  # fmt: skip
