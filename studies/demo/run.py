"""`physteer demo`: the main job end to end on the embedded tiny model.

    collect → train SAE → discover → steered vs unsteered → SARM under perturbations → probe → report

Each stage writes into runs/<name>/<stage>/ and ends by writing its marker file atomically
(STAGE_MARKERS); a stage is skipped when its marker exists AND reads, so an interrupted demo,
or one whose marker was cut mid-write by something else, resumes where it stopped and redoes a
stage whose marker is unreadable. `DemoConfig` holds every knob; `quick()` is the small version
the tests run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sae.trainer import TrainConfig
from storage import marker_reads, write_json
from studies.demo.controls import discovery_control, steering_norms
from studies.demo.layout import STAGE_MARKERS


@dataclass
class DemoConfig:
    """Sizes of each stage of the demo (defaults: ≤ 15 minutes on 2 CPU cores).

    Attributes:
        name: the demo folder's name under `out`.
        out: the parent folder of the demo folder.
        model: the planner's VLM ('tiny', a local folder or a cached hub id).
        images: labelled frames collected for the SAE (× 81 image tokens each).
        sae_steps: SAE training steps.
        sae_expansion: SAE dictionary size as a multiple of the activation width.
        sae_lr: SAE learning rate.
        seeds: paired seeds per steering experiment.
        toward_rigid: SAE steering levels on fragile objects (0 = rigid level, 1 = fragile level).
        toward_fragile: SAE steering levels on rigid objects.
        dom_scale: difference-of-means steering strength, in units of the vector.
        random_scales: random-direction controls, in units of ||dom||.
        sarm_fit_episodes: clean episodes that fit and calibrate the planner's monitors (the
            i-th calibrates when i % 4 >= 2; conformal calibration at sarm_alpha needs 9 of them
            at 0.1, so >= 19).
        sarm_alpha: the promised clean false-alarm rate per episode of both monitors (split
            conformal over the calibration episodes' largest scores).
        sarm_episodes: evaluation episodes per perturbation condition.
        sarm_perturbations: the SARM stage's perturbation conditions.
        probe_episodes: episodes of the world-model probe.
        videos: seeds per condition recorded as MP4.
        workers: worker processes.
        vla: run the VLA stage.
        vla_seeds_per_cell: the VLA's closed-loop episodes per color × material.
        vla_seeds: paired seeds of the VLA steering study.
        vla_images: labelled frames for the VLA's SAE.
        vla_sae_steps: the VLA SAE's training steps.
        vla_sae_levels: SAE steering levels of the VLA study.
        vla_sarm_fit_episodes: clean episodes that fit and calibrate the VLA's monitors (>= 19
            at sarm_alpha 0.1, as for the planner).
        vla_sarm_episodes: the VLA's SARM evaluation episodes per condition.
        vla_max_steps: steps before truncation in the VLA stage.
    """

    name: str = "demo"
    out: str = "runs"
    model: str = "tiny"
    images: int = 2048  # frames collected for the SAE (× 81 image tokens)
    sae_steps: int = 1500
    sae_expansion: float = 4.0  # dictionary size = sae_expansion x d (the reference's 4x)
    # sae.TrainConfig's default, the rate that works on the tiny model's low-rank activations
    # (2048 renders, 1500 steps: 39% of the latents die at 1e-3, 2.5% at 2.5e-4; FVE 0.999).
    sae_lr: float = TrainConfig.lr
    seeds: int = 20  # paired seeds per steering experiment
    # SAE steering magnitudes (units of the features' effect; 0 = rigid level, 1 = fragile level):
    # two per material, so the dose-response plot has a slope to show.
    toward_rigid: tuple[float, ...] = (-0.25, -0.5)  # on fragile objects
    toward_fragile: tuple[float, ...] = (1.0, 2.0)  # on rigid objects
    dom_scale: float = 2.0
    # Random-direction controls, in units of ||dom||. The SAE steerings above move image tokens
    # by about 1-2 ||dom|| (the report's steering-norm column), so these bracket them.
    random_scales: tuple[float, ...] = (1.0, 2.0)
    # 24 fit the scorers, 24 calibrate them: split conformal at alpha 0.1 needs 9 episodes, but a
    # clean episode's largest score is heavy-tailed (a few seeds score far above the rest), and
    # with 12 the threshold (the largest of 12) let 3 of 8 clean eval episodes alarm for one
    # scorer; with 24 it is the 2nd largest of 24 (P(alarm) <= 2/25), estimated from twice the data.
    sarm_fit_episodes: int = 48
    sarm_alpha: float = 0.1
    sarm_episodes: int = 8
    # TA2 at 5 strengths, from below any behavioural effect to clearly harmful, so the harm-based
    # sweep table and plot have a dose axis; the other kinds at one strength each.
    sarm_perturbations: tuple[str, ...] = ("ta2:0.5@10", "ta2:1@10", "ta2:2@10", "ta2:4@10", "ta2:8@10", "random:4@10",
                                           "sae:contrast:50@10", "noise:0.2@10", "prompt@10")  # fmt: skip
    probe_episodes: int = 40
    videos: int = 2
    workers: int = 2
    # The VLA stage (studies.demo.vla_stage): closed loop per color × material (and the pattern
    # control), graded steering on fragile objects, SARM against TA2. vla=False skips it.
    vla: bool = True
    vla_seeds_per_cell: int = 2
    vla_seeds: int = 6
    vla_images: int = 256
    vla_sae_steps: int = 800
    vla_sae_levels: tuple[float, ...] = (0.6, 0.2)
    vla_sarm_fit_episodes: int = 20  # 10 calibration episodes (9 is the fewest for alpha 0.1)
    vla_sarm_episodes: int = 6
    vla_max_steps: int = 200

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A minutes-long version for tests and smoke runs."""
        base = dict(
            images=64,
            sae_steps=200,
            seeds=2,
            sarm_fit_episodes=20,  # 10 calibration episodes (9 is the fewest at alpha 0.1)
            sarm_episodes=1,
            sarm_perturbations=("ta2:4@10",),
            probe_episodes=10,
            videos=1,
            workers=1,
            vla_seeds_per_cell=1,
            vla_seeds=2,
            vla_images=32,
            vla_sae_steps=100,
            vla_sarm_fit_episodes=20,
            vla_sarm_episodes=1,
            vla_max_steps=40,
        )
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        """ValueError naming the first bad setting (before any stage starts)."""
        from rollouts.conditions import parse_condition

        for name, low in (("images", 16), ("sae_steps", 1), ("seeds", 2), ("sarm_fit_episodes", 4),
                          ("sarm_episodes", 1), ("probe_episodes", 4), ("videos", 0), ("workers", 1),
                          ("vla_seeds_per_cell", 1), ("vla_seeds", 2), ("vla_images", 16), ("vla_sae_steps", 1),
                          ("vla_sarm_fit_episodes", 4), ("vla_sarm_episodes", 1), ("vla_max_steps", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed: it must be an int >= {low}")
        if not 0 < self.sae_lr < 1 or self.sae_expansion <= 0:
            raise ValueError(
                f"sae_lr={self.sae_lr} must be in (0, 1) and sae_expansion={self.sae_expansion} > 0"
            )
        if self.dom_scale <= 0 or any(s <= 0 for s in self.random_scales):
            raise ValueError(
                f"dom_scale={self.dom_scale} and random_scales={self.random_scales} must be > 0"
            )
        levels = list(self.vla_sae_levels)
        if len(levels) < 2 or len(set(levels)) != len(levels) or not all(x < 1 for x in levels):
            raise ValueError(
                f"vla_sae_levels={levels}: give at least 2 distinct SAE levels, each < 1 (1 = fragile level)"
            )
        for p in self.sarm_perturbations:
            parse_condition(p.replace(":contrast:", ":0:"))
        # calibration: enough clean episodes for alpha, before any stage (named by the demo's field)
        for field_name, make in (
            ("sarm_fit_episodes", self.sarm_config),
            ("vla_sarm_fit_episodes", self.vla_sarm_config),
        ):
            if field_name == "sarm_fit_episodes" or self.vla:
                try:
                    make().check()
                except ValueError as exc:
                    raise ValueError(
                        f"{field_name}={getattr(self, field_name)}, sarm_alpha={self.sarm_alpha}: {exc}"
                    ) from None
        if not self.name or "/" in self.name:
            raise ValueError(f"name={self.name!r}: a folder name without '/'")

    @property
    def root(self) -> Path:
        """The demo's run folder."""
        return Path(self.out) / self.name

    def sarm_config(self, layer: int | None = None) -> Any:
        """Stage 5's SarmEvalConfig: the planner's monitors at sarm-eval's default calibration
        (conformal per episode at `sarm_alpha`)."""
        from studies.sarm.config import SarmEvalConfig

        return SarmEvalConfig(model=self.model, layer=layer, fit_episodes=self.sarm_fit_episodes,
                              episodes=self.sarm_episodes, perturbations=self.sarm_perturbations,
                              alpha=self.sarm_alpha, out=str(self.root / "sarm"), workers=self.workers)  # fmt: skip

    def vla_sarm_config(self) -> Any:
        """The VLA stage's SarmEvalConfig: the SAE monitor against TA2, calibrated as stage 5's."""
        from studies.demo.layout import VLA_MARKERS
        from studies.sarm.config import SarmEvalConfig

        return SarmEvalConfig(agent="vla", model="tiny-vla", scorers=("sae",), fit_episodes=self.vla_sarm_fit_episodes,
                              episodes=self.vla_sarm_episodes, perturbations=("ta2:4@10",), alpha=self.sarm_alpha,
                              max_steps=self.vla_max_steps, out=str(self.root / Path(VLA_MARKERS["sarm"]).parent),
                              workers=self.workers)  # fmt: skip


def run_demo(cfg: DemoConfig, console: Console | None = None) -> Path:
    """Run every stage (skipping finished ones); returns the path of report.md."""
    cfg.validate()
    console = console or Console()
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "demo_config.json", asdict(cfg))

    def finished(stage_name: str) -> bool:
        return marker_reads(root / STAGE_MARKERS[stage_name])

    timings: dict[str, float] = {}
    t_all = time.time()

    def stage(name: str) -> None:
        timings[name] = time.time()
        console.rule(f"[bold]{name}")

    def done(name: str) -> None:
        timings[name] = time.time() - timings[name]

    from agents.backend import load_vlm
    from agents.vlm_agent import default_tap_layer

    backend = load_vlm(cfg.model)
    layer = default_tap_layer(backend.n_layers)

    stage("1. collect activations")
    store_dir = root / "store"
    if not finished("1. collect activations"):
        import shutil

        from studies.collect import collect_many, random_weights_backend

        targets = [(backend, layer, store_dir)]
        if not finished("3b. discovery control: random-weight model"):
            # Render each frame once: the control's random-weight copy reads the same frames (its
            # stage reuses this store; it collects its own only if this one is gone).
            targets.append(
                (random_weights_backend(backend, seed=0), layer, root / "control" / "store")
            )
        for _, _, folder in targets:
            shutil.rmtree(
                folder, ignore_errors=True
            )  # a half-written store from an interrupted run
        collect_many(targets, cfg.images, seed=1_000_000, workers=cfg.workers)
    from sae import ActivationStore

    store = ActivationStore.open(store_dir)
    console.print(f"{store} at layer {layer}")
    done("1. collect activations")

    stage("2. train SAE")
    from sae import default_config, evaluate, train_sae
    from sae.matryoshka import MatryoshkaSAE

    sae_dir = root / "sae"
    sae_config = default_config(store.d, n_latents=max(8, round(cfg.sae_expansion * store.d)))
    if not finished("2. train SAE"):
        train_sae(
            store,
            sae_config,
            TrainConfig(
                lr=cfg.sae_lr, steps=cfg.sae_steps, batch_size=1024, seed=0, out_dir=str(sae_dir)
            ),
            resume=(sae_dir / "checkpoints").exists(),
        )
    sae = MatryoshkaSAE.from_pretrained(sae_dir / "sae", expected_d_in=store.d)
    metrics = evaluate(sae, store)
    console.print(f"FVE {metrics.fve:.3f}, L0 {metrics.l0:.1f}, dead {metrics.dead_fraction:.1%}")
    done("2. train SAE")

    stage("3. discover fragility features")
    from sae import discover_store
    from sae.discovery_report import render_table, save_plot
    from sae.discovery_report import write_json as write_discovery

    discovery_path = root / "discovery" / "discovery.json"
    if not finished("3. discover fragility features"):
        result = discover_store(sae, store, threshold=0.5, n_boot=300)
        save_plot(result, root / "discovery" / "discovery.png")
        write_discovery(result, discovery_path)
        render_table(result, console, top=8)
    discovery = json.loads(discovery_path.read_text())
    has_feature = bool(discovery.get("fragility"))
    console.print(
        f"fragility features: {discovery.get('fragility')}; color features excluded: {len(discovery.get('color', []))}"
    )
    done("3. discover fragility features")

    stage("3b. discovery control: random-weight model")
    control = discovery_control(cfg, root / "control", backend, layer, sae_config)
    console.print(
        f"random-weight control: fragility features {control['fragility']} (expected none); "
        f"strongest material score {control['strongest_material_score']:+.2f}"
    )
    done("3b. discovery control: random-weight model")

    stage("4. steered vs unsteered")
    from reports.steering import steering_report
    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig

    steering = {}
    for material, sae_mags, sign in (
        ("fragile", cfg.toward_rigid, -1),
        ("rigid", cfg.toward_fragile, +1),
    ):
        conditions = [
            "unsteered",
            f"dom:{sign * cfg.dom_scale:+g}",
            *(f"random:{sign * s:+g}" for s in cfg.random_scales),
        ]
        if has_feature:
            conditions[1:1] = [f"sae:fragility:{m:+g}" for m in sae_mags]
        exp = ExperimentConfig(
            name=f"steer_{material}",
            out=str(root),
            conditions=conditions,
            seeds=list(range(cfg.seeds)),
            material=material,
            model=cfg.model,
            layer=layer,
            sae=str(sae_dir / "sae"),
            discovery=str(discovery_path) if has_feature else None,
            vector=str(store_dir / "dom_vector.safetensors"),
            videos=cfg.videos,
            workers=cfg.workers,
        )
        run_dir = run_experiment(exp)
        console.print(f"[bold]{material} objects[/bold]")
        steering[material] = steering_report(run_dir, console=console)
        steering[material]["steering_norms"] = steering_norms(exp, store_dir, material)
    done("4. steered vs unsteered")

    stage("5. SARM monitor under perturbations")
    from studies.sarm.eval import print_summary, run_sarm_eval

    sarm_dir = root / "sarm"
    if not finished("5. SARM monitor under perturbations"):
        doc = run_sarm_eval(
            cfg.sarm_config(layer),
            log=console.print,
            progress=True,
        )
    else:
        doc = json.loads((sarm_dir / "summary.json").read_text())
    print_summary(doc)
    done("5. SARM monitor under perturbations")

    stage("6. world-model probe")
    from studies.world_model import collect_probe_data, fit_probes
    from studies.world_model_report import broken_verdict, probe_table_markdown

    probe_path = root / "probe" / "probe.json"
    if not finished("6. world-model probe"):
        data = collect_probe_data(backend, layer, cfg.probe_episodes)
        rows = [asdict(r) for r in fit_probes(data)]
        write_json(probe_path, {"rows": rows, "n_rows": int(len(data.groups))})
    from studies.world_model import ProbeRow

    probe_rows = [ProbeRow(**r) for r in json.loads(probe_path.read_text())["rows"]]
    verdict = broken_verdict(probe_rows)
    console.print(probe_table_markdown(probe_rows))
    console.print(verdict)
    done("6. world-model probe")

    vla = None
    if cfg.vla:
        stage("7. VLA: closed loop, graded steering, SARM")
        from studies.demo.vla_stage import run_vla_stage

        vla = run_vla_stage(cfg, root, console)
        done("7. VLA: closed loop, graded steering, SARM")

    console.rule("[bold]8. report")
    from studies.demo.report_md import write_report

    report = write_report(
        cfg,
        root,
        metrics,
        discovery,
        control,
        steering,
        doc,
        probe_rows,
        verdict,
        timings,
        time.time() - t_all,
        vla,
    )
    console.print(f"\nReport: {report.resolve()}")
    console.print(
        f"Videos: {(root / 'steer_fragile' / 'videos').resolve()} and {(root / 'steer_rigid' / 'videos').resolve()}"
    )
    return report
