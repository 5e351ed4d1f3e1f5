"""`physteer pi0-decodability`: where a π0 carries the object's material, stream × layer, beside
the same architecture with random weights.

    physteer pi0-decodability --model tiny --episodes 64

1. Inputs: unsteered closed-loop episodes of the π0 (the one loop, balanced color × material
   seeds from `first_seed`); a recorder keeps the inputs of each episode's first `decisions`
   decisions (the approach and the grasp, where handling is decided): the frame, the prompt,
   the env state and the decision's index, from which its noise is drawn as the agent draws it
   (agents.pi0_agent.decision_noise).
2. Activations: the trained π0 and its random-weight control (studies.collect.
   random_weights_backend, the discovery control) each denoise every kept decision once, the
   same inputs and noise, with a tap at every layer of both streams: the prefix's image tokens
   at each VLM layer an action reads, the expert's action tokens at each expert layer (the last
   denoising step's, the one that sets the actions).
3. Per (model, stream, layer):
   - a linear probe (standardised logistic regression) of material on the decision's mean
     token, trained on the red objects' decisions and tested on the blue ones' and the other
     way round (a probe that read the color's correlates would not transfer); accuracy over the
     held-out decisions with a cluster-bootstrap 95% CI over episodes;
   - decorrelated discovery on the tokens (studies.sae_resources: a Matryoshka SAE, then
     latents whose material effect has one sign and |d| >= 0.5 within every color and shade):
     how many fragility features, and the best one's |d|.
   `summary.json` (written last), a terminal table.

Rerunning resumes: the kept inputs (`inputs.safetensors`), each store and SAE are reused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rollouts.recorders import Recorder, StepView

#: The two streams of a π0 (agents.pi0_agent.STREAMS) as this study names them.
STREAM_NAMES = {"vlm": "VLM prefix (image tokens)", "expert": "action expert (action tokens)"}


@dataclass
class DecodabilityConfig:
    """Settings of one decodability sweep (module docstring).

    Attributes:
        model: a π0 checkpoint folder, or "tiny" (the shipped agents/tiny_pi0).
        episodes: closed-loop episodes, >= 16 (a multiple of 16 is balanced over the env's
            design).
        decisions: the first decisions of each episode whose inputs are kept (>= 1).
        first_seed: env seed of the first episode.
        random_weights: seed of the random-weight control's initialisation.
        sae_steps: training steps of each SAE.
        sae_expansion: SAE latents per activation dimension.
        n_boot: bootstrap resamples of the probe's CI.
        out: output folder.
    """

    model: str = "tiny"
    episodes: int = 64
    decisions: int = 8
    first_seed: int = 6_100_000
    random_weights: int = 0
    sae_steps: int = 600
    sae_expansion: float = 4.0
    n_boot: int = 1000
    out: str = "runs/pi0-decodability"

    def validate(self) -> None:
        """ValueError naming the first bad setting (before any episode)."""
        from agents.pi0_folder import check_pi0_folder, pi0_dir

        for name, low in (("episodes", 16), ("decisions", 1), ("sae_steps", 1), ("n_boot", 10)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: must be an int >= {low}" + (
                    " (discovery compares every color × shade × material cell of the env's design)"
                    if name == "episodes" else ""))  # fmt: skip
        if self.first_seed < 0 or self.random_weights < 0:
            raise ValueError(
                f"first_seed={self.first_seed}, random_weights={self.random_weights}: must be >= 0"
            )
        if not (math.isfinite(self.sae_expansion) and self.sae_expansion > 0):
            raise ValueError(f"sae_expansion={self.sae_expansion!r}: must be a number > 0")
        check_pi0_folder(pi0_dir(self.model))


class DecisionInputs(Recorder):
    """Keeps the inputs of an episode's first `n` decisions and then ends the episode."""

    name = "decision_inputs"

    def __init__(self, n: int) -> None:
        self.n = n
        self.kept: list[dict[str, Any]] = []

    def after_act(self, view: StepView) -> None:
        decision = view.agent.decision_for(view.lane) or {}
        if decision.get("decided") and len(self.kept) < self.n:
            agent = view.agent
            self.kept.append({"frame": view.frame(), "state": np.asarray(view.obs["state"], np.float32),
                              "text": f"{view.info['instruction']} {agent.question.strip()}".strip(),
                              "index": int(decision["decision_index"]), "step": view.step})  # fmt: skip

    def after_step(self, view: StepView) -> bool:
        return len(self.kept) >= self.n

    def result(self) -> list[dict[str, Any]]:
        return self.kept


def collect_inputs(cfg: DecodabilityConfig, agent: Any) -> dict[str, Any]:
    """Stage 1: the kept decisions' inputs and labels, from unsteered closed-loop episodes."""
    from rollouts.episode import ClosedLoop, EpisodeSpec

    loop = ClosedLoop(
        agent,
        n_envs=4,
        record_decisions=False,
        recorders=lambda spec: [DecisionInputs(cfg.decisions)],
    )
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.episodes))
    frames, states, texts, meta = [], [], [], []
    for start in range(0, len(seeds), 4):
        for record in loop.run([EpisodeSpec(seed=s) for s in seeds[start : start + 4]]):
            row = record.row
            for d in record.extra["decision_inputs"]:
                frames.append(d["frame"])
                states.append(d["state"])
                texts.append(d["text"])
                meta.append({"seed": row["seed"], "color": row["color"], "material": row["material"],
                             "shade": row["shade"], "shape": row["shape"], "step": d["step"], "index": d["index"]})  # fmt: skip
    loop.close()
    return {"frames": np.stack(frames), "states": np.stack(states), "texts": texts, "meta": meta}


def stream_activations(backend: Any, inputs: dict[str, Any], noise_scale: float, steps: int,
                       batch: int = 32) -> dict[tuple[str, int], torch.Tensor]:  # fmt: skip
    """(stream, layer) → decisions × tokens × d: every kept decision denoised once, tapped at
    every layer of both streams (the prefix's image tokens, the expert's action tokens)."""
    from agents.pi0_agent import decision_noise
    from agents.taps import ResidualTap

    taps = {
        ("vlm", L): ResidualTap(L, include_last=False).attach(backend)
        for L in range(backend.n_layers)
    }
    taps |= {("expert", L): ResidualTap(L, include_last=False).attach(backend.expert)
             for L in range(backend.expert.n_layers)}  # fmt: skip
    out: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in taps}
    try:
        for i in range(0, len(inputs["texts"]), batch):
            rows = range(i, min(i + batch, len(inputs["texts"])))
            noise = noise_scale * torch.stack([decision_noise(inputs["meta"][r]["seed"], inputs["meta"][r]["index"],
                                                              backend.chunk_size, backend.action_dim) for r in rows])  # fmt: skip
            backend.sample(list(inputs["frames"][rows.start : rows.stop]), inputs["texts"][rows.start : rows.stop],
                           inputs["states"][rows.start : rows.stop], noise, steps)  # fmt: skip
            for key, tap in taps.items():
                out[key].append(tap.latest_batch[:, : tap.n_image_tokens].float().cpu())
    finally:
        for tap in taps.values():
            tap.remove()
    return {k: torch.cat(v) for k, v in out.items()}


def cross_color_probe(pooled: np.ndarray, meta: list[dict], n_boot: int) -> dict[str, Any]:
    """Material from the mean token, trained on one color and tested on the other (both ways):
    accuracy over the held-out decisions and its cluster-bootstrap CI over episodes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from reports.stats import cluster_bootstrap

    color = np.array([m["color"] for m in meta])
    y = np.array([m["material"] == "fragile" for m in meta])
    episode = np.array([m["seed"] for m in meta])
    correct = np.zeros(len(y), dtype=bool)
    for train in ("red", "blue"):
        fit, test = color == train, color != train
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        probe.fit(pooled[fit], y[fit])
        correct[test] = probe.predict(pooled[test]) == y[test]
    low, high = cluster_bootstrap(lambda c: float(np.mean(c)), episode, correct, n_boot=n_boot)
    return {"accuracy": float(correct.mean()), "ci": [low, high], "n_decisions": int(len(y)),
            "n_episodes": int(len(set(episode)))}  # fmt: skip


def discovery(acts: torch.Tensor, meta: list[dict], root: Path, name: str, layer: int,
              cfg: DecodabilityConfig) -> dict[str, Any]:  # fmt: skip
    """Decorrelated discovery on one (model, stream, layer)'s tokens (each store and SAE reused)."""
    from storage import marker_reads
    from studies.collect import StoreWriter
    from studies.sae_resources import sae_and_discovery

    store_dir = root / "store"
    if not marker_reads(store_dir / "dom_vector.safetensors"):
        import shutil

        shutil.rmtree(store_dir, ignore_errors=True)  # a half-written store of an interrupted run
        writer = StoreWriter(store_dir, acts.shape[-1], layer, name)
        positions = torch.arange(acts.shape[1]).expand(len(acts), -1)
        writer.add(iter([(0, acts, positions)]), meta, 0)
        writer.finish(len(acts))
    made = sae_and_discovery(store_dir, root / "sae", root / "discovery" / "discovery.json",
                             cfg.sae_steps, cfg.sae_expansion, None)  # fmt: skip
    result = json.loads((root / "discovery" / "discovery.json").read_text())
    effects = [
        abs(f["material_score"]) for f in result["features"] if f["feature"] in made["fragility"]
    ]
    return {"n_fragility_features": len(made["fragility"]), "fragility": made["fragility"][:10],
            "best_min_abs_d": max(effects, default=None), "sae_fve": float(made["metrics"].fve)}  # fmt: skip


def run_decodability(cfg: DecodabilityConfig, console: Any = None) -> dict[str, Any]:
    """Validate, collect (or reuse) the inputs, tap both models, probe and discover; returns
    the summary (also written to <out>/summary.json, last)."""
    from rich.console import Console

    from agents.pi0_agent import PI0Agent
    from agents.pi0_folder import pi0_dir
    from agents.pi0_model import load_pi0
    from storage import marker_reads, read_safetensors, write_json, write_safetensors
    from studies.collect import random_weights_backend

    cfg.validate()
    console = console or Console()
    root = Path(cfg.out)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("n_boot", "out")}
    if marker_reads(root / "config.json"):  # a resume: what was kept and trained must match
        before = json.loads((root / "config.json").read_text())
        if changed := {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}:
            raise ValueError(f"{root} was made with other settings ({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in changed.items())}): "
                             "its inputs, stores and SAEs do not fit them; choose another --out")  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", settings)
    trained = load_pi0(pi0_dir(cfg.model))
    agent = PI0Agent(trained, tap_layer=None)
    inputs_path, meta_path = root / "inputs.safetensors", root / "inputs.json"
    if marker_reads(meta_path):
        saved, doc = read_safetensors(inputs_path), json.loads(meta_path.read_text())
        inputs = {"frames": saved["frames"].numpy(), "states": saved["states"].numpy(), **doc}
    else:
        console.print(
            f"collecting the inputs of {cfg.decisions} decisions in each of {cfg.episodes} episodes"
        )
        inputs = collect_inputs(cfg, agent)
        write_safetensors(inputs_path, {"frames": torch.from_numpy(inputs["frames"]),
                                        "states": torch.from_numpy(inputs["states"])})  # fmt: skip
        # the marker, written last
        write_json(meta_path, {"texts": inputs["texts"], "meta": inputs["meta"]})
    models = {
        "trained": trained,
        "random weights": random_weights_backend(trained, seed=cfg.random_weights),
    }
    rows = []
    for name, backend in models.items():
        console.print(f"tapping every layer of both streams: {name}")
        acts = stream_activations(backend, inputs, agent.noise_scale, agent.steps)
        for (stream, layer), a in acts.items():
            slug = f"{name.replace(' ', '-')}/{stream}-L{layer}"
            found = discovery(
                a, inputs["meta"], root / slug, f"{cfg.model}:{stream}:{name}", layer, cfg
            )
            rows.append({"model": name, "stream": stream, "layer": layer, "tokens": int(a.shape[1]), "d": int(a.shape[2]),
                         "probe": cross_color_probe(a.mean(1).numpy(), inputs["meta"], cfg.n_boot), **found})  # fmt: skip
    labels = [m["material"] for m in inputs["meta"]]
    summary = {"config": asdict(cfg), "n_decisions": len(labels), "n_fragile": labels.count("fragile"),
               "n_episodes": cfg.episodes, "rows": rows}  # fmt: skip
    write_json(root / "summary.json", summary)
    print_decodability(summary, console)
    return summary


def print_decodability(summary: dict[str, Any], console: Any) -> None:
    """The sweep as a table (<= 80 columns)."""
    from rich.table import Table

    table = Table(title=f"material by stream × layer: {summary['n_decisions']} decisions, {summary['n_episodes']} "
                  "episodes; probe trained on one color, tested on the other")  # fmt: skip
    for col in ("model", "stream", "layer", "probe [95% CI]", "features", "best |d|"):
        table.add_column(col)
    for r in summary["rows"]:
        p = r["probe"]
        best = "–" if r["best_min_abs_d"] is None else f"{r['best_min_abs_d']:.2f}"
        table.add_row(r["model"], r["stream"], str(r["layer"]), f"{p['accuracy']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]",
                      str(r["n_fragility_features"]), best)  # fmt: skip
    console.print(table)
