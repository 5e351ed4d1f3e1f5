"""The demo's controls: how far each steering moves the image tokens (in units of ||dom||), and
discovery on a random-weight copy of the model, which must find no fragility feature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sae.trainer import TrainConfig
from storage import marker_reads, write_json


def steering_norms(
    exp: Any, store_dir: Path, material: str, max_rows: int = 20000
) -> dict[str, float]:
    """Mean per-token ||Δh|| of each residual condition on stored image tokens of `material`,
    in units of ||dom||: shows which random control matches which steering in size."""
    import numpy as np

    from rollouts.conditions import (
        RESIDUAL_KINDS,
        SteeringResources,
        parse_condition,
        steering_norm,
    )
    from sae import ActivationStore

    acts, meta = ActivationStore.open(store_dir).load_all(max_rows=max_rows, with_metadata=True)
    acts = acts[np.asarray(meta.column("material").to_pylist()) == material]
    res = SteeringResources.load(exp.sae, exp.discovery, exp.vector, exp.methods, exp.method_files)
    unit = float(res.dom_vector.norm())
    out = {}
    for name in exp.conditions:
        c = parse_condition(name)
        if c.kind in RESIDUAL_KINDS:
            out[name] = steering_norm(c, res, acts) / unit
    return out


def discovery_control(
    cfg: Any, folder: Path, backend: Any, layer: int, sae_config: Any
) -> dict[str, Any]:
    """Stages 1-3 again on a random-weight copy of the model (same images, SAE config, steps and
    threshold). A discovery that also finds fragility features here would be reading pixel
    statistics that any network passes through, not what the trained model learned."""
    from sae import discover_store, evaluate, train_sae
    from studies.collect import collect_activations, random_weights_backend

    path = folder / "control.json"
    if not marker_reads(path):
        import shutil

        from sae import ActivationStore

        if marker_reads(
            folder / "store" / "dom_vector.safetensors"
        ):  # collected with stage 1's frames
            store = ActivationStore.open(folder / "store")
        else:
            shutil.rmtree(
                folder / "store", ignore_errors=True
            )  # a half-written store from an interrupted run
            store = collect_activations(random_weights_backend(backend, seed=0), layer, folder / "store", cfg.images,
                                        seed=1_000_000)  # fmt: skip
        sae = train_sae(
            store,
            sae_config,
            TrainConfig(lr=cfg.sae_lr, steps=cfg.sae_steps, batch_size=1024, seed=0),
            progress=False,
        ).sae
        result = discover_store(sae, store, threshold=0.5, n_boot=300)
        top = result.features[0] if result.features else None
        write_json(
            path,
            {
                "model": store.load_metadata().column("model")[0].as_py(),
                "fve": evaluate(sae, store).fve,
                "fragility": result.fragility,
                "threshold": result.threshold,
                "strongest_feature": top.feature if top else None,
                "strongest_material_score": top.material_score if top else 0.0,
                "strongest_material_d": top.material_d if top else {},
            },
        )
    return json.loads(path.read_text())
