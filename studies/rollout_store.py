"""An agent's own closed-loop decisions as an ActivationStore, for agents whose tapped
activations depend on more than the frame.

`studies.collect` fills a store from labelled frames through one forward each, which is what a
VLM prefix sees. A π0's action expert reads the env state and the denoising noise as well as
the frame, so its activations exist only inside a decision: here the agent runs unsteered
episodes (balanced color × material seeds, through the one runner: resume, workers, replay) and
every logged decision's image-token rows (the stream's "image" positions: the prefix's image
tokens, or the expert's action tokens) become rows of a store with the episode's labels, with
the difference-of-means vector beside it, as `studies.collect` writes them.

    run_dir = run_experiment(ExperimentConfig(name="collect", agent="pi0", model=..., stream="expert", ...))
    store = decision_store(run_dir, "runs/study/store", layer=2, model="pi0")
"""

from __future__ import annotations

from pathlib import Path

import torch

from sae.store import ActivationStore


def decision_store(run_dir: str | Path, store_dir: str | Path, layer: int, model: str,
                   condition: str = "unsteered") -> ActivationStore:  # fmt: skip
    """Write every unmonitored `condition` episode's decisions of the run into a new store.

    Each decision is one "image" (image_id in order); its rows carry the episode's color,
    material, shade, shape and seed and the decision's step.

    Raises:
        ValueError: the run logged no decision, or only one material (no dom vector).
    """
    from safetensors.torch import load_file

    from rollouts.logs import RunLog
    from studies.collect import StoreWriter

    log = RunLog(Path(run_dir))
    rows = [
        e
        for e in log.read_episodes().to_pylist()
        if e["condition"] == condition and e["monitor"] == "none"
    ]
    writer: StoreWriter | None = None
    done = 0
    for e in sorted(rows, key=lambda e: e["seed"]):
        logged = load_file(
            str(log.episode_path(condition, e["seed"], "activations", "safetensors"))
        )
        if not len(logged["decision_steps"]):
            continue
        block = logged["decision"][:, : int(logged["n_image_tokens"])]  # decisions × image rows × d
        steps = [int(s) for s in logged["decision_steps"]]
        writer = writer or StoreWriter(store_dir, block.shape[-1], layer, model)
        labels = [{"color": e["color"], "material": e["material"], "shade": e["shade"], "shape": e["shape"],
                   "seed": e["seed"], "step": s} for s in steps]  # fmt: skip
        positions = torch.arange(block.shape[1]).expand(len(block), -1)
        writer.add(iter([(0, block, positions)]), labels, done)
        done += len(block)
    if writer is None:
        raise ValueError(f"{run_dir}: no {condition!r} episode logged a decision")
    if min(writer.counts.values()) == 0:
        raise ValueError(f"{run_dir}: decisions of one material only ({writer.counts}); run both")
    return writer.finish(done)
