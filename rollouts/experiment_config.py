"""The configuration of an experiment (`ExperimentConfig`, saved as config.json): every setting,
its validation before any work, and what a run's folder and fingerprint are made of.

The engine that runs it is rollouts.runner (batches, the per-worker `EpisodeRunner`) and
rollouts.experiment (`run_experiment`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.action_tokens import DECODING_RULES, DEFAULT_DECODING
from envs.objects import PATTERNS
from envs.sim import DEFAULT_RENDERER, RENDERERS
from rollouts.conditions import ENV_KINDS, Condition, parse_conditions

AGENTS = ("vlm", "scripted", "vla", "pi0")
MATERIALS = (None, "fragile", "rigid")
EXECUTORS = ("serial", "processes", "ray")


@dataclass
class ExperimentConfig:
    """Everything that defines an experiment (saved as config.json).

    Attributes:
        name: run folder name under `out`.
        conditions: condition strings (see rollouts.conditions), steering or perturbation.
        seeds: env seeds; every condition runs every seed (paired design).
        material: force this material in every episode (None = balanced design).
        agent: "vlm" (VLMAgent planner), "vla" (VLAAgent: its own action tokens move the arm),
            "pi0" (PI0Agent: a π0 checkpoint's flow-matching action chunks move the arm; `model`
            is its folder) or "scripted" (oracle; no model).
        model: "tiny" (the embedded tiny VLM, or with agent "vla" the embedded tiny VLA), a
            local folder or a hub id.
        layer: decoder layer of the tap and of every intervention (None = agent default).
        decide_every: steps between VLM decisions (planner).
        chunk: actions a VLA or π0 executes per forward (None: its checkpoint's horizon or chunk).
        denoise_steps: a π0's flow-matching steps per decision (None: its config's).
        stream: the π0 stream taps, steering and monitors use: "vlm" (prefix) or "expert".
        variance_draws: a π0's extra noise draws per decision (its "sample_variance" signal).
        noise_scale, blend: a π0's starting-noise scale in [0, 2] and the previous decision's
            share of each overlapping action in [0, 1) (None: its checkpoint's, else 1 and 0).
        decoding: how a VLA turns its action-token logits into actions: "expectation" (the
            default), "gated" (the expectation, the gripper first decided open or closed) or
            "argmax" (agents.action_tokens).
        threshold: P(fragile) at or above which the agent handles gently.
        image_size: camera frame size.
        max_steps: steps before truncation.
        object_pattern: how objects are drawn: "material" (the surface pattern marks the
            material) or "plain" (every object plain in its color: the material cue removed
            from the frame, physics unchanged; the control of "handling comes from vision").
        renderer: camera frames from "tiny-layered" (TinyRenderer, what the tiny models were
            trained on, the static scene drawn once per episode: the pixels of "tiny", one pass,
            ~3× faster), "egl" (PyBullet's EGL plugin, lit differently) or "auto". A run
            resumes only with the renderer it was made with.
        unbreakable: fragile objects never break (forces still tracked): the peak grip force
            on a fragile object is the whole grip, not cut short at the breaking threshold
            (breakage and its consequences are then not measured).
        sae, discovery, vector: resources for steered conditions.
        methods: a folder of fitted steering methods (`<name>/method.json`, written by
            `physteer steer-bench`), steered with `method:<name>:<strength>` conditions.
        method_files: Python files defining a user's own steering methods (steering.registry),
            imported before the methods folder is read.
        monitors: saved SARM scorer folders (`physteer sarm-eval` writes them under
            scorers/); each scores every decision of every episode, named by its folder.
        explainer: a folder with an SAE (`sae/`) and its clean reference (`explainer.safetensors`,
            monitors.explain): every alarm of every monitor names the SAE latents that moved most
            (step column `explain:<monitor>`). None: no explanations.
        enforce: monitor arms: each (condition, seed) runs once per arm, with that monitor's
            vetoes enforced ("none": every monitor only scores). None = one arm per monitor
            ("none" when there is no monitor).
        shadow_reuse: an enforcing arm's episode whose monitor never alarmed in the shadow arm
            ("none") is copied from it, not run (identical by construction;
            rollouts.shadow_arms). False runs every arm.
        on_veto: "hold" (safe action), "stop" (truncate) or "fallback" (the gentle expert
            drives the rest of the episode) when the enforcing monitor vetoes.
        tokens: rows a monitor scores: "image" or "all" (+ the last token).
        holding: record the holding state before release (world-model probe), for agents whose
            model answers the fragility question (the planner, the token VLA; not a π0).
        videos: record MP4s for the first this-many seeds of each condition.
        executor: "serial" (this process), "processes" (a local pool of `workers`) or "ray".
        workers: processes, or Ray actors, each holding its own model (1 = in this process).
        envs_per_worker: environments a worker steps together, their decision frames
            answered in one batched forward.
        address: Ray cluster address (None: start a local one with `workers` CPUs).
        gpus_per_worker: GPU share of each Ray actor.
        device: torch device of the model ("cpu", "cuda", "auto").
        dtype: torch dtype of the model ("float32", "bfloat16", "float16").
        out: parent folder of run folders.
    """

    name: str = "experiment"
    conditions: list[str] = field(default_factory=lambda: ["unsteered"])
    seeds: list[int] = field(default_factory=lambda: list(range(4)))
    material: str | None = None
    agent: str = "vlm"
    model: str = "tiny"
    layer: int | None = None
    decide_every: int = 10
    chunk: int | None = None
    denoise_steps: int | None = None
    stream: str = "vlm"
    variance_draws: int = 0
    noise_scale: float | None = None
    blend: float | None = None
    decoding: str = DEFAULT_DECODING
    threshold: float = 0.5
    image_size: int = 384
    max_steps: int = 200
    object_pattern: str = "material"
    renderer: str = DEFAULT_RENDERER
    unbreakable: bool = False
    sae: str | None = None
    discovery: str | None = None
    vector: str | None = None
    methods: str | None = None
    method_files: list[str] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)
    explainer: str | None = None
    enforce: list[str] | None = None
    shadow_reuse: bool = True
    on_veto: str = "hold"
    tokens: str = "image"
    holding: bool = True
    videos: int = 0
    executor: str = "processes"
    workers: int = 1
    envs_per_worker: int = 1
    address: str | None = None
    gpus_per_worker: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    out: str = "runs"

    def validate(self) -> list[Condition]:
        """Check every field before any episode runs; return the parsed conditions."""

        def allowed(field_name: str, value: Any, choices: tuple) -> None:
            if value not in choices:
                raise ValueError(
                    f"{field_name} {value!r} is not allowed; choose one of {list(choices)}"
                )

        allowed("agent", self.agent, AGENTS)
        allowed("material", self.material, MATERIALS)
        allowed("executor", self.executor, EXECUTORS)
        allowed("object_pattern", self.object_pattern, PATTERNS)
        allowed("renderer", self.renderer, RENDERERS)
        allowed("decoding", self.decoding, DECODING_RULES)
        allowed("stream", self.stream, ("vlm", "expert") if self.agent == "pi0" else ("vlm",))
        if self.variance_draws not in (range(65) if self.agent == "pi0" else (0,)) or (
                (self.noise_scale, self.blend) != (None, None) and self.agent != "pi0"):  # fmt: skip
            raise ValueError(f"variance_draws {self.variance_draws!r}, noise_scale {self.noise_scale!r}, blend {self.blend!r}: a π0's "
                             f"sampling (0..64 draws, a scale in [0, 2], a blend in [0, 1)); agent {self.agent!r} takes 0, none, none")  # fmt: skip
        from monitors.sarm import ON_VETO, TOKEN_SELECTIONS

        allowed("on_veto", self.on_veto, ON_VETO)
        allowed("tokens", self.tokens, TOKEN_SELECTIONS)
        from agents.resolve import DEVICES, DTYPES

        allowed("dtype", self.dtype, tuple(DTYPES))
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(
                f"device {self.device!r} is not allowed; choose one of {list(DEVICES)} or cuda:N"
            )
        if (
            not self.seeds
            or len(set(self.seeds)) != len(self.seeds)
            or any(s < 0 for s in self.seeds)
        ):
            raise ValueError(f"seeds must be a non-empty list of distinct ints >= 0, got {self.seeds}")  # fmt: skip
        for name, low in (("workers", 1), ("envs_per_worker", 1), ("decide_every", 1), ("max_steps", 1),
                          ("image_size", 16), ("videos", 0)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed; it must be an int >= {low}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold!r} is not allowed; it must be in [0, 1]")
        if not 0.0 <= self.gpus_per_worker:
            raise ValueError(f"gpus_per_worker={self.gpus_per_worker!r} must be >= 0")
        if self.executor == "serial" and self.workers != 1:
            raise ValueError(
                f"executor 'serial' runs in this process: workers={self.workers} needs 'processes' or 'ray'"
            )
        if self.executor == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ValueError(
                    "executor 'ray' needs Ray: pip install -c constraints.txt -e '.[ray]'"
                )
        conditions = parse_conditions(self.conditions)
        names = self.monitor_names()
        for arm in self.arms():
            if arm != "none" and arm not in names:
                raise ValueError(
                    f"enforce arm {arm!r} is not a monitor; monitors: {names} (or 'none')"
                )
        if (
            self.explainer is not None
            and not (Path(self.explainer) / "explainer.safetensors").is_file()
        ):
            raise ValueError(f"explainer {self.explainer}: no explainer.safetensors there (physteer monitor-bench writes one "
                             "beside its SAE scorer)")  # fmt: skip
        if self.monitors and self.agent == "scripted":
            raise ValueError(
                "a SARM monitor needs a model agent, 'vlm' or 'vla' (it reads the agent's activations)"
            )
        if self.agent in ("vla", "pi0"):
            self._check_vla()
        if self.agent != "scripted" and self._model_dir()[1]:  # a corrupt weights file, named now
            from agents.resolve import check_weight_files

            check_weight_files(self._model_dir()[0])
        if self.agent == "scripted" and any(
            c.kind not in ("unsteered", *ENV_KINDS) for c in conditions
        ):
            raise ValueError(
                "steered or perturbed conditions need agent='vlm' (the scripted agent has no model)"
            )
        self._check_words(conditions)
        for path in self.monitors:
            if not (Path(path) / "scorer.json").is_file():
                raise FileNotFoundError(
                    f"monitor {path} is not a saved scorer folder (no scorer.json; `physteer sarm-eval` writes them)"
                )
        return conditions

    def _check_vla(self) -> None:
        """A VLA checkpoint must carry its action-token layout, a π0 its statistics and sizes."""
        if self.agent == "pi0":
            from agents.pi0_folder import check_pi0_folder

            check_pi0_folder(self.model, self.chunk, self.denoise_steps, self.noise_scale, self.blend)  # fmt: skip
            return
        from agents.vla_model import check_vla_folder

        check_vla_folder(self._vla_dir(), self.model, self.chunk)

    def _vla_dir(self) -> Path:
        """The VLA checkpoint folder: the embedded agents/tiny_vla for "tiny" / "tiny-vla"."""
        from agents.vla_model import TINY_VLA_DIR

        return TINY_VLA_DIR if self.model in ("tiny", "tiny-vla") else Path(self.model)

    def _model_dir(self) -> tuple[Path | str, bool]:
        """(the model's folder or hub id, whether it is a local folder) of a model agent."""
        from agents.pi0_folder import pi0_dir
        from agents.resolve import resolve_model_path

        if self.agent == "pi0":
            return pi0_dir(self.model), True
        return (self._vla_dir(), True) if self.agent == "vla" else resolve_model_path(self.model)

    def model_weights(self) -> str | None:
        """sha1 of the model's weight files (agents.resolve.weights_sha1; a π0's with its execution
        defaults, agents.pi0_folder.pi0_fingerprint), recorded in config.json so that a resume or a
        replay cannot mix checkpoints; None for the scripted agent and a hub id (the hub's files)."""
        from agents.pi0_folder import pi0_fingerprint
        from agents.resolve import weights_sha1

        path, local = self._model_dir() if self.agent != "scripted" else (None, False)
        return (pi0_fingerprint if self.agent == "pi0" else weights_sha1)(path) if local else None

    def _check_words(self, conditions: list[Condition]) -> None:
        """A neuron condition's word must be a token of the model: checked on its tokenizer
        alone, so that a misspelt word stops the run before its folder exists."""
        words = sorted(
            {c.concept or "fragile" for c in conditions if c.kind in ("neuron", "neuron-random")}
        )
        if not words or self.agent == "scripted":
            return
        from transformers import AutoTokenizer

        from agents.backend import answer_token_ids

        source = str(self._model_dir()[0])
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except OSError:
            return  # not readable offline: loading the model names the problem
        for word in words:
            answer_token_ids(tokenizer, word)

    def monitor_names(self) -> list[str]:
        """Each monitor's name: its folder's name (unique)."""
        names = [Path(p).name for p in self.monitors]
        if len(set(names)) != len(names):
            raise ValueError(f"monitor folders must have distinct names, got {names}")
        return names

    def arms(self) -> list[str]:
        """The monitor arms each (condition, seed) runs under."""
        if self.enforce is not None:
            if not self.enforce or len(set(self.enforce)) != len(self.enforce):
                raise ValueError(
                    f"enforce must be a non-empty list of distinct arms, got {self.enforce}"
                )
            return list(self.enforce)
        return self.monitor_names() or ["none"]

    def video_seeds(self) -> set[int]:
        """The seeds recorded as MP4 in every condition: the first `videos` of them."""
        return set(sorted(self.seeds)[: self.videos])

    @property
    def run_dir(self) -> Path:
        """Where this run's files go."""
        return Path(self.out) / self.name

    def replay_dict(self) -> dict[str, Any]:
        """The fields that determine episodes (how and where they run do not)."""
        d = asdict(self)
        for k in ("workers", "videos", "out", "executor", "envs_per_worker", "address", "gpus_per_worker", "shadow_reuse"):  # fmt: skip
            d.pop(k)
        return d
