"""`physteer vla-study`: graded steering of the VLA's handling of one material, one command.

    physteer vla-study --model runs/vla --seeds 20
    physteer vla-study --model runs/vla --seeds 20 --material rigid --name vla-study-rigid

On fragile objects the steering goes toward rigid and should raise the grip; a fragile object
breaks at the threshold force (envs.fragility, 15 N), which cuts its peak grip force short. On
rigid objects (`material="rigid"`) it goes toward fragile and should lower the grip, which
nothing cuts short: the same dose response without the censoring.

1. Resources on the VLA (cached in the study folder, reused on rerun): tap-layer image-token
   activations of labelled frames (`rollouts.collect`, the plain question prompt: its image
   tokens' residual stream equals the VLA decision prompt's, which shares the prefix up to the
   image block; tests/rollouts/test_vla_study.py checks it), an SAE, decorrelated discovery
   and the difference-of-means vector, made with the functions `physteer demo` uses.
2. One paired experiment (`rollouts.runner`, agent "vla", objects of `material`, the same seeds
   in every condition): unsteered; the discovered fragility features set toward the other
   material at every `sae_levels` X (strength s = |X − own level|, the own level 1 for fragile
   and 0 for rigid; unsteered is s = 0); a random direction whose per-token norm matches the
   SAE edit's at the strongest s (measured with `conditions.steering_norm` on the collected
   image tokens of the material); dom toward the other material; the FFN neuron cluster of each
   handling word clamped to `neuron_value`, each beside a random cluster of its layer and size.
3. `summarize_vla_study` (rollouts.vla_study_summary): per condition means with 95% CIs (`report.compare_conditions`), the
   SAE dose response (Spearman rho, separated intermediate strengths, breakage, the random
   control's share of the SAE effect), the neuron clusters' paired carry-speed changes, each
   acceptance flag (criteria fixed in ACCEPTANCE, never tuned) beside its numbers:
   summary.json, dose_response.png, a terminal table (<= 80 columns).

Folder: <out>/<name>/{store, sae, discovery, episodes, summary.json, dose_response.png}.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from agents.action_tokens import DEFAULT_DECODING

#: Episode outcomes the study reports per condition.
#: grip_command: the VLA's own mean closing grip (fraction of full force) over the steps it
#: closed, beside the peak force the acceptance reads (a break ends the episode, so it cuts both
#: short; `unbreakable` measures them whole).
METRICS = ("peak_grip_force", "grip_command", "carry_speed", "release_height", "broken", "success")
#: Acceptance criteria of issue 12, fixed before any run: steering toward rigid raises mean peak
#: grip force on fragile objects monotonically (on rigid objects, steering toward fragile lowers
#: it: the sign of rho flips; no breakage criterion) (Spearman rho of the means vs strength at least this, over at least
#: `min_magnitudes` magnitudes, unsteered included), at least this
#: many intermediate strengths separated from both extremes, breakage rises from at most
#: `broken_unsteered_max` to at least `broken_strongest_min`, the norm-matched random
#: direction's grip change below this fraction of the SAE's, and the paired tests' level.
ACCEPTANCE = {"spearman_rho_min": 0.9, "min_magnitudes": 5, "min_separated_intermediates": 2, "broken_unsteered_max": 0.10,
              "broken_strongest_min": 0.50, "random_fraction_max": 0.2, "alpha": 0.05}  # fmt: skip
#: The fragility level of each material's own image tokens (conditions: sae:fragility:X sets the
#: features to rigid level + X × (fragile − rigid)).
OWN_LEVEL = {"fragile": 1.0, "rigid": 0.0}
#: Default SAE levels per material: between the material's own level and the other's.
# Fragile: on the first tiny VLA (n = 2 diagnostic) every edit of at least a token's own norm
# (X <= 0, dom:-1) stopped the arm gripping at all.
DEFAULT_SAE_LEVELS = {"fragile": [0.8, 0.6, 0.4, 0.2, 0.0], "rigid": [0.2, 0.4, 0.6, 0.8, 1.0]}
#: Expected sign of a handling word's carry-speed change (words without one: no direction flag).
EXPECTED_CARRY_SIGN = {"quickly": 1, "fast": 1, "slowly": -1, "slow": -1}
COLLECT_SEED = 1_000_000  # first env seed of the labelled frames (episodes use seeds 0..n-1)
#: Fields whose values made the cached resources; a rerun must keep them.
RESOURCE_FIELDS = ("model", "layer", "images", "sae_steps", "sae_expansion", "sae_lr")
#: Fields that change what every episode is (with their values in studies saved before they
#: existed); a rerun in the same folder must keep them too.
EPISODE_FIELDS = {"material": "fragile", "unbreakable": False}


@dataclass
class VLAStudyConfig:
    """The graded-steering study of a VLA (saved as study_config.json).

    Attributes:
        name: study folder name under `out`.
        out: parent folder of study folders.
        model: VLA checkpoint folder ("tiny": the embedded agents/tiny_vla).
        layer: decoder layer of the tap, the SAE and every residual edit (None: the agent's
            default, 2/3 depth).
        material: the objects of every episode, "fragile" (steered toward rigid) or "rigid"
            (steered toward fragile).
        unbreakable: fragile objects never break (runner ExperimentConfig): their peak grip
            force is the whole grip, not cut short at the breaking threshold; no breakage flag.
        seeds: paired episodes per condition (env seeds 0..seeds-1, objects of `material`).
        max_steps: steps before an episode is truncated.
        chunk: actions the VLA executes per forward (None: its checkpoint's horizon).
        decoding: how the VLA decodes its action tokens ("expectation", the default, "gated",
            "argmax";
            see `physteer run --help`).
        images: labelled frames collected for the SAE, discovery and the dom vector.
        sae_steps: SAE training steps.
        sae_expansion: SAE latents per residual dimension.
        sae_lr: SAE learning rate (None: sae.TrainConfig's default).
        sae_levels: SAE fragility levels X (1 = fragile level, 0 = rigid level), at least 2,
            each on the other material's side of the own level: X < 1 on fragile objects (< 0
            beyond rigid), X > 0 on rigid ones (> 1 beyond fragile); strength s = |X − own
            level|. None: DEFAULT_SAE_LEVELS of the material.
        dom_scales: difference-of-means magnitudes toward the other material (run as dom:−m
            on fragile objects, dom:+m on rigid ones), each > 0.
        neuron_words: handling words whose FFN neuron cluster is clamped
            (agents.vla_model.HANDLING_WORDS); empty: no neuron conditions.
        neuron_value: the activation the neuron clusters (and the random cluster) are clamped to.
        videos: record MP4s for the first this-many seeds of each condition.
        executor: "serial", "processes" or "ray" (see `physteer run`).
        workers: processes or Ray actors, each holding its own model.
        envs_per_worker: environments a worker steps together (one batched forward).
        device: torch device of the model ("cpu", "cuda", "auto").
    """

    name: str = "vla-study"
    out: str = "runs"
    model: str = "tiny"
    layer: int | None = None
    material: str = "fragile"
    unbreakable: bool = False
    seeds: int = 20
    max_steps: int = 200
    chunk: int | None = None
    decoding: str = DEFAULT_DECODING
    images: int = 512
    sae_steps: int = 1500
    sae_expansion: float = 4.0
    sae_lr: float | None = None
    sae_levels: list[float] | None = None
    dom_scales: list[float] = field(default_factory=lambda: [0.25, 0.5])
    neuron_words: list[str] = field(default_factory=lambda: ["quickly", "slowly", "gently", "firmly"])
    neuron_value: float = 5.0
    videos: int = 0
    executor: str = "processes"
    workers: int = 1
    envs_per_worker: int = 4
    device: str = "cpu"

    @property
    def root(self) -> Path:
        """The study folder."""
        return Path(self.out) / self.name

    @property
    def levels(self) -> list[float]:
        """The SAE levels X of the study, weakest first (`sae_levels` or the material's default)."""
        levels = DEFAULT_SAE_LEVELS[self.material] if self.sae_levels is None else self.sae_levels
        return sorted(levels, key=self.strength)

    def strength(self, level: float) -> float:
        """Strength of SAE level X: its distance from the material's own level."""
        return abs(level - OWN_LEVEL[self.material])

    @property
    def direction(self) -> int:
        """The expected sign of the peak-grip change: +1 steering fragile objects toward rigid,
        −1 steering rigid objects toward fragile."""
        return 1 if self.material == "fragile" else -1

    def validate(self) -> None:
        """ValueError naming the first bad setting, before any work (also the experiment's own
        checks, and that cached resources were made with the same settings)."""
        from agents.vla_model import HANDLING_WORDS

        for name, low in (("seeds", 2), ("max_steps", 1), ("images", 16), ("sae_steps", 1), ("videos", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an int >= {low}")
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r}: a folder name without '/'")
        if not self.sae_expansion > 0 or (self.sae_lr is not None and not 0 < self.sae_lr < 1):
            raise ValueError(f"sae_expansion={self.sae_expansion} must be > 0 and sae_lr={self.sae_lr} in (0, 1)")
        if self.material not in OWN_LEVEL:
            raise ValueError(f"material={self.material!r}: allowed {list(OWN_LEVEL)}")
        levels, own = list(self.levels), OWN_LEVEL[self.material]
        toward = all(self.direction * (own - x) > 0 for x in levels)  # on the other material's side
        if len(levels) < 2 or len(set(levels)) != len(levels) or not all(math.isfinite(x) for x in levels) or not toward:
            side = ("X < 1 (toward rigid: 0 = rigid level, < 0 beyond it)" if self.material == "fragile"
                    else "X > 0 (toward fragile: 1 = fragile level, > 1 beyond it)")  # fmt: skip
            raise ValueError(f"sae_levels={self.sae_levels}: on {self.material} objects give at least 2 distinct "
                             f"finite levels {side}")  # fmt: skip
        scales = list(self.dom_scales)
        if not scales or len(set(scales)) != len(scales) or not all(math.isfinite(m) and m > 0 for m in scales):
            raise ValueError(f"dom_scales={scales}: give at least 1 distinct finite magnitude > 0")
        unknown = [w for w in self.neuron_words if w not in HANDLING_WORDS]
        if unknown or len(set(self.neuron_words)) != len(self.neuron_words):
            raise ValueError(f"neuron_words={list(self.neuron_words)}: unknown or repeated {unknown or 'words'}; "
                             f"allowed (distinct): {list(HANDLING_WORDS)}")  # fmt: skip
        if not math.isfinite(self.neuron_value):
            raise ValueError(f"neuron_value={self.neuron_value!r}: must be finite")
        self.experiment("random:1", {}).validate()  # agent, checkpoint, executor, device, ...
        saved = self.root / "study_config.json"
        if saved.is_file():
            old = json.loads(saved.read_text())
            changed = [k for k in (*RESOURCE_FIELDS, *EPISODE_FIELDS)
                       if old.get(k, EPISODE_FIELDS.get(k)) != getattr(self, k)]  # fmt: skip
            if changed:
                raise ValueError(f"{self.root} holds a study made with other {changed} "
                                 f"({ {k: old.get(k) for k in changed} }); use another --name")  # fmt: skip

    def conditions(self, random_condition: str) -> list[str]:
        """The experiment's conditions, in the order the tables list them."""
        out = ["unsteered", *(sae_condition(x) for x in self.levels), random_condition]
        out += [f"dom:{-self.direction * m:+g}" for m in self.dom_scales]
        if self.neuron_words:
            out += [f"neuron:{w}:{self.neuron_value:g}" for w in self.neuron_words]
            out += [f"neuron-random:{w}:{self.neuron_value:g}" for w in self.neuron_words]
        return out

    def experiment(self, random_condition: str, resources: dict[str, Any]) -> Any:
        """The runner's ExperimentConfig of the study's episodes (`resources`: build_resources's
        paths and layer)."""
        from rollouts.runner import ExperimentConfig

        return ExperimentConfig(
            name="episodes", out=str(self.root), conditions=self.conditions(random_condition),
            seeds=list(range(self.seeds)), material=self.material, unbreakable=self.unbreakable, agent="vla", model=self.model,
            layer=resources.get("layer", self.layer),
            chunk=self.chunk, decoding=self.decoding, max_steps=self.max_steps, holding=False, videos=self.videos, executor=self.executor,
            workers=self.workers, envs_per_worker=self.envs_per_worker, device=self.device,
            sae=resources.get("sae"), discovery=resources.get("discovery"), vector=resources.get("vector"),
        )  # fmt: skip


def objects_label(material: str, unbreakable: bool) -> str:
    """What a study's episodes ran on, in words ("fragile objects", "unbreakable fragile objects")."""
    return f"{'unbreakable ' if unbreakable else ''}{material} objects"


def sae_condition(level: float) -> str:
    """The condition string of SAE fragility level X."""
    return f"sae:fragility:{level:+g}"


def build_resources(cfg: VLAStudyConfig, console: Console) -> dict[str, Any]:
    """Stage 1: activations, SAE, discovery, dom vector on the VLA (each reused when its marker
    reads, as in `physteer demo`). Returns paths, the layer and the SAE's figures.

    Raises:
        ValueError: discovery found no fragility feature (the SAE conditions need one).
    """
    import shutil

    from agents.vla_model import TINY_VLA_DIR, load_vla
    from agents.vlm_agent import default_tap_layer
    from rollouts.collect import collect_activations
    from rollouts.demo import marker_reads
    from sae import (
        ActivationStore,
        TrainConfig,
        default_config,
        discover_store,
        evaluate,
        train_sae,
    )
    from sae.discovery_report import save_plot
    from sae.discovery_report import write_json as write_discovery
    from sae.matryoshka import MatryoshkaSAE

    root = cfg.root
    backend, _ = load_vla(TINY_VLA_DIR if cfg.model in ("tiny", "tiny-vla") else cfg.model, cfg.device, "float32")
    layer = default_tap_layer(backend.n_layers) if cfg.layer is None else cfg.layer
    store_dir, sae_dir, discovery_path = root / "store", root / "sae", root / "discovery" / "discovery.json"
    if not marker_reads(store_dir / "dom_vector.safetensors"):
        shutil.rmtree(store_dir, ignore_errors=True)  # a half-written store from an interrupted run
        console.print(f"collecting {cfg.images} labelled frames at layer {layer}")
        collect_activations(backend, layer, store_dir, cfg.images, seed=COLLECT_SEED)
    store = ActivationStore.open(store_dir)
    if not marker_reads(sae_dir / "sae" / "config.json"):
        sae_config = default_config(store.d, n_latents=max(8, round(cfg.sae_expansion * store.d)))
        lr = TrainConfig.lr if cfg.sae_lr is None else cfg.sae_lr
        train_sae(store, sae_config, TrainConfig(lr=lr, steps=cfg.sae_steps, batch_size=1024, seed=0,
                                                 out_dir=str(sae_dir)),
                  resume=(sae_dir / "checkpoints").exists(), progress=False)  # fmt: skip
    sae = MatryoshkaSAE.from_pretrained(sae_dir / "sae", expected_d_in=store.d)
    metrics = evaluate(sae, store)
    if not marker_reads(discovery_path):
        result = discover_store(sae, store, threshold=0.5, n_boot=300)
        save_plot(result, discovery_path.with_name("discovery.png"))
        write_discovery(result, discovery_path)
    fragility = json.loads(discovery_path.read_text()).get("fragility") or []
    console.print(f"resources: {store}, SAE FVE {metrics.fve:.3f}, {len(fragility)} fragility features")
    if not fragility:
        raise ValueError(f"discovery on {cfg.model} at layer {layer} found no fragility feature "
                         f"({discovery_path.with_name('discovery.png')}): the SAE conditions have nothing to "
                         "steer; try more --images or --sae-steps (in a new --name) or another --layer")  # fmt: skip
    return {"store": str(store_dir), "sae": str(sae_dir / "sae"), "discovery": str(discovery_path),
            "vector": str(store_dir / "dom_vector.safetensors"), "layer": layer, "backend": backend,
            "sae_fve": metrics.fve, "sae_l0": metrics.l0, "n_fragility_features": len(fragility)}  # fmt: skip


def matched_random(cfg: VLAStudyConfig, res: dict[str, Any], max_rows: int = 20000) -> dict[str, Any]:
    """The random direction matched in per-token norm to the SAE edit at the strongest strength,
    measured (as the hooks edit) on the collected image tokens of the study's material; every residual
    condition's norm beside it, and the tokens' own mean norm (for scale)."""
    import numpy as np

    from rollouts.conditions import (
        RESIDUAL_KINDS,
        SteeringResources,
        parse_condition,
        steering_norm,
    )
    from sae import ActivationStore

    acts, meta = ActivationStore.open(res["store"]).load_all(max_rows=max_rows, with_metadata=True)
    acts = acts[np.asarray(meta.column("material").to_pylist()) == cfg.material]
    steer = SteeringResources.load(res["sae"], res["discovery"], res["vector"])
    strongest = sae_condition(cfg.levels[-1])
    sae_norm = steering_norm(parse_condition(strongest), steer, acts)
    dom_norm = float(steer.dom_vector.norm())
    random_condition = f"random:{sae_norm / dom_norm:.4g}"
    norms = {c: steering_norm(parse_condition(c), steer, acts) for c in cfg.conditions(random_condition)
             if parse_condition(c).kind in RESIDUAL_KINDS}  # fmt: skip
    return {"sae_condition": strongest, "sae_norm": sae_norm, "random_condition": random_condition,
            "random_scale": parse_condition(random_condition).magnitude, "random_norm": norms[random_condition],
            "dom_norm": dom_norm, "token_norm": float(acts.float().norm(dim=1).mean()), "n_tokens": int(len(acts)),
            "norms": norms}  # fmt: skip


def neuron_clusters(cfg: VLAStudyConfig, backend: Any) -> dict[str, Any]:
    """The cluster each neuron condition clamps (as `conditions.build_intervention` selects it)."""
    from agents.neurons import select_cluster

    out = {}
    for word in cfg.neuron_words:  # each random control draws per seed from its word's layer
        c = select_cluster(backend, word)
        out[word] = {"layer": c.layer, "neuron_ids": c.neuron_ids, "score": c.score,
                    "top_tokens": {str(i): t[:5] for i, t in c.top_tokens.items()}}  # fmt: skip
    return out


def run_vla_study(cfg: VLAStudyConfig, console: Console | None = None, progress: bool = True) -> Path:
    """Validate, build (or reuse) the resources, run (or resume) the episodes, summarize.

    Returns:
        The path of summary.json.
    """
    from rollouts.runner import run_experiment
    from storage import write_json

    cfg.validate()
    console = console or Console()
    cfg.root.mkdir(parents=True, exist_ok=True)
    write_json(cfg.root / "study_config.json", asdict(cfg))
    res = build_resources(cfg, console)
    matched = matched_random(cfg, res)
    clusters = neuron_clusters(cfg, res.pop("backend"))
    exp = cfg.experiment(matched["random_condition"], res)
    console.print(f"{len(exp.conditions)} conditions × {cfg.seeds} seeds on {objects_label(cfg.material, cfg.unbreakable)}")
    run_dir = run_experiment(exp, progress=progress, report=False)
    from rollouts.logs import RunLog

    rows = RunLog(run_dir).read_episodes().to_pylist()
    from rollouts.vla_study_summary import summarize_vla_study

    summary = summarize_vla_study(rows, cfg, matched)
    summary.update(resources=res, neuron_clusters=clusters, config=asdict(cfg))
    from rollouts.vla_study_report import plot_dose_response, print_summary

    plot_dose_response(summary, cfg.root / "dose_response.png")
    path = write_json(cfg.root / "summary.json", _finite(summary))
    print_summary(summary, console)
    console.print(f"summary: {path}")
    return path


def _finite(obj: Any) -> Any:
    """`obj` with NaN / inf floats as None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
