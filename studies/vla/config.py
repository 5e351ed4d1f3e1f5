"""Settings of the VLA steering study (studies.vla.study): its config dataclass, the acceptance
criteria fixed before any run, and the names its summary and report share."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
RESOURCE_FIELDS = ("agent", "stream", "model", "layer", "images", "collect_episodes", "sae_steps", "sae_expansion",
                   "sae_lr")  # fmt: skip
#: Fields that change what every episode is; a rerun in the same folder must keep them too.
EPISODE_FIELDS = ("material", "unbreakable")
#: The values of fields in studies saved before the fields existed.
SAVED_BEFORE = {
    "material": "fragile",
    "unbreakable": False,
    "agent": "vla",
    "stream": "vlm",
    "collect_episodes": 32,
}
#: Agents the study steers: the token VLA and a π0 (either stream).
STUDY_AGENTS = ("vla", "pi0")


@dataclass
class VLAStudyConfig:
    """The graded-steering study of a VLA (saved as study_config.json).

    Attributes:
        name: study folder name under `out`.
        out: parent folder of study folders.
        agent: "vla" (the token VLA) or "pi0" (a π0 folder as `model`, steered on `stream`).
        stream: with a π0, what the SAE reads and the edits change: "vlm" (the prefix's image
            tokens) or "expert" (the action expert's action tokens, at every denoising step).
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
        images: labelled frames collected for the SAE, discovery and the dom vector (the VLA).
        collect_episodes: with a π0, unsteered closed-loop episodes (color × material
            balanced, seeds from COLLECT_SEED) whose decisions fill the store instead: the
            expert's activations exist only inside a decision (studies.rollout_store).
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
            (agents.vla_model.HANDLING_WORDS); empty: no neuron conditions. None: quickly,
            slowly, gently, firmly for the VLA; none for a π0 (it has no action vocabulary).
        neuron_value: the activation the neuron clusters (and the random cluster) are clamped to.
        videos: record MP4s for the first this-many seeds of each condition.
        executor: "serial", "processes" or "ray" (see `physteer run`).
        workers: processes or Ray actors, each holding its own model.
        envs_per_worker: environments a worker steps together (one batched forward).
        device: torch device of the model ("cpu", "cuda", "auto").
    """

    name: str = "vla-study"
    out: str = "runs"
    agent: str = "vla"
    stream: str = "vlm"
    model: str = "tiny"
    layer: int | None = None
    material: str = "fragile"
    unbreakable: bool = False
    seeds: int = 20
    max_steps: int = 200
    chunk: int | None = None
    decoding: str = DEFAULT_DECODING
    images: int = 512
    collect_episodes: int = 32
    sae_steps: int = 1500
    sae_expansion: float = 4.0
    sae_lr: float | None = None
    sae_levels: list[float] | None = None
    dom_scales: list[float] = field(default_factory=lambda: [0.25, 0.5])
    neuron_words: list[str] | None = None
    neuron_value: float = 5.0
    videos: int = 0
    executor: str = "processes"
    workers: int = 1
    envs_per_worker: int = 4
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.neuron_words is None:
            self.neuron_words = (
                ["quickly", "slowly", "gently", "firmly"] if self.agent == "vla" else []
            )

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

        if self.agent not in STUDY_AGENTS:
            raise ValueError(f"agent={self.agent!r}: allowed {list(STUDY_AGENTS)}")
        if self.agent == "pi0" and self.neuron_words:
            raise ValueError(f"neuron_words={self.neuron_words}: a π0 has no action vocabulary whose words' "
                             "neurons could be clamped; give none")  # fmt: skip
        for name, low in (
            ("seeds", 2),
            ("max_steps", 1),
            ("images", 16),
            ("collect_episodes", 4),
            ("sae_steps", 1),
            ("videos", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an int >= {low}")
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r}: a folder name without '/'")
        if not self.sae_expansion > 0 or (self.sae_lr is not None and not 0 < self.sae_lr < 1):
            raise ValueError(
                f"sae_expansion={self.sae_expansion} must be > 0 and sae_lr={self.sae_lr} in (0, 1)"
            )
        if self.material not in OWN_LEVEL:
            raise ValueError(f"material={self.material!r}: allowed {list(OWN_LEVEL)}")
        levels, own = list(self.levels), OWN_LEVEL[self.material]
        toward = all(self.direction * (own - x) > 0 for x in levels)  # on the other material's side
        if (
            len(levels) < 2
            or len(set(levels)) != len(levels)
            or not all(math.isfinite(x) for x in levels)
            or not toward
        ):
            side = ("X < 1 (toward rigid: 0 = rigid level, < 0 beyond it)" if self.material == "fragile"
                    else "X > 0 (toward fragile: 1 = fragile level, > 1 beyond it)")  # fmt: skip
            raise ValueError(f"sae_levels={self.sae_levels}: on {self.material} objects give at least 2 distinct "
                             f"finite levels {side}")  # fmt: skip
        scales = list(self.dom_scales)
        if (
            not scales
            or len(set(scales)) != len(scales)
            or not all(math.isfinite(m) and m > 0 for m in scales)
        ):
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
                       if old.get(k, SAVED_BEFORE.get(k)) != getattr(self, k)]  # fmt: skip
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
        from rollouts.experiment_config import ExperimentConfig

        return ExperimentConfig(
            name="episodes", out=str(self.root), conditions=self.conditions(random_condition),
            seeds=list(range(self.seeds)), material=self.material, unbreakable=self.unbreakable, agent=self.agent,
            stream=self.stream, model=self.model, layer=resources.get("layer", self.layer),
            chunk=self.chunk, decoding=self.decoding, max_steps=self.max_steps, holding=False, videos=self.videos, executor=self.executor,
            workers=self.workers, envs_per_worker=self.envs_per_worker, device=self.device,
            sae=resources.get("sae"), discovery=resources.get("discovery"), vector=resources.get("vector"),
        )  # fmt: skip

    def collect_experiment(self, layer: int) -> Any:
        """With a π0: the unsteered episodes whose decisions fill the store (seeds from
        COLLECT_SEED, the env's balanced design)."""
        from rollouts.experiment_config import ExperimentConfig

        return ExperimentConfig(
            name="collect", out=str(self.root), seeds=list(range(COLLECT_SEED, COLLECT_SEED + self.collect_episodes)),
            agent=self.agent, stream=self.stream, model=self.model, layer=layer, chunk=self.chunk, max_steps=self.max_steps,
            holding=False, executor=self.executor, workers=self.workers, envs_per_worker=self.envs_per_worker,
            device=self.device,
        )  # fmt: skip


def objects_label(material: str, unbreakable: bool) -> str:
    """What a study's episodes ran on, in words ("fragile objects", "unbreakable fragile objects")."""
    return f"{'unbreakable ' if unbreakable else ''}{material} objects"


def sae_condition(level: float) -> str:
    """The condition string of SAE fragility level X."""
    return f"sae:fragility:{level:+g}"
