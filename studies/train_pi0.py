"""`physteer train-pi0`: a tiny π0 from the env's own demonstrations, with DAgger rounds.

1. Noisy-oracle demonstrations (rollouts.vla_demos.collect_demonstrations: the scripted expert
   handles each object as its material asks while noise perturbs the executed motion; the
   labels are the clean action chunks), seeds from 7,000,000.
2. Flow-matching training of a new π0 of the recipe's sizes on them (agents.train_pi0).
3. `dagger_rounds` rounds: the π0 drives `dagger_episodes` episodes, the oracle labels every
   state it reaches (agents.dagger.DaggerAgent); the rows join the data and training goes on
   from the current weights.
4. The checkpoint folder (weights, tokenizer, statistics) with training_report.json: sizes,
   rows, losses, seconds, package versions. Closed-loop figures: `physteer agent-eval --agent
   pi0 --model OUT --pattern-control`.

    physteer train-pi0 --episodes 64 --steps 2000 --dagger-rounds 1 --out-dir runs/train-pi0/ckpt
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

DEMO_SEED, DAGGER_SEED, HELD_OUT_SEED = 7_000_000, 7_500_000, 7_900_000


@dataclass
class TrainPI0RecipeConfig:
    """Settings of `physteer train-pi0` (the model's sizes and optimisation: agents.train_pi0).

    Attributes:
        out_dir: the checkpoint folder to write.
        episodes: noisy-oracle demonstration episodes (a multiple of 16 is balanced).
        frame_every: keep every this-many steps of an episode (and every early one).
        steps: training steps of the first round.
        dagger_rounds: DAgger rounds after it.
        dagger_episodes: episodes the π0 drives in each round.
        dagger_steps: training steps after each round.
        held_out_episodes: demonstration episodes of other seeds (from 7,900,000) on which the
            report gives the final flow-matching loss beside the training rows' (0: none).
        n_action_steps: actions an agent executes per decision by default, written to the
            checkpoint (None: the whole chunk).
        noise_scale: the agents' default starting-noise scale in [0, 2], written to the
            checkpoint (None: 1, π0's own sampling); the DAgger rounds sample with it too.
        blend: the agents' default share of the previous decision in each overlapping action,
            in [0, 1), written to the checkpoint (None: 0); the DAgger rounds use it too.
        hidden, expert_hidden, layers, image_size, patch, chunk, denoise_steps: the model's
            sizes (agents.train_pi0.TrainPI0Config).
        batch_size, lr, schedule, seed: the optimisation (agents.train_pi0.TrainPI0Config).
        material_weight: weight of the VLM's material loss beside the flow's (0: none; a
            training-only head reads fragile from the image tokens, agents.train_pi0).
        threads: torch threads while training.
    """

    out_dir: str = "runs/train-pi0/ckpt"
    episodes: int = 64
    frame_every: int = 2
    steps: int = 2000
    dagger_rounds: int = 0
    dagger_episodes: int = 32
    dagger_steps: int = 1000
    held_out_episodes: int = 16
    hidden: int = 128
    expert_hidden: int = 64
    layers: int = 3
    image_size: int = 128
    patch: int = 16
    chunk: int = 8
    n_action_steps: int | None = None
    noise_scale: float | None = None
    blend: float | None = None
    denoise_steps: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    schedule: str = "cosine"
    seed: int = 0
    material_weight: float = 0.0
    threads: int = 2

    def model_config(self, steps: int) -> Any:
        from agents.train_pi0 import TrainPI0Config

        keys = ("hidden", "expert_hidden", "layers", "image_size", "patch", "chunk", "denoise_steps",
                "batch_size", "lr", "schedule", "seed", "material_weight")  # fmt: skip
        return TrainPI0Config(steps=steps, **{k: getattr(self, k) for k in keys})

    def validate(self) -> None:
        """ValueError naming the first bad setting, before any episode."""
        for name, low in (("episodes", 2), ("frame_every", 1), ("steps", 1), ("dagger_rounds", 0),
                          ("dagger_episodes", 1), ("dagger_steps", 1), ("held_out_episodes", 0), ("threads", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: must be an int >= {low}")
        self.model_config(self.steps).validate()
        if self.noise_scale is not None:
            from agents.pi0_folder import check_noise_scale

            check_noise_scale(self.noise_scale)
        if self.blend is not None:
            from agents.pi0_folder import check_blend

            check_blend(self.blend)
        if self.n_action_steps is not None and not (
            isinstance(self.n_action_steps, int) and 1 <= self.n_action_steps <= self.chunk
        ):
            raise ValueError(
                f"n_action_steps={self.n_action_steps!r}: must be an int in 1..chunk={self.chunk}"
            )


def train_pi0_recipe(cfg: TrainPI0RecipeConfig, console: Any) -> dict[str, Any]:
    """Run the recipe (module docstring); returns the training report."""
    import torch

    from agents.dagger import DaggerAgent
    from agents.pi0_agent import PI0Agent
    from agents.protocol import ScriptedAgent
    from agents.train_pi0 import flow_loss, save_pi0, train_pi0
    from agents.vla_data import Demonstrations
    from rollouts.vla_demos import collect_demonstrations, oracle_profiles

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    start = time.time()
    demos = collect_demonstrations(
        cfg.episodes, DEMO_SEED, horizon=cfg.chunk, frame_every=cfg.frame_every
    )
    console.print(
        f"demonstrations: {len(demos)} rows of {cfg.episodes} episodes ({time.time() - start:.0f} s)"
    )
    backend, history = train_pi0(demos, cfg.model_config(cfg.steps))
    rounds = [
        {"round": 0, "rows": len(demos), "loss": history, "seconds": round(time.time() - start, 1)}
    ]
    console.print(f"round 0: loss {history[0]['loss']:.3f} → {history[-1]['loss']:.3f}")
    for r in range(1, cfg.dagger_rounds + 1):
        agent = DaggerAgent(PI0Agent(backend, chunk=cfg.n_action_steps or cfg.chunk, tap_layer=None,
                                     noise_scale=cfg.noise_scale, blend=cfg.blend),
                            ScriptedAgent(oracle_profiles(), recover=True))  # fmt: skip
        more = collect_demonstrations(cfg.dagger_episodes, DAGGER_SEED + 1000 * r, horizon=cfg.chunk,
                                      frame_every=cfg.frame_every + 1, agent=agent, n_envs=4)  # fmt: skip
        demos = Demonstrations.concat([demos, more])
        backend, history = train_pi0(demos, cfg.model_config(cfg.dagger_steps), backend=backend)
        rounds.append(
            {
                "round": r,
                "rows": len(demos),
                "loss": history,
                "seconds": round(time.time() - start, 1),
            }
        )
        console.print(
            f"round {r}: {len(more)} DAgger rows; loss {history[0]['loss']:.3f} → {history[-1]['loss']:.3f}"
        )
    import transformers

    report = {"config": asdict(cfg), "rounds": rounds, "seconds": round(time.time() - start, 1),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}  # fmt: skip
    if cfg.held_out_episodes:
        held = collect_demonstrations(cfg.held_out_episodes, HELD_OUT_SEED, horizon=cfg.chunk,
                                      frame_every=cfg.frame_every)  # fmt: skip
        report["held_out"] = {"episodes": cfg.held_out_episodes, "rows": len(held), "seed": HELD_OUT_SEED,
                              "loss": round(flow_loss(backend, held), 4),
                              "training_rows_loss": round(flow_loss(backend, demos, n_rows=len(held)), 4)}  # fmt: skip
        console.print(f"held-out flow-matching loss {report['held_out']['loss']:.3f} "
                      f"(training rows {report['held_out']['training_rows_loss']:.3f})")  # fmt: skip
    save_pi0(backend, cfg.out_dir, report, n_action_steps=cfg.n_action_steps, noise_scale=cfg.noise_scale,
             blend=cfg.blend)  # fmt: skip
    console.print(f"wrote {cfg.out_dir} ({report['seconds']:.0f} s); closed loop: physteer agent-eval --agent pi0 "
                  f"--model {cfg.out_dir} --pattern-control")  # fmt: skip
    return report
