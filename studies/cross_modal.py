"""`physteer cross-modal`: steer the image tokens with a joint fragility feature's LANGUAGE-side
decoder direction, in closed loop, beside the same feature's vision side and the usual
directions, all at equal displacement norm.

    physteer jsae-study --model runs/tiny-lang/vla --name jsae-vla
    physteer cross-modal --model runs/tiny-lang/vla --jsae runs/jsae-vla --name cross-modal

The claim tested (the JSAE paper's cross-modal steering): a latent shared by frames and
descriptions can be written into the image tokens from the language side and move what the
robot does about as far as its vision side, well beyond a random direction.

1. The feature: the Joint SAE jsae-study saved (`saes/joint`) and its first shared fragility
   latent (one that passed every check there); without one, the latent whose vision code best
   separates the fit frames' materials, and the summary says so.
2. Fit (studies.steer_bench.fit, the benchmark's own frames and stores at the Joint SAE's layer):
   jsae-language, jsae-vision, sae-direction (the Matryoshka SAE's fragility features as one
   direction), dom (difference of means) and the random control (a direction drawn per episode
   seed: `seeds` random directions). Every one is scaled to ‖μ_fragile − μ_rigid‖, so one
   strength is one displacement norm for all.
3. Per material, toward the other one (fragile objects toward a firmer grip, rigid toward a
   gentler one), on unbreakable objects so a break cannot cut the grip short. The handling is
   read as `metric`: by default the VLA's mean closing command ("grip_command": its own grip
   effort, 0.14 gentle to 0.83 firm on the language VLA), whose paired noise is small; the
   peak grip force is reported beside it (a contact spike can add tens of newtons to one
   episode of any condition, so its paired intervals are wide).
   - calibration (seeds from 10,000): jsae-language at every magnitude; its strength is the
     first to reach `target` of the way from the unsteered value to the scripted expert's on
     the other material (interpolated; else, or when the unsteered grip is already past the
     expert's, the magnitude of its largest effect);
   - evaluation (seeds 0..seeds-1): unsteered and every direction at every magnitude and at
     the chosen strength: the paired change of each metric against unsteered, 95% bootstrap
     CIs over seeds.
4. The verdict per material, on `metric`: the language side moves the handling beyond random
   (the paired difference language − random excludes 0 in the steered direction) and close to
   the vision side (at least half its mean effect), at the chosen strength.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reports.paired import estimate, mean_of, paired, paired_by_seed, values

DIRECTIONS = ("jsae-language", "jsae-vision", "sae-direction", "dom", "random")
MATERIALS = ("fragile", "rigid")
#: what the handling is read as (episode columns): the closing command, the peak grip force
METRICS = ("grip_command", "peak_grip_force")
#: settings that make what a study folder holds (how episodes are executed may change on resume)
RUN_FIELDS = ("model", "jsae", "latent", "magnitudes", "target", "calibration_seeds", "seeds", "images",
              "sae_steps", "max_steps", "metric")  # fmt: skip


@dataclass
class CrossModalConfig:
    """Settings of `physteer cross-modal` (saved in summary.json).

    Attributes:
        name, out: the study folder is out/name.
        model: the language-grounded VLA (a folder: physteer train-vla --base <language VLM>).
        jsae: a jsae-study folder on the same model (its saes/joint and summary.json).
        latent: the joint latent steered (-1: the study's first shared fragility feature).
        magnitudes: strengths in units of ‖μ_fragile − μ_rigid‖, at least 5, each > 0 (signed
            toward the other material per material).
        target: the calibration target, a fraction of the way to the expert's other handling.
        metric: the handling calibrated and judged: "grip_command" (the mean closing command)
            or "peak_grip_force" (N); both are reported.
        calibration_seeds: episodes per calibration point (env seeds from 10,000).
        seeds: evaluation seeds per condition (env seeds 0..seeds-1), paired.
        images: labelled frames the directions fit on.
        sae_steps: the Matryoshka SAE's training steps (sae-direction's features).
        max_steps, executor, workers, envs_per_worker, device: as in `physteer run`.
    """

    name: str = "cross-modal"
    out: str = "runs"
    model: str = ""
    jsae: str = ""
    latent: int = -1
    magnitudes: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0, 4.0])
    target: float = 0.5
    metric: str = "grip_command"
    calibration_seeds: int = 6
    seeds: int = 20
    images: int = 256
    sae_steps: int = 1500
    max_steps: int = 200
    executor: str = "processes"
    workers: int = 2
    envs_per_worker: int = 4
    device: str = "cpu"

    @property
    def root(self) -> Path:
        return Path(self.out) / self.name

    @property
    def joint(self) -> Path:
        """The Joint SAE folder jsae-study saved."""
        return Path(self.jsae) / "saes" / "joint"

    def validate(self) -> None:
        """ValueError naming the first bad setting, before any work."""
        if not self.model or not Path(self.model).is_dir():
            raise ValueError(f"model={self.model!r}: give the language-grounded VLA's folder "
                             "(physteer train-vla --base <a train-tiny --language VLM>)")  # fmt: skip
        if (
            not (self.joint / "joint.json").is_file()
            or not (Path(self.jsae) / "summary.json").is_file()
        ):
            raise ValueError(f"jsae={self.jsae!r}: give a finished `physteer jsae-study` folder "
                             "(with saes/joint/joint.json and summary.json)")  # fmt: skip
        mags = self.magnitudes
        if len(set(mags)) < 5 or not all(math.isfinite(m) and m > 0 for m in mags):
            raise ValueError(f"magnitudes={mags}: give at least 5 distinct strengths, each > 0")
        if not (math.isfinite(self.target) and 0 < self.target <= 1):
            raise ValueError(
                f"target={self.target!r}: a fraction of the way to the expert, in (0, 1]"
            )
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: choose one of {list(METRICS)}")
        if isinstance(self.latent, bool) or not isinstance(self.latent, int) or self.latent < -1:
            raise ValueError(
                f"latent={self.latent!r}: a latent index >= 0, or -1 (the study's shared feature)"
            )
        self.bench().validate()  # counts, executor, workers, the Joint SAE's settings
        from storage import refuse_other_settings

        refuse_other_settings(self.root / "study_config.json", asdict(self), RUN_FIELDS)
        from agents.backend import load_vlm
        from studies.jsae_study import check_language_side

        check_language_side(load_vlm(self.model, "cpu", "float32"), self.model)

    def bench(self, material: str = "fragile") -> Any:
        """The steering benchmark's settings this study fits and runs episodes with."""
        from studies.steer_bench.config import SteerBenchConfig

        layer = json.loads((self.joint / "joint.json").read_text()).get("metadata", {}).get("layer")
        params = [f"{m}.{k}={v}" for m in DIRECTIONS[:2] for k, v in
                  (("joint", self.joint), ("latent", self.chosen_latent()))]  # fmt: skip
        return SteerBenchConfig(name=self.name, out=self.out, agent="vla", model=self.model, layer=layer,
                                methods=list(DIRECTIONS[:4]), method_params=params, material=material,
                                target=self.target, calibration_seeds=self.calibration_seeds, seeds=self.seeds,
                                images=self.images, sae_steps=self.sae_steps, max_steps=self.max_steps,
                                executor=self.executor, workers=self.workers, envs_per_worker=self.envs_per_worker,
                                device=self.device, refine_rounds=0)  # fmt: skip

    def chosen_latent(self) -> int:
        """The latent steered: given, else the jsae-study's first shared one, else -1."""
        if self.latent >= 0:
            return self.latent
        study = json.loads((Path(self.jsae) / "summary.json").read_text())
        joint = next((c for c in study["candidates"] if c["role"] == "method"), {})
        return int(joint["passing"][0]) if joint.get("passing") else -1


def verdict(
    rows: list[dict[str, Any]], strength: float, sign: float, metric: str
) -> dict[str, Any]:
    """Does the language side move the handling beyond random and close to the vision side?"""
    from studies.steer_bench.config import method_condition

    effect = {
        n: paired_by_seed(rows, method_condition(n, strength), metric)
        for n in ("jsae-language", "jsae-vision", "random")
    }
    lang, rand = effect["jsae-language"], effect["random"]  # paired by seed, both present
    beyond = estimate(np.array([lang[s] - rand[s] for s in sorted(set(lang) & set(rand))]))
    language, vision = mean_of(lang), mean_of(effect["jsae-vision"])
    ratio = float(language / vision) if vision * sign > 0 else float("nan")
    above = bool(beyond["low"] > 0) if sign > 0 else bool(beyond["high"] < 0)
    return {"language_minus_random": beyond, "language_over_vision": ratio,
            "beyond_random": above, "close_to_vision": bool(ratio >= 0.5),
            "holds": bool(above and ratio >= 0.5)}  # fmt: skip


def run_cross_modal(cfg: CrossModalConfig, console: Any = None) -> dict[str, Any]:
    """Fit, calibrate and evaluate on both materials; writes summary.json (last); returns it."""
    from rich.console import Console

    from storage import write_json
    from studies.steer_bench.config import CALIBRATION_SEED, method_condition
    from studies.steer_bench.fit import build_resources, fit_methods, write_fit_table
    from studies.steer_bench.run import choose_strength, episodes, mean_effect

    cfg.validate()
    console = console or Console()
    cfg.root.mkdir(parents=True, exist_ok=True)
    write_json(cfg.root / "study_config.json", asdict(cfg))
    bench = cfg.bench()
    res = build_resources(bench, console)
    # the Matryoshka row needs fragility features; a model whose SAE has none loses that row only
    names = [n for n in DIRECTIONS if n != "sae-direction" or res["data"].has("sae")]
    omitted = {
        n: "the Matryoshka SAE found no fragility feature" for n in DIRECTIONS if n not in names
    }
    fitted = fit_methods(bench, names, res, console)
    fit_rows = write_fit_table(fitted, cfg.root / "methods" / "fitted.json")
    calibration = list(range(CALIBRATION_SEED, CALIBRATION_SEED + cfg.calibration_seeds))
    evaluation = list(range(cfg.seeds))
    materials = {}
    for material in MATERIALS:
        b = cfg.bench(material)
        sign = 1.0 if material == "fragile" else -1.0  # grip change toward the other material
        steer = -sign  # + is toward fragile in every direction's units
        grid = [steer * m for m in sorted(set(cfg.magnitudes))]
        expert = episodes(
            b, f"expert-{b.other}", calibration, ["unsteered"], b.other, False, "scripted"
        )
        cal = episodes(b, f"calibration-{material}", calibration,
                       ["unsteered", *(method_condition("jsae-language", s) for s in grid)], material, True)  # fmt: skip
        unsteered = mean_of(values(cal, "unsteered", cfg.metric))
        expert_value = mean_of(values(expert, "unsteered", cfg.metric))
        target = cfg.target * (expert_value - unsteered)
        room = bool(np.sign(target) == sign)  # else the unsteered grip is already past the expert's
        target = target if room else sign * math.inf  # then: the magnitude of the largest effect
        curve = [
            (s, mean_effect(cal, method_condition("jsae-language", s), cfg.metric)) for s in grid
        ]
        strength, reached = choose_strength(curve, target)
        strengths = sorted({*grid, strength}, key=abs)
        conditions = ["unsteered", *(method_condition(n, s) for n in names for s in strengths)]
        console.print(f"{material}: strength {strength:+.3g} ({'reached' if reached else 'not reached'}); "
                      f"evaluation {len(conditions)} conditions × {len(evaluation)} seeds")  # fmt: skip
        rows = episodes(b, f"evaluation-{material}", evaluation, conditions, material, True)
        effects = {metric: {n: {f"{s:+.4g}": estimate(paired(rows, method_condition(n, s), metric))
                                for s in strengths} for n in names} for metric in METRICS}  # fmt: skip
        unsteered_eval = {
            m: estimate(np.array(list(values(rows, "unsteered", m).values()))) for m in METRICS
        }
        materials[material] = {"target": target if room else None, "room": room, "unsteered_calibration": unsteered,
                               "strength": strength, "reached": reached, "calibration_curve": curve,
                               "effects": effects, "unsteered": unsteered_eval,
                               "verdict": verdict(rows, strength, sign, cfg.metric)}  # fmt: skip
    doc = {"config": asdict(cfg), "layer": bench.layer, "latent": fitted["jsae-language"].fit_info["latent"],
           "latent_shared": cfg.chosen_latent() >= 0, "methods": fit_rows, "omitted": omitted,
           "materials": materials}  # fmt: skip
    write_json(cfg.root / "summary.json", doc)
    for material, m in materials.items():
        v = m["verdict"]
        console.print(f"{material}: {cfg.metric}, language − random {v['language_minus_random']['mean']:+.3g} "
                      f"[{v['language_minus_random']['low']:+.3g}, {v['language_minus_random']['high']:+.3g}], "
                      f"language / vision {v['language_over_vision']:.2f}: claim {'holds' if v['holds'] else 'fails'}")  # fmt: skip
    return doc
