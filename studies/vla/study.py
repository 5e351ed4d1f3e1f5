"""`physteer vla-study`: graded steering of the VLA's (or a π0's) handling of one material, one command.

    physteer vla-study --model runs/vla --seeds 20
    physteer vla-study --model runs/vla --seeds 20 --material rigid --name vla-study-rigid

On fragile objects the steering goes toward rigid and should raise the grip; a fragile object
breaks at the threshold force (envs.fragility, 15 N), which cuts its peak grip force short. On
rigid objects (`material="rigid"`) it goes toward fragile and should lower the grip, which
nothing cuts short: the same dose response without the censoring.

A π0 (`agent="pi0"`, on its `stream`) takes the same study; its store is filled from its own
closed-loop decisions (studies.rollout_store) instead of labelled frames, and it has no neuron
conditions.

1. Resources on the VLA (cached in the study folder, reused on rerun): tap-layer image-token
   activations of labelled frames (`studies.collect`, the plain question prompt: its image
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
3. `summarize_vla_study` (studies.vla.summary): per condition means with 95% CIs (`report.compare_conditions`), the
   SAE dose response (Spearman rho, separated intermediate strengths, breakage, the random
   control's share of the SAE effect), the neuron clusters' paired carry-speed changes, each
   acceptance flag (criteria fixed in ACCEPTANCE, never tuned) beside its numbers:
   summary.json, dose_response.png, a terminal table (<= 80 columns).

Folder: <out>/<name>/{store, sae, discovery, episodes, summary.json, dose_response.png}.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from studies.vla.config import COLLECT_SEED, VLAStudyConfig, objects_label, sae_condition


def build_resources(cfg: VLAStudyConfig, console: Console) -> dict[str, Any]:
    """Stage 1: activations, SAE, discovery, dom vector on the VLA (each reused when its marker
    reads, as in `physteer demo`). Returns paths, the layer and the SAE's figures.

    Raises:
        ValueError: discovery found no fragility feature (the SAE conditions need one).
    """
    import shutil

    from agents.vla_model import TINY_VLA_DIR, load_vla
    from agents.vlm_agent import default_tap_layer
    from storage import marker_reads
    from studies.collect import collect_activations

    root = cfg.root
    if cfg.agent == "pi0":
        from agents.pi0_folder import pi0_dir
        from agents.pi0_model import load_pi0

        backend = load_pi0(pi0_dir(cfg.model), cfg.device, "float32")
        backend = backend.expert if cfg.stream == "expert" else backend
    else:
        backend, _ = load_vla(
            TINY_VLA_DIR if cfg.model in ("tiny", "tiny-vla") else cfg.model, cfg.device, "float32"
        )
    layer = default_tap_layer(backend.n_layers) if cfg.layer is None else cfg.layer
    store_dir, sae_dir, discovery_path = (
        root / "store",
        root / "sae",
        root / "discovery" / "discovery.json",
    )
    if not marker_reads(store_dir / "dom_vector.safetensors"):
        shutil.rmtree(store_dir, ignore_errors=True)  # a half-written store from an interrupted run
        if cfg.agent == "pi0":  # its decisions, not frames: the expert reads state and noise too
            from rollouts.experiment import run_experiment
            from studies.rollout_store import decision_store

            console.print(
                f"collecting the decisions of {cfg.collect_episodes} episodes at {cfg.stream} layer {layer}"
            )
            run_dir = run_experiment(cfg.collect_experiment(layer), progress=False)
            decision_store(run_dir, store_dir, layer, f"{cfg.model}:{cfg.stream}")
        else:
            console.print(f"collecting {cfg.images} labelled frames at layer {layer}")
            collect_activations(
                backend, layer, store_dir, cfg.images, seed=COLLECT_SEED, workers=cfg.workers
            )
    from studies.sae_resources import sae_and_discovery

    made = sae_and_discovery(
        store_dir, sae_dir, discovery_path, cfg.sae_steps, cfg.sae_expansion, cfg.sae_lr
    )
    store, metrics, fragility = made["store"], made["metrics"], made["fragility"]
    console.print(
        f"resources: {store}, SAE FVE {metrics.fve:.3f}, {len(fragility)} fragility features"
    )
    if not fragility:
        raise ValueError(f"discovery on {cfg.model} at layer {layer} found no fragility feature "
                         f"({discovery_path.with_name('discovery.png')}): the SAE conditions have nothing to "
                         "steer; try more --images (a π0: --collect-episodes) or --sae-steps (in a new --name) or another --layer")  # fmt: skip
    return {"store": str(store_dir), "sae": str(sae_dir / "sae"), "discovery": str(discovery_path),
            "vector": str(store_dir / "dom_vector.safetensors"), "layer": layer, "backend": backend,
            "sae_fve": metrics.fve, "sae_l0": metrics.l0, "n_fragility_features": len(fragility)}  # fmt: skip


def matched_random(
    cfg: VLAStudyConfig, res: dict[str, Any], max_rows: int = 20000
) -> dict[str, Any]:
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


def run_vla_study(
    cfg: VLAStudyConfig, console: Console | None = None, progress: bool = True
) -> Path:
    """Validate, build (or reuse) the resources, run (or resume) the episodes, summarize.

    Returns:
        The path of summary.json.
    """
    from rollouts.experiment import run_experiment
    from storage import write_json

    cfg.validate()
    console = console or Console()
    cfg.root.mkdir(parents=True, exist_ok=True)
    write_json(cfg.root / "study_config.json", asdict(cfg))
    res = build_resources(cfg, console)
    matched = matched_random(cfg, res)
    clusters = neuron_clusters(cfg, res.pop("backend"))
    exp = cfg.experiment(matched["random_condition"], res)
    console.print(
        f"{len(exp.conditions)} conditions × {cfg.seeds} seeds on {objects_label(cfg.material, cfg.unbreakable)}"
    )
    run_dir = run_experiment(exp, progress=progress)
    from rollouts.logs import RunLog

    rows = RunLog(run_dir).read_episodes().to_pylist()
    from studies.vla.summary import summarize_vla_study

    summary = summarize_vla_study(rows, cfg, matched)
    summary.update(resources=res, neuron_clusters=clusters, config=asdict(cfg))
    from studies.vla.report import plot_dose_response, print_summary

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
