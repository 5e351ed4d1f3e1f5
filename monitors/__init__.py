"""SARM monitor: a Gymnasium wrapper that vetoes actions on anomalous activations, anomaly
scorers with baselines, threshold calibration and injected perturbations (evaluation summaries
live in studies.sarm.summary).

Imports agents (tap protocol, interventions), sae, gymnasium, torch, numpy and scikit-learn;
never rollouts. Of physteer: storage, envs (the fallback veto's gentle expert), sae, agents.
"""

from monitors.attacks import (
    ActivationAddition,
    ImageCorruption,
    Perturbation,
    PromptInjection,
    SAEOverdrive,
)
from monitors.baselines import MahalanobisScorer, PCAReconstructionScorer
from monitors.calibration import Calibration, calibrate, calibrate_episodes, check_provenance
from monitors.combined import CombinedScorer
from monitors.probe import LinearProbeScorer
from monitors.sae_scorer import SAEReconstructionScorer
from monitors.sarm import SARMMonitor
from monitors.scorers import Scorer, load_scorer, make_scorer, register_scorer, scorer_kinds

__all__ = [
    "ActivationAddition", "Calibration", "CombinedScorer", "ImageCorruption", "LinearProbeScorer",
    "MahalanobisScorer",
    "PCAReconstructionScorer", "Perturbation", "PromptInjection", "SAEOverdrive",
    "SAEReconstructionScorer", "SARMMonitor", "Scorer", "calibrate", "calibrate_episodes", "check_provenance",
    "load_scorer", "make_scorer", "register_scorer", "scorer_kinds",
]  # fmt: skip
