"""Settings of `physteer monitor-bench` (studies.monitor_bench.run): which scorers, which shifts
are seen in training and which are held out, the seed split, alpha and what is enforced.

    cfg = MonitorBenchConfig(seen=("mass", "size"), held_out=("camera", "distractors"))
    cfg.check()          # ValueError naming the first bad setting, before any episode
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envs.shifts import SHIFT_KINDS
from monitors.signals import AGENT_SIGNAL_SCORERS

#: Scorer names → (kind, constructor keywords) for monitors.scorers.make_scorer.
BENCH_SCORERS: dict[str, tuple[str, dict[str, Any]]] = {
    "failure-mlp": ("failure", {"arch": "mlp"}),
    "failure-lstm": ("failure", {"arch": "lstm"}),
    "action-entropy": ("signal", {"signal": "action_entropy"}),
    "chunk-change": ("signal", {"signal": "chunk_change"}),
    "sample-variance": ("signal", {"signal": "sample_variance"}),
    # the same signals with their direction learned from the fit episodes' failures
    "action-entropy-oriented": ("signal", {"signal": "action_entropy", "oriented": True}),
    "chunk-change-oriented": ("signal", {"signal": "chunk_change", "oriented": True}),
    "sample-variance-oriented": ("signal", {"signal": "sample_variance", "oriented": True}),
    "mahalanobis": ("mahalanobis", {}),
    "pca": ("pca", {}),
    "sae": ("sae", {}),
    "probe": ("probe", {}),
}


def signal_of(name: str) -> str:
    """The signal scorer a bench scorer name reads ("action-entropy-oriented" → "action-entropy")."""
    return name.removesuffix("-oriented")


#: Learned on failure labels (need failed episodes in the fit data).
LEARNED = (
    "failure-mlp",
    "failure-lstm",
    "probe",
    *(n for n in BENCH_SCORERS if n.endswith("-oriented")),
)
#: Where the seed blocks start (before `seed_offset`): fit then calibration, and evaluation;
#: the offset stays below the gap between them, so a replication's blocks never meet.
FIT_SEED_START, EVAL_SEED_START, MAX_SEED_OFFSET = 8_000_000, 8_500_000, 400_000
#: The learned failure predictors proper ("best" is chosen among them; the probe is a baseline).
PREDICTORS = ("failure-mlp", "failure-lstm")
#: Fitted on successful episodes only (what is unusual, not what fails).
ANOMALY = ("mahalanobis", "pca", "sae")


@dataclass
class MonitorBenchConfig:
    """Settings of one monitor benchmark.

    Attributes:
        agent: "vla" (its decisions are its forwards; action-token entropy and chunk change),
            "pi0" (a π0 folder as `model`; chunk change and sample variance) or "vlm" (the
            planner; signal scorers are then unavailable).
        model: "tiny" or a checkpoint of that agent.
        variance_draws: with the "sample-variance" scorer, the π0's extra noise draws per
            decision (its spread across them is the signal; they cost as many extra chunks).
        layer: tap layer (None: the agent's default).
        scorers: names among BENCH_SCORERS, side by side on the same data (None: every
            scorer the agent's decisions can feed, AGENT_SIGNAL_SCORERS, the "-oriented" ones
            only when named).
        seen: shift kinds in the fit and calibration data (beside the unshifted scene).
        held_out: shift kinds only in the evaluation: the held-out variations.
        strengths: the strengths every kind runs at.
        fit_seeds: paired seeds per seen condition whose episodes fit the scorers (the learned
            ones on their success/failure labels, the anomaly ones on their successes).
        calibration_seeds: paired seeds per seen condition whose successful episodes calibrate
            every threshold (conformal per episode at alpha; disjoint from fit and eval).
        eval_seeds: paired seeds per condition (unshifted, seen and held out) for the figures.
        seed_offset: added to every seed (fit, calibration, evaluation): a replication of the
            bench on fresh seeds (0: fit and calibration from 8,000,000, evaluation from
            8,500,000).
        alpha: the promised false-alarm rate on successful episodes.
        enforce: scorers run again with their vetoes enforced (on_veto) on the held-out
            evaluation episodes; "best" is the learned predictor with the highest seen-eval
            AUROC. None: "best" beside the agent's first signal scorer (the VLA's action-token
            entropy, the π0's chunk change); () skips the enforced runs.
        on_veto: what a veto does ("fallback": the gentle scripted expert takes over).
        max_steps: steps before truncation (a timeout is a failure).
        sae_steps: training steps of the SAE scorer.
        workers, envs_per_worker, executor: as for every run.
        leave_one_out: hold out each kind of seen + held_out in turn (studies.monitor_bench.
            folds): the scorers are fitted and calibrated on the unshifted scene and the other
            kinds, scored and enforced on the one held out; held-out figures pooled over folds.
        n_boot: bootstrap resamples for the intervals.
        out: output folder.
        plots: write bench.png.
    """

    agent: str = "vla"
    model: str = "tiny"
    variance_draws: int = 4
    layer: int | None = None
    scorers: tuple[str, ...] | None = None
    # seen: the shifts that fail the tiny VLA through its grip (heavier, larger objects: 50% at
    # full strength, `physteer shift-suite`); held out: those that fail it otherwise (dim light
    # 50%, an object off the training region 60%, mostly timeouts) and those it mostly survives.
    seen: tuple[str, ...] = ("mass", "size")
    held_out: tuple[str, ...] = ("lighting", "position", "distractors", "camera", "table")
    strengths: tuple[float, ...] = (0.5, 1.0)
    fit_seeds: int = 20
    calibration_seeds: int = 12
    eval_seeds: int = 20
    seed_offset: int = 0
    alpha: float = 0.1
    enforce: tuple[str, ...] | None = None
    on_veto: str = "fallback"
    max_steps: int = 200
    sae_steps: int = 600
    workers: int = 2
    envs_per_worker: int = 1
    executor: str = "processes"
    leave_one_out: bool = False
    n_boot: int = 500
    out: str = "runs/monitor-bench"
    plots: bool = True

    def __post_init__(self) -> None:
        signals = AGENT_SIGNAL_SCORERS.get(self.agent, ())
        if self.scorers is None:  # every scorer the agent's decisions can feed, but the oriented
            # signals (by name only: they failed a pre-registered test, docs/results.md)
            self.scorers = tuple(
                n for n, (k, _) in BENCH_SCORERS.items() if k != "signal" or n in signals
            )
        if self.enforce is None:  # the best learned predictor beside the agent's own uncertainty
            self.enforce = ("best", *[n for n in signals if n in self.scorers][:1])
        self.scorers, self.enforce = tuple(self.scorers), tuple(self.enforce)

    def check(self) -> None:
        """ValueError naming the first bad setting (before any episode)."""
        from envs.shifts import Shift
        from monitors.calibration import check_alpha, conformal_min_n

        for s in self.scorers:
            if s not in BENCH_SCORERS:
                raise ValueError(f"scorer {s!r}: expected some of {list(BENCH_SCORERS)}")
        if not self.scorers or len(set(self.scorers)) != len(self.scorers):
            raise ValueError(f"scorers {list(self.scorers)}: give distinct scorers, at least one")
        if self.agent not in ("vla", "vlm", "pi0"):
            raise ValueError(
                f"agent {self.agent!r}: expected 'vla', 'pi0' or 'vlm' (a monitor reads a model's activations)"
            )
        reported = AGENT_SIGNAL_SCORERS[self.agent]
        if signals := [
            s
            for s in self.scorers
            if BENCH_SCORERS[s][0] == "signal" and signal_of(s) not in reported
        ]:
            raise ValueError(f"scorers {signals} read signals agent {self.agent!r} does not report (it reports "
                             f"{list(reported) or 'none'})")  # fmt: skip
        if not isinstance(self.variance_draws, int) or not 2 <= self.variance_draws <= 64:
            raise ValueError(f"variance_draws={self.variance_draws!r}: must be an int in 2..64")
        for group in ("seen", "held_out"):
            kinds = getattr(self, group)
            for k in kinds:
                if k not in SHIFT_KINDS:
                    raise ValueError(
                        f"{group} shift kind {k!r}: expected some of {list(SHIFT_KINDS)}"
                    )
        if not self.seen:
            raise ValueError(
                "seen: give at least one shift kind the learned predictors see failing in training"
            )
        if self.leave_one_out and len(self.seen) + len(self.held_out) < 2:
            raise ValueError(
                "leave_one_out holds out each kind of seen + held_out in turn: give at least 2 kinds"
            )
        if overlap := sorted(set(self.seen) & set(self.held_out)):
            raise ValueError(
                f"shift kinds {overlap} are both seen and held out: a held-out kind must be unseen"
            )
        if not self.strengths or any(s <= 0 for s in self.strengths):
            raise ValueError(f"strengths {list(self.strengths)}: give strengths in (0, 1]")
        for s in self.strengths:
            Shift(self.seen[0], s)
        check_alpha(self.alpha)
        for name in ("fit_seeds", "calibration_seeds", "eval_seeds", "max_steps", "sae_steps", "workers",
                     "envs_per_worker", "n_boot"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        if (
            isinstance(self.seed_offset, bool)
            or not isinstance(self.seed_offset, int)
            or not (0 <= self.seed_offset <= MAX_SEED_OFFSET)
        ):
            raise ValueError(
                f"seed_offset={self.seed_offset!r}: must be an int in 0..{MAX_SEED_OFFSET:,}"
            )
        n_cal = self.calibration_seeds * len(self.train_conditions)
        if n_cal < conformal_min_n(self.alpha):
            raise ValueError(f"calibration_seeds={self.calibration_seeds} gives {n_cal} calibration episodes, fewer "
                             f"than the {conformal_min_n(self.alpha)} split conformal needs at alpha={self.alpha} "
                             "(and only the successful ones calibrate): raise calibration_seeds")  # fmt: skip
        for e in self.enforce:
            if e != "best" and e not in self.scorers:
                raise ValueError(
                    f"enforce {e!r}: expected 'best' or some of the scorers {list(self.scorers)}"
                )
        if "best" in self.enforce and not set(PREDICTORS) & set(self.scorers):
            raise ValueError(
                f"enforce 'best' needs a learned failure predictor among the scorers ({list(PREDICTORS)})"
            )
        self.experiment("check", self.train_conditions, self.fit_seed_list).validate()

    def _shifts(self, kinds: tuple[str, ...]) -> list[str]:
        return [f"shift:{k}:{s:g}" for k in kinds for s in sorted(self.strengths)]

    @property
    def train_conditions(self) -> list[str]:
        """The unshifted scene and the seen shifts (fit and calibration data)."""
        return ["unsteered", *self._shifts(self.seen)]

    @property
    def eval_conditions(self) -> list[str]:
        """The unshifted scene, the seen shifts and the held-out ones."""
        return [*self.train_conditions, *self._shifts(self.held_out)]

    @property
    def held_out_conditions(self) -> list[str]:
        """The held-out shifts alone."""
        return self._shifts(self.held_out)

    @property
    def fit_seed_list(self) -> list[int]:
        """Seeds that fit the scorers."""
        start = FIT_SEED_START + self.seed_offset
        return list(range(start, start + self.fit_seeds))

    @property
    def calibration_seed_list(self) -> list[int]:
        """Seeds that calibrate the thresholds (after the fit seeds)."""
        start = FIT_SEED_START + self.seed_offset + self.fit_seeds
        return list(range(start, start + self.calibration_seeds))

    @property
    def eval_seed_list(self) -> list[int]:
        """Seeds of the evaluation (disjoint from fit and calibration)."""
        start = EVAL_SEED_START + self.seed_offset
        return list(range(start, start + self.eval_seeds))

    def experiment(self, name: str, conditions: list[str], seeds: list[int], **fields: Any) -> Any:
        """The runner's ExperimentConfig of one of the bench's runs (under `out`)."""
        from rollouts.experiment_config import ExperimentConfig

        return ExperimentConfig(name=name, out=self.out, conditions=conditions, seeds=seeds, agent=self.agent,
                                model=self.model, layer=self.layer, max_steps=self.max_steps, holding=False,
                                on_veto=self.on_veto, workers=self.workers, envs_per_worker=self.envs_per_worker,
                                executor=self.executor, variance_draws=self._draws, **fields)  # fmt: skip

    @property
    def _draws(self) -> int:
        """The runner's variance_draws: only where a scorer reads the sample variance."""
        return self.variance_draws if "sample-variance" in self.scorers else 0
