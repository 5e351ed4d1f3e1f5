"""Stage 1 of the steering benchmark: what the methods fit on, the fitting, and the offline
measures of each edit (displacement, overhead, and the check that it does something).

- Resources (cached, reused when their markers read): `images` labelled frames rendered once
  and read at every decoder layer (studies.collect.collect_many: one store per layer), an SAE
  and decorrelated discovery at the benchmark's layer (studies.sae_resources), a few frames of
  each material kept for methods that run forwards (Steer2Edit) and for the offline measures,
  and, when a method is supervised by behaviour (LoReFT), demonstration episodes of each
  material handled as the other is (rollouts.vla_demos.other_handling_demonstrations).
- Fitting: every method on the same FitData (rows subsampled the same way for all), saved to
  methods/<name>/ (a fitted method is reused on rerun).
- Offline: each method at a strength on held frames: the mean per-token ‖Δh‖/‖h‖ at its layer
  and at the last layer, and the forward's time with and without the edit. A method whose
  activations do not move at a non-zero strength is an error, not a row of the table.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studies.steer_bench.config import COLLECT_SEED, DEMO_SEED, SteerBenchConfig

MAX_FIT_ROWS = 20_000  # image-token rows per layer the methods fit on (about 250 frames)
HELD_FRAMES = 8  # frames per material kept for forwards (Steer2Edit's fit, offline measures)


def load_backend(cfg: SteerBenchConfig) -> Any:
    """The benchmark agent's model (the VLA's or the planner's backend)."""
    if cfg.agent == "vla":
        from agents.vla_model import TINY_VLA_DIR, load_vla

        return load_vla(
            TINY_VLA_DIR if cfg.model in ("tiny", "tiny-vla") else cfg.model, cfg.device, "float32"
        )[0]
    from agents.backend import load_vlm

    return load_vlm(cfg.model, cfg.device, "float32")


def build_resources(cfg: SteerBenchConfig, console: Any) -> dict[str, Any]:
    """Stores at every layer, the SAE and discovery, the FitData and the held frames."""
    from agents.vlm_agent import default_tap_layer
    from rollouts.frames import render_labeled_frames
    from rollouts.resources import SteeringResources
    from sae import ActivationStore
    from steering.base import FitData
    from storage import marker_reads
    from studies.collect import collect_many
    from studies.sae_resources import sae_and_discovery

    backend = load_backend(cfg)
    layer = default_tap_layer(backend.n_layers) if cfg.layer is None else cfg.layer
    stores = {n: cfg.root / "store" / f"layer{n}" for n in range(backend.n_layers)}
    if not all(marker_reads(d / "dom_vector.safetensors") for d in stores.values()):
        shutil.rmtree(cfg.root / "store", ignore_errors=True)  # half-written by an interrupted run
        console.print(
            f"collecting {cfg.images} labelled frames at layers 0..{backend.n_layers - 1}"
        )
        collect_many([(backend, n, d) for n, d in stores.items()], cfg.images, seed=COLLECT_SEED,
                     workers=min(cfg.workers, 2), paired=cfg.fit_data == "paired")  # fmt: skip
    sae_dir, discovery = cfg.root / "sae", cfg.root / "discovery" / "discovery.json"
    made = sae_and_discovery(
        stores[layer], sae_dir, discovery, cfg.sae_steps, cfg.sae_expansion, cfg.sae_lr
    )
    steer = (
        SteeringResources.load(str(sae_dir / "sae"), str(discovery))
        if made["fragility"]
        else SteeringResources()
    )
    acts, meta = {}, None
    for n, d in stores.items():
        acts[n], table = ActivationStore.open(d).load_all(max_rows=MAX_FIT_ROWS, with_metadata=True)
        meta = meta or table.to_pydict()
    images, labels = render_labeled_frames(
        4 * HELD_FRAMES, COLLECT_SEED + 500_000
    )  # not in the fit set
    material = np.array([lab["material"] for lab in labels])
    held = np.concatenate(
        [np.flatnonzero(material == m)[:HELD_FRAMES] for m in ("fragile", "rigid")]
    )
    data = FitData(acts, np.asarray(meta["material"]), np.asarray(meta["color"]), np.asarray(meta["image_id"]),
                   layer=layer, frames=images[held], frame_material=material[held], sae=steer.sae,
                   fragility_features=steer.fragility_features, demos=demonstrations(cfg, backend, console),
                   pair=np.asarray(meta["episode"]) if cfg.fit_data == "paired" else None,
                   source=f"{cfg.images} {cfg.fit_data} labelled frames from env seed {COLLECT_SEED}")  # fmt: skip
    console.print(f"fit data: {len(data.material)} image-token rows × {len(acts)} layers; SAE FVE "
                  f"{made['metrics'].fve:.3f}, {len(made['fragility'])} fragility features")  # fmt: skip
    return {"backend": backend, "data": data, "layer": layer, "sae_fve": made["metrics"].fve,
            "n_fragility_features": len(made["fragility"])}  # fmt: skip


def demonstrations(cfg: SteerBenchConfig, backend: Any, console: Any) -> Any:
    """The behaviour data of the run's behaviour-supervised methods (None when none runs):
    `demo_episodes` episodes of each material handled as the other is, saved under demos/
    and reused. The VLA learns from their action chunks, the planner from their frames with
    the answer that picks the handling (steering.behaviour)."""
    from agents.vla_data import Demonstrations
    from rollouts.vla_demos import other_handling_demonstrations
    from steering.behaviour import PlannerBehaviour, VLABehaviour
    from steering.registry import method_class

    if not any("demonstrations" in method_class(n).needs for n in cfg.methods):
        return None
    folder = cfg.root / "demos"
    if not (folder / "meta.json").is_file():
        console.print(
            f"demonstrations: {cfg.demo_episodes} episodes of each material handled as the other"
        )
        demos, _ = other_handling_demonstrations(
            cfg.demo_episodes, DEMO_SEED, max_steps=cfg.max_steps
        )
        demos.save(folder, made_with={"seed": DEMO_SEED, "episodes": cfg.demo_episodes})
    demos = Demonstrations.load(folder)
    toward = np.where(demos.materials == "fragile", "rigid", "fragile")
    source = f"{cfg.demo_episodes} episodes from env seed {DEMO_SEED}, each material handled as the other"
    if cfg.agent == "vla":
        return VLABehaviour(backend, demos, toward, source)
    return PlannerBehaviour(demos.frames, toward, source)


def fit_methods(
    cfg: SteerBenchConfig, names: list[str], res: dict[str, Any], console: Any
) -> dict[str, Any]:
    """Fit (or reuse) every method; returns name → the fitted method. A method that needs data
    the run lacks fails here, naming it, before any episode."""
    from steering.base import METHOD_FILE
    from steering.registry import load_method, method_class

    fitted = {}
    data, backend = res["data"], res["backend"]

    def made(name: str) -> Any:
        cls, kwargs = method_class(name), cfg.method_kwargs(name)
        if getattr(cls, "takes_own_material", False):  # a clamp's levels: from the steered material
            kwargs.setdefault("own", cfg.material)
        return cls(**kwargs)

    for name in names:
        made(name).check_data(data)
    for name in names:
        folder = cfg.root / "methods" / name
        if (folder / METHOD_FILE).is_file():
            fitted[name] = load_method(folder)
            continue
        method = made(name).fit(data, backend)
        method.save(folder)
        console.print(f"fitted {name}: {method.fit_info.get('fit_seconds', 0):.2f} s")
        fitted[name] = method
    return fitted


@torch.no_grad()
def offline_measures(method: Any, strength: float, backend: Any, frames: np.ndarray, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """‖Δh‖/‖h‖ (mean over image tokens) at the method's layer and the last layer, and the
    forward's time ratio with / without the edit, on `frames`.

    Raises:
        ValueError: a non-zero strength that changes nothing (the method silently does nothing).
    """
    from agents.taps import ResidualTap

    last = backend.n_layers - 1
    layer = method.layer if method.layer is not None and method.layer < backend.n_layers else last
    taps = {
        "layer": ResidualTap(layer, include_last=False),
        "last": ResidualTap(last, include_last=False),
    }
    for tap in taps.values():
        tap.attach(backend)
    try:
        start = time.perf_counter()
        backend.prob_yes(frames)
        plain_s = time.perf_counter() - start
        base = {k: t.latest_batch.clone() for k, t in taps.items()}
        edit = method.intervention(strength, seed).attach(backend)
        try:
            start = time.perf_counter()
            backend.prob_yes(frames)
            steered_s = time.perf_counter() - start
            moved = {k: t.latest_batch.clone() for k, t in taps.items()}
        finally:
            edit.remove()
    finally:
        for tap in taps.values():
            tap.remove()
    out = {}
    for k in taps:
        delta = (moved[k] - base[k]).norm(dim=-1) / base[k].norm(dim=-1).clamp_min(1e-12)
        out[f"displacement_{k}"] = float(delta.mean())
    if strength != 0 and out["displacement_layer"] == 0 and out["displacement_last"] == 0:
        raise ValueError(f"steering method {method.name!r} at strength {strength:g} changes no activation "
                         f"(layers {layer} and {last}): it silently does nothing")  # fmt: skip
    out["overhead_ratio"] = steered_s / max(plain_s, 1e-9)
    return out


def write_fit_table(fitted: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Every method's description (steering.base.SteeringMethod.describe) as JSON rows."""
    from storage import write_json

    rows = [m.describe() for m in fitted.values()]
    write_json(path, rows)
    return rows
