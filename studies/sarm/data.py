"""What the SARM evaluation's parts read back from its runs: the decision activations and the
agent's signals an unmonitored episode logged, and the calibrations compared side by side."""

from __future__ import annotations

from pathlib import Path

import torch

#: Calibrations computed beside the chosen one on the same clean episodes (scorers/fit.json),
#: whose realised clean false-alarm rates the summary reports side by side.
COMPARED_CALIBRATIONS = ("sigma", "conformal-decision", "conformal-episode")


def decision_activations(
    run_dir: Path, condition: str, seed: int, tokens: str
) -> list[torch.Tensor]:
    """The decision activations (one n_tokens × d tensor per decision) a run logged for an
    unmonitored episode: image tokens, or every row with tokens="all"."""
    from safetensors.torch import load_file

    from rollouts.logs import RunLog

    acts = load_file(
        str(RunLog(run_dir).episode_path(condition, seed, "activations", "safetensors"))
    )
    n_img = int(acts["n_image_tokens"])
    return [a if tokens == "all" else a[:n_img] for a in acts["decision"]]


def decision_signals(
    run_dir: Path, condition: str, seeds: list[int]
) -> list[list[dict[str, float]]]:
    """Per seed, the agent's signals (rollouts.episode.SIGNAL_COLUMNS) at each decision of an
    unmonitored episode of `condition`, in step order: what a signal scorer is given."""
    import pyarrow.parquet as pq

    from rollouts.episode import SIGNAL_COLUMNS

    rows = pq.read_table(run_dir / "steps.parquet").to_pylist()
    by_seed: dict[int, list[dict[str, float]]] = {s: [] for s in seeds}
    for r in sorted(rows, key=lambda r: r["step"]):
        if (
            r["decided"]
            and r["condition"] == condition
            and r["monitor"] == "none"
            and r["seed"] in by_seed
        ):
            by_seed[r["seed"]].append({k: r[k] for k in SIGNAL_COLUMNS if k in r})
    return [by_seed[s] for s in seeds]
