"""What the SARM evaluation's parts read back from its runs: the decision activations an
unmonitored episode logged, and the calibrations compared side by side."""

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
