"""Experimental conditions: what is done to the agent in an episode.

A condition is written as a short string, so experiments read like their configuration:

    unsteered                 no intervention
    sae:fragility:-0.5        the discovered fragility features set to (rigid level − 0.5 × effect)
    sae:fragility:+2          ... to (rigid level + 2 × effect): toward fragile
    sae:17:8.0                SAE latent 17 set to 8.0 (raw value)
    dom:+4                    add 4 × (mean fragile − mean rigid) activation at the image tokens
    random:+4                 a random direction with the norm of that vector (control)
    neuron:fragile:5          FFN neuron cluster for the word "fragile" clamped to 5
    neuron-random:5           a random cluster of the size and layer of "fragile"'s (control)
    neuron-random:quickly:5   ... of the size and layer of "quickly"'s cluster (its control)
    method:selective:-0.5     any steering method (steering.registry) fitted into the run's
                              `methods` folder, at its strength (steering.base: + toward fragile)

SAE magnitudes for `fragility` are in units of each feature's material effect
(fragile mean − rigid mean over the discovery set), so a sign means the same on any SAE:
0 is the rigid level, 1 the fragile level. `fragility` steers the top FRAGILITY_TOP discovered
fragility features together: fragility is spread over many redundant latents (on the tiny
model, setting any single one leaves P(fragile) unchanged; thirty together flip it). Steering
is in "delta" mode: one hook per feature, each adding its decoded change.
Perturbations are conditions too, parsed by the same factory (SARM evaluation runs them):

    ta2:4                     TA2-style addition: 4 × (mean rigid − mean fragile), i.e. dom:-4
    noise:0.2                 gaussian noise on the agent's frames (std = 0.2 × 255)
    occlusion:0.35            a grey patch of 0.35 × the frame side, centred
    color:0.3                 a color shift (R + 0.3·255, B − 0.3·255)
    prompt  or  prompt:2      an injected instruction appended (twice) to the agent's question

Any condition takes an onset step, `@<step>`: `ta2:4@10` is switched on at step 10 and stays on
(`sae:17:50@10` is the SAE overdrive attack). Without `@` a condition is on from step 0.
A distribution shift changes the scene itself, from the reset on (no onset; envs.shifts):

    shift:mass:0.5            the object 5.5 times as heavy; likewise shift:camera:1,
                              shift:lighting:0.5, shift:table:1, shift:size:1, shift:position:1,
                              shift:distractors:1 (strength in [0, 1]; 0 is the training scene)
    instruct:firmly           the instruction carries a handling word ("Put the red
                              object in the bin firmly."; envs.language: gently, carefully, softly,
                              firmly, tightly): prompting, the baseline of every steering method,
                              and the instruction–vision conflict on the other material

Everything is validated before an episode runs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from rollouts.resources import SteeringResources

STEERING_KINDS = ("unsteered", "sae", "dom", "random", "neuron", "neuron-random", "method")
FRAME_KINDS = {
    "noise": "noise",
    "occlusion": "occlusion",
    "color": "color_shift",
}  # → ImageCorruption
PERTURBATION_KINDS = ("ta2", *FRAME_KINDS, "prompt")
ENV_KINDS = ("shift", "instruct")  # kinds set at reset (envs.shifts, envs.language), not hooks
KINDS = STEERING_KINDS + PERTURBATION_KINDS + ENV_KINDS
RESIDUAL_KINDS = ("sae", "dom", "random", "ta2")  # kinds that edit the residual stream
SEEDED_KINDS = ("random", "neuron-random")  # model edits drawn per episode seed


@dataclass(frozen=True)
class Condition:
    """One parsed condition (see module docstring for the syntax)."""

    name: str
    kind: str
    magnitude: float = 0.0
    feature: str | None = None  # "fragility" or a latent index as text (sae)
    concept: str | None = None  # neuron concept word
    onset: int = 0  # env step from which the condition is on

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for config.json."""
        return asdict(self)

    @property
    def needs_sae(self) -> bool:
        """Whether this condition needs an SAE checkpoint."""
        return self.kind == "sae"

    @property
    def needs_dom(self) -> bool:
        """Whether this condition needs the difference-of-means vector."""
        return self.kind in ("dom", "random", "ta2")

    @property
    def needs_method(self) -> bool:
        """Whether this condition steers with a fitted method of the run's `methods` folder."""
        return self.kind == "method"

    @property
    def env_options(self) -> dict[str, Any]:
        """The env reset options this condition sets ({"shift": "kind:strength"} for a shift,
        {"handling": word} for an instruction)."""
        if self.kind == "instruct":
            return {"handling": self.feature}
        return {"shift": f"{self.feature}:{self.magnitude!r}"} if self.kind == "shift" else {}

    def reset_options(self, material: str | None = None) -> dict[str, Any] | None:
        """The env reset options of an episode under this condition: a forced `material` and
        this condition's own (a shift), or None when there are none."""
        options = {**({"material": material} if material else {}), **self.env_options}
        return options or None

    @property
    def per_seed(self) -> bool:
        """Whether its model edit is drawn per episode seed (such episodes are not batched:
        one batched forward carries one edit)."""
        if self.kind == "method":
            from steering.registry import method_class

            return method_class(self.feature).per_seed
        return self.kind in SEEDED_KINDS


def parse_condition(text: str) -> Condition:
    """Parse a condition string; ValueError naming the string and the allowed forms."""
    usage = (
        f"condition {text!r} is not understood; allowed: unsteered, sae:<fragility|latent>:<value>, "
        "dom:<scale>, random:<scale>, method:<name>:<strength>, neuron:<word>:<value>, neuron-random:[<word>:]<value>, ta2:<scale>, "
        "noise:<0-1>, occlusion:<0-1>, color:<0-1>, prompt[:<repeats>], each optionally @<onset step>; "
        "shift:<kind>:<0-1>, instruct:<handling word> (no onset)"
    )
    body, _, onset_text = text.strip().partition("@")
    parts = body.split(":")
    kind = parts[0]
    try:
        onset = int(onset_text) if onset_text else 0
        if onset < 0 or (onset_text and not onset_text.isdigit()):
            raise ValueError
        if kind == "unsteered" and len(parts) == 1 and not onset_text:
            return Condition(text, kind)
        if kind == "sae" and len(parts) == 3:
            feature = parts[1]
            if feature != "fragility" and not feature.isdigit():
                raise ValueError
            return Condition(text, kind, float(parts[2]), feature=feature, onset=onset)
        if kind == "method" and len(parts) == 3 and parts[1]:
            return Condition(text, kind, float(parts[2]), feature=parts[1], onset=onset)
        if kind in ("dom", "random", "ta2", "neuron-random") and len(parts) == 2:
            return Condition(text, kind, float(parts[1]), onset=onset)
        if kind in FRAME_KINDS and len(parts) == 2:
            magnitude = float(parts[1])
            if not 0.0 < magnitude <= 1.0:
                raise ValueError(
                    f"condition {text!r}: the magnitude of {kind} is a fraction in (0, 1]"
                )
            return Condition(text, kind, magnitude, onset=onset)
        if kind == "prompt" and len(parts) in (1, 2):
            repeats = int(parts[1]) if len(parts) == 2 else 1
            if repeats < 1:
                raise ValueError(f"condition {text!r}: prompt repeats must be an int >= 1")
            return Condition(text, kind, float(repeats), onset=onset)
        if kind == "shift" and len(parts) == 3:
            from envs.shifts import Shift

            if onset_text:
                raise ValueError(
                    f"condition {text!r}: a shift changes the scene from the reset on; drop '@{onset_text}'"
                )
            try:
                shift = Shift(parts[1], float(parts[2]))
            except ValueError as exc:
                raise ValueError(f"condition {text!r}: {exc}") from None
            return Condition(text, kind, shift.strength, feature=shift.kind)
        if kind == "instruct" and len(parts) == 2:
            from envs.language import check_handling_word

            if onset_text:
                raise ValueError(
                    f"condition {text!r}: an instruction is given at the reset; drop '@{onset_text}'"
                )
            try:
                check_handling_word(parts[1])
            except ValueError as exc:
                raise ValueError(f"condition {text!r}: {exc}") from None
            return Condition(text, kind, feature=parts[1])
        if kind in ("neuron", "neuron-random") and len(parts) == 3 and parts[1]:
            return Condition(text, kind, float(parts[2]), concept=parts[1], onset=onset)
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith("condition") else usage) from None
    raise ValueError(usage)


def parse_conditions(texts: list[str]) -> list[Condition]:
    """Parse a list of conditions; names must be unique."""
    conditions = [parse_condition(t) for t in texts]
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise ValueError(f"conditions must be unique, got {names}")
    if not conditions:
        raise ValueError("give at least one condition (e.g. unsteered)")
    return conditions


def condition_method(c: Condition, res: SteeringResources, layer: int, backend: Any = None) -> Any:
    """The steering method (steering.methods) that makes condition `c`'s edit, from the run's
    resources: dom/ta2 → DiffMean of the vector (ta2: its negative), random → RandomDirection,
    sae:fragility → SAEClamp, neuron / neuron-random → the word's cluster (needs `backend`)."""
    from steering.methods.controls import RandomDirection, RandomNeurons
    from steering.methods.dom import DiffMean
    from steering.methods.neurons import NeuronClusters
    from steering.methods.sae_clamp import SAEClamp

    if c.kind in ("dom", "ta2"):
        return DiffMean.from_vector(res.dom_vector if c.kind == "dom" else -res.dom_vector, layer)
    if c.kind == "random":
        method = RandomDirection()
        method.state["dom"], method.layer = res.dom_vector, layer
        return method
    if c.kind == "sae" and c.feature == "fragility":
        return SAEClamp.from_features(res.sae, res.fragility_features, layer)
    if c.kind in ("neuron", "neuron-random"):
        word = c.concept or "fragile"
        method = (NeuronClusters if c.kind == "neuron" else RandomNeurons)(
            fragile_word=word, rigid_word=word
        )
        method.select(backend, "fragile")
        return method
    raise ValueError(f"condition {c.name!r} has no steering method")


def residual_interventions(
    c: Condition, res: SteeringResources, layer: int, seed: int = 0
) -> list[Any]:
    """The residual-stream interventions of a sae, dom or random condition, not yet attached
    (applied in order; `[]` for unsteered). Neuron conditions edit FFN inputs: ValueError."""
    from agents.interventions import SAEFeatureSteering

    if c.kind == "unsteered":
        return []
    if c.kind == "sae" and c.feature != "fragility":
        return [SAEFeatureSteering(res.sae, int(c.feature), c.magnitude, layer=layer)]
    if c.kind == "sae":
        return condition_method(c, res, layer).level_intervention(c.magnitude).edits
    if c.kind in ("dom", "ta2", "random"):
        edit = condition_method(c, res, layer).intervention(c.magnitude, seed)
        return list(edit.edits) if hasattr(edit, "edits") else [edit]
    raise ValueError(
        f"condition {c.name!r} does not edit the residual stream; kinds that do: {RESIDUAL_KINDS}"
    )


def build_intervention(
    c: Condition, res: SteeringResources, backend: Any, layer: int, seed: int = 0
) -> AbstractContextManager:
    """The intervention for a condition, ready to `attach(backend)` (or a no-op context)."""
    if c.kind == "unsteered":
        return nullcontext()
    if c.kind in RESIDUAL_KINDS:
        stack = ExitStack()  # one hook per intervention; removing the stack removes them all
        for intervention in residual_interventions(c, res, layer, seed):
            stack.enter_context(intervention.attach(backend))
        return stack
    if c.kind in ("neuron", "neuron-random"):
        return (
            condition_method(c, res, layer, backend)
            .cluster_intervention("fragile", c.magnitude, seed)
            .attach(backend)
        )
    if c.kind == "method":
        return res.method(c.feature).intervention(c.magnitude, seed).attach(backend)
    raise ValueError(
        f"condition {c.name!r} does not edit the model; model-editing kinds: "
        f"{RESIDUAL_KINDS + ('neuron', 'neuron-random', 'method')}"
    )


class ConditionEffect:
    """What a condition does to the episodes of one batch, switched on at its onset step.

    The closed loop calls `update(step)` before the agent acts, passes each lane's frame
    through `frame(k, image)` and calls `end()` when the batch's episodes are over (hooks
    removed, the question restored: no trace left). Model edits (steering, TA2) are shared by
    the batch's lanes; frame edits are seeded per lane with the lane's episode seed, so an
    episode does not depend on the batch it ran in.

    Args:
        condition: the parsed condition.
        resources: SteeringResources with what it needs.
        agent: the agent (its `backend` for model edits, its `question` for prompt injection).
        layer: decoder layer of residual edits.
        seeds: the episode seed of each lane (a per-seed condition takes exactly one).
    """

    def __init__(self, condition: Condition, resources: SteeringResources, agent: Any, layer: int | None,
                 seeds: list[int]) -> None:  # fmt: skip
        if condition.per_seed and len(seeds) != 1:
            raise ValueError(
                f"condition {condition.name!r} draws its edit per seed: run its episodes one per batch"
            )
        self.condition, self.resources, self.agent, self.layer, self.seeds = (
            condition,
            resources,
            agent,
            layer,
            seeds,
        )
        self.active = False
        self._model: AbstractContextManager | None = None
        self._prompt: Any = None
        self._frames: list[Any] = []

    def update(self, step: int) -> None:
        """Switch on when `step` reaches the onset (call before the agent acts)."""
        c = self.condition
        if self.active or step < c.onset or c.kind in ("unsteered", *ENV_KINDS):
            return
        self.active = True
        if c.kind in FRAME_KINDS:
            from monitors.attacks import ImageCorruption

            self._frames = [
                ImageCorruption(FRAME_KINDS[c.kind], c.magnitude, 0, seed=s) for s in self.seeds
            ]
            for f in self._frames:
                f.update(self.agent, step)
        elif c.kind == "prompt":
            from monitors.attacks import PromptInjection

            self._prompt = PromptInjection(magnitude=int(c.magnitude))
            self._prompt.update(self.agent, step)
        else:
            backend = getattr(self.agent, "backend", None)
            if backend is None:
                raise ValueError(
                    f"condition {c.name!r} edits the model, but agent {type(self.agent).__name__} has none"
                )
            self._model = build_intervention(
                c, self.resources, backend, self.layer, seed=self.seeds[0]
            )

    def frame(self, k: int, image: np.ndarray) -> np.ndarray:
        """The frame lane `k`'s agent sees (corrupted once an image condition is on)."""
        return self._frames[k].corrupt_image(image) if self._frames else image

    def end(self) -> None:
        """Switch off and remove every trace (safe to call more than once)."""
        if self._model is not None:
            self._model.__exit__(None, None, None)
        if self._prompt is not None:
            self._prompt.end()
        self._model, self._prompt, self._frames, self.active = None, None, [], False


def steering_norm(c: Condition, res: SteeringResources, acts: torch.Tensor, seed: int = 0) -> float:
    """Mean per-token size ||h' − h|| of a residual-stream condition's edit on activations `acts`
    (n × d, e.g. stored image tokens), the same edits the hooks make: to match a control's norm
    to a steering's, or to read a magnitude in activation units."""
    h = acts.float()
    out = h
    for intervention in residual_interventions(c, res, layer=0, seed=seed):
        out = intervention.edit(out)
    return float((out - h).norm(dim=1).mean())
