"""An SAE and its decorrelated discovery on a collected store, each made once and reused when
its marker reads: what the VLA study and the steering benchmark both steer through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def sae_and_discovery(store_dir: str | Path, sae_dir: str | Path, discovery_path: str | Path, sae_steps: int,
                      sae_expansion: float, sae_lr: float | None) -> dict[str, Any]:  # fmt: skip
    """Train (or resume, or reuse) an SAE on the store and run discovery on it.

    Returns:
        {"store": the ActivationStore, "sae": the MatryoshkaSAE, "metrics": its EvalResult,
        "fragility": the discovered fragility latents (best first; may be empty)}.
    """
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
    from storage import marker_reads

    sae_dir, discovery_path = Path(sae_dir), Path(discovery_path)
    store = ActivationStore.open(store_dir)
    if not marker_reads(sae_dir / "sae" / "config.json"):
        sae_config = default_config(store.d, n_latents=max(8, round(sae_expansion * store.d)))
        lr = TrainConfig.lr if sae_lr is None else sae_lr
        batch = min(1024, len(store))  # a small store (a π0's expert decisions) in whole batches
        train_sae(store, sae_config, TrainConfig(lr=lr, steps=sae_steps, batch_size=batch, seed=0,
                                                 out_dir=str(sae_dir)),
                  resume=(sae_dir / "checkpoints").exists(), progress=False)  # fmt: skip
    sae = MatryoshkaSAE.from_pretrained(sae_dir / "sae", expected_d_in=store.d)
    metrics = evaluate(sae, store)
    if not marker_reads(discovery_path):
        result = discover_store(sae, store, threshold=0.5, n_boot=300)
        save_plot(result, discovery_path.with_name("discovery.png"))
        write_discovery(result, discovery_path)
    fragility = json.loads(discovery_path.read_text()).get("fragility") or []
    return {"store": store, "sae": sae, "metrics": metrics, "fragility": fragility}
