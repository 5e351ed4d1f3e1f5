"""`physteer jsae-layers`: the JSAE paper's layer claim on a model whose ground truth is known.

    physteer jsae-layers --model runs/tiny-lang/vla --name jsae-layers

The paper's headline: adding a joint feature's direction moves the output most at mid-to-late
layers, while suppressing the feature has a flat effect over layers. Here the concept is the
same at every layer (the object's material, which the VLA must read to grip), so a profile is
the layer's, not the concept's.

1. At every decoder layer, a Joint SAE on the model's own pairs (studies.joint_sae.collect_pairs:
   a frame's image tokens, its description's own tokens on a blank frame) and its fragility
   latent: among the latents whose vision code is higher on `material`'s fit frames, the one
   that best separates the materials.
2. Six interventions per layer, each a fitted steering method (steering.methods.jsae), all on
   the layer's latent that marks the steered material (the one a suppression can remove):
   additive (the latent's decoder row at ‖μ_fragile − μ_rigid‖ × `add_strength`, toward the
   other material) and suppression (each token's own code of the latent subtracted, ×
   `suppress_strength`), each on image tokens (vision side), text tokens (language side:
   the instruction) and both (each side at its own tokens).
3. Closed loop on unbreakable objects of `material`, paired seeds 0..seeds-1: the change of the
   closing command (the VLA's own grip effort) and of peak grip force against unsteered, 95%
   bootstrap CIs (a seed whose fingers never closed has no command: each cell uses the seeds
   with a value in it and in unsteered, each test the seeds with one in all its runs).
4. Per token set: a within-seed permutation test of the layer × intervention interaction
   (reports.stats.layer_profile_differs) and an equivalence test of "suppression is flat"
   (reports.stats.flat_within, margin fixed in advance in the metric's units). The paper's pattern is
   replicated where the interaction is significant, suppression is flat and the additive
   effect peaks at a layer in the second half; refuted otherwise, and the summary says which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sae.joint import ALIGNMENTS

#: intervention name → (steering method, its settings); "{joint}" is the layer's Joint SAE
INTERVENTIONS = {
    "add-image": ("jsae-vision", {"positions": "image"}),
    "add-text": ("jsae-language", {"positions": "text"}),
    "add-both": ("jsae-both", {}),
    "suppress-image": ("jsae-suppress", {"side": "vision", "positions": "image"}),
    "suppress-text": ("jsae-suppress", {"side": "language", "positions": "text"}),
    "suppress-both": ("jsae-suppress", {"side": "both"}),
}
TOKENS = ("image", "text", "both")
#: settings that make what a study folder holds (how episodes are executed may change on resume)
RUN_FIELDS = ("model", "layers", "alignment", "weight", "images", "jsae_steps", "material", "add_strength",
              "suppress_strength", "seeds", "max_steps")  # fmt: skip


@dataclass
class JSAELayersConfig:
    """Settings of `physteer jsae-layers` (saved in summary.json).

    Attributes:
        name, out: the study folder is out/name.
        model: the language-grounded VLA (a folder).
        layers: decoder layers swept (empty: every layer).
        alignment, weight: each layer's Joint SAE (weight >= 0).
        images: labelled frames for the Joint SAEs and the fit (one scene each).
        jsae_steps: each Joint SAE's training steps.
        material: the objects steered, toward the other material.
        add_strength: the additive edit's strength in units of ‖μ_fragile − μ_rigid‖ (> 0).
        suppress_strength: the fraction of the latent's code removed, in (0, 1].
        seeds: paired evaluation seeds (env seeds 0..seeds-1).
        metric: the handling tested: "grip_command" (the mean closing command) or
            "peak_grip_force" (N); both are tabled.
        margin: the largest deviation from flat, in the metric's units, that still counts as
            flat (fixed before the run: 0.05 of a closing command that runs 0.14 gentle to 0.83
            firm).
        max_steps, executor, workers, envs_per_worker, device: as in `physteer run`.
    """

    name: str = "jsae-layers"
    out: str = "runs"
    model: str = ""
    layers: list[int] = field(default_factory=list)
    alignment: str = "contrastive"
    weight: float = 1.0
    images: int = 256
    jsae_steps: int = 1500
    material: str = "fragile"
    add_strength: float = 2.0
    suppress_strength: float = 1.0
    seeds: int = 20
    metric: str = "grip_command"
    margin: float = 0.05
    max_steps: int = 200
    executor: str = "processes"
    workers: int = 2
    envs_per_worker: int = 4
    device: str = "cpu"

    @property
    def root(self) -> Path:
        return Path(self.out) / self.name

    def validate(self) -> Any:
        """ValueError naming the first bad setting, before any work; returns the model's backend."""
        from agents.backend import load_vlm
        from studies.jsae_study import check_language_side

        if not self.model or not Path(self.model).is_dir():
            raise ValueError(f"model={self.model!r}: give the language-grounded VLA's folder")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment={self.alignment!r}: choose from {list(ALIGNMENTS)}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight={self.weight}: an alignment weight must be >= 0")
        if not (math.isfinite(self.add_strength) and self.add_strength > 0):
            raise ValueError(
                f"add_strength={self.add_strength}: must be > 0 (signed toward the other material)"
            )
        if not 0 < self.suppress_strength <= 1:
            raise ValueError(f"suppress_strength={self.suppress_strength}: a fraction in (0, 1]")
        from studies.cross_modal import METRICS

        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: choose one of {list(METRICS)}")
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(
                f"margin={self.margin}: an equivalence margin in the metric's units, > 0"
            )
        if self.seeds < 2 or self.images < 16 or self.jsae_steps < 1:
            raise ValueError(f"seeds={self.seeds} (>= 2), images={self.images} (>= 16), "
                             f"jsae_steps={self.jsae_steps} (>= 1)")  # fmt: skip
        self.bench().validate()  # material, executor, workers, counts
        from storage import refuse_other_settings

        refuse_other_settings(self.root / "study_config.json", asdict(self), RUN_FIELDS)
        backend = load_vlm(self.model, "cpu", "float32")
        check_language_side(backend, self.model)
        bad = [n for n in self.layers if not 0 <= n < backend.n_layers]
        if bad or len(set(self.layers)) != len(self.layers):
            raise ValueError(
                f"layers={self.layers}: distinct decoder layers in 0..{backend.n_layers - 1}"
            )
        if len(self.swept(backend)) < 2:
            raise ValueError(f"layers={self.layers}: a layer profile needs at least 2 layers")
        return backend

    def swept(self, backend: Any) -> list[int]:
        """The layers swept."""
        return sorted(self.layers) if self.layers else list(range(backend.n_layers))

    def bench(self) -> Any:
        """The steering benchmark's settings the fit and the episodes use."""
        from studies.steer_bench.config import SteerBenchConfig

        return SteerBenchConfig(name=self.name, out=self.out, agent="vla", model=self.model, methods=["dom"],
                                material=self.material, seeds=self.seeds, images=self.images, sae_steps=50,
                                max_steps=self.max_steps, executor=self.executor, workers=self.workers,
                                envs_per_worker=self.envs_per_worker, device=self.device)  # fmt: skip


def joint_at(cfg: JSAELayersConfig, backend: Any, layer: int) -> Path:
    """The layer's Joint SAE (trained once, then reused): its folder."""
    from sae.joint import JointConfig
    from sae.joint_trainer import train_joint
    from studies.joint_sae import JointSAEStudyConfig, collect_pairs

    folder = cfg.root / "jsae" / f"layer{layer}" / "joint"
    if (folder / "joint.json").is_file():
        return folder
    sub = JointSAEStudyConfig(name=f"jsae/layer{layer}", out=str(cfg.root), model=cfg.model, layer=layer,
                              images=cfg.images, steps=cfg.jsae_steps)  # fmt: skip
    sub.root.mkdir(parents=True, exist_ok=True)
    pairs = collect_pairs(sub, backend, layer)
    xv, xl = pairs["vision"], pairs["language"]
    config = JointConfig.default(xv.shape[1], xl.shape[1], sub.expansion, alignment=cfg.alignment,
                                 weight=cfg.weight)  # fmt: skip
    joint, _ = train_joint(xv, xl, pairs["groups"], config, sub.train_config())
    joint.save(folder, {"model": cfg.model, "layer": layer})
    return folder


def fitted_method(
    cfg: JSAELayersConfig, data: Any, backend: Any, layer: int, intervention: str
) -> Path:
    """The intervention's method fitted at `layer` (reused when saved): its methods folder."""
    from steering.base import METHOD_FILE
    from steering.registry import make_method

    name, settings = INTERVENTIONS[intervention]
    root = cfg.root / "methods" / f"layer{layer}-{intervention}"
    if not (root / name / METHOD_FILE).is_file():
        joint = joint_at(cfg, backend, layer)
        make_method(name, joint=str(joint), marks=cfg.material, **settings).fit(
            replace(data, layer=layer), backend
        ).save(root / name)
    return root


def effect_matrix(
    runs: dict[int, list[dict[str, Any]]], base: list[dict[str, Any]], metric: str, seeds: list[int]
) -> np.ndarray:
    """(seeds × layers) paired change of `metric` against unsteered, from each layer's episodes."""
    from reports.paired import values

    ref = values(base, "unsteered", metric)
    cols = [values(rows, rows[0]["condition"], metric) for rows in runs.values()]
    return np.array([[col[s] - ref[s] for col in cols] for s in seeds], dtype=float)


def layer_tests(
    add: np.ndarray, suppress: np.ndarray, layers: list[int], margin: float
) -> dict[str, Any]:
    """The interaction test, "flat" for suppression and additive, and the additive peak layer."""
    from reports.stats import flat_within, layer_profile_differs

    if len(add) < 2:
        return {"interaction_p": None, "suppression_flat": {"flat": None}, "additive_flat": {"flat": None},
                "additive_peak_layer": None, "additive_peak_late": None, "replicates": False,
                "note": f"{len(add)} seed(s) with a value in every run: no test"}  # fmt: skip
    p = layer_profile_differs(add, suppress)
    flat = flat_within(suppress, margin)
    peak = layers[int(np.abs(add.mean(0)).argmax())]
    late = peak >= (max(layers) + min(layers)) / 2
    return {"interaction_p": p, "suppression_flat": flat, "additive_flat": flat_within(add, margin),
            "additive_peak_layer": peak, "additive_peak_late": bool(late),
            "replicates": bool(p < 0.05 and flat["flat"] and late)}  # fmt: skip


def complete_seeds(
    base: list[dict[str, Any]],
    episodes: dict[str, dict[int, list[dict[str, Any]]]],
    metric: str,
    kinds: list[str],
) -> list[int]:
    """Seeds with a value of `metric` in the unsteered run and in every layer's run of each of
    `kinds` (a closing command needs fingers that closed, so a seed can lack one)."""
    from reports.paired import values

    have = [set(values(base, "unsteered", metric))]
    have += [
        set(values(rows, rows[0]["condition"], metric))
        for k in kinds
        for rows in episodes[k].values()
    ]
    return sorted(set.intersection(*have))


def run_jsae_layers(cfg: JSAELayersConfig, console: Any = None) -> dict[str, Any]:
    """Joint SAEs, methods and episodes at every layer; the tests; summary.json (last)."""
    from rich.console import Console

    from rollouts.experiment import run_experiment
    from rollouts.logs import RunLog
    from storage import write_json
    from studies.steer_bench.config import method_condition
    from studies.steer_bench.fit import build_resources

    backend = cfg.validate()
    console = console or Console()
    layers = cfg.swept(backend)
    cfg.root.mkdir(parents=True, exist_ok=True)
    write_json(cfg.root / "study_config.json", asdict(cfg))
    bench = cfg.bench()
    data = build_resources(bench, console)["data"]
    sign = -1.0 if cfg.material == "fragile" else 1.0  # + is toward fragile in the methods' units

    def run(name: str, conditions: list[str], methods: Path | None) -> list[dict[str, Any]]:
        exp = bench.experiment(name, list(range(cfg.seeds)), conditions, cfg.material, True,
                               None if methods is None else str(methods))  # fmt: skip
        return RunLog(run_experiment(exp)).read_episodes().to_pylist()

    base = run("unsteered", ["unsteered"], None)
    episodes: dict[str, dict[int, list[dict[str, Any]]]] = {k: {} for k in INTERVENTIONS}
    latents = {}
    for layer in layers:
        for intervention, (name, _) in INTERVENTIONS.items():
            methods = fitted_method(cfg, data, backend, layer, intervention)
            strength = cfg.suppress_strength if name == "jsae-suppress" else sign * cfg.add_strength
            console.print(f"layer {layer}, {intervention}: {cfg.seeds} episodes")
            rows = run(f"layer{layer}-{intervention}", [method_condition(name, strength)], methods)
            episodes[intervention][layer] = rows
        from steering.registry import load_method

        latents[layer] = load_method(
            cfg.root / "methods" / f"layer{layer}-add-image" / "jsae-vision"
        ).fit_info
    from reports.paired import estimate, paired, values
    from studies.cross_modal import METRICS

    def cell(metric: str, rows: list[dict[str, Any]]) -> dict[str, float]:
        return estimate(paired(base + rows, rows[0]["condition"], metric))

    effects_doc = {m: {k: {str(n): cell(m, episodes[k][n]) for n in layers} for k in INTERVENTIONS}
                   for m in METRICS}  # fmt: skip
    tests, seeds = {}, {}
    for t in TOKENS:
        kinds = [f"add-{t}", f"suppress-{t}"]
        seeds[t] = complete_seeds(base, episodes, cfg.metric, kinds)
        add, suppress = (effect_matrix(episodes[k], base, cfg.metric, seeds[t]) for k in kinds)
        tests[t] = {**layer_tests(add, suppress, layers, cfg.margin), "seeds": len(seeds[t])}
    unsteered = {
        m: estimate(np.array(list(values(base, "unsteered", m).values()))) for m in METRICS
    }
    doc = {"config": asdict(cfg), "layers": layers, "metric": cfg.metric,
           "unsteered": unsteered,
           "latents": {str(n): {"latent": i["latent"], "latent_auroc": i["latent_auroc"]} for n, i in latents.items()},
           "effects": effects_doc, "tests": tests,
           "replicates": {t: tests[t]["replicates"] for t in TOKENS}}  # fmt: skip
    write_json(cfg.root / "summary.json", doc)
    for t in TOKENS:
        r = tests[t]
        if r["interaction_p"] is None:
            console.print(f"{t} tokens: {r['note']}")
            continue
        console.print(f"{t} tokens: interaction p = {r['interaction_p']:.3f}; suppression flat: "
                      f"{r['suppression_flat']['flat']} (max deviation {r['suppression_flat']['max_deviation']:.3g}, "
                      f"bound {r['suppression_flat']['upper']:.3g} < {cfg.margin:g}?); additive peak at layer "
                      f"{r['additive_peak_layer']}: the paper's pattern {'replicates' if r['replicates'] else 'does not replicate'}")  # fmt: skip
    return doc
