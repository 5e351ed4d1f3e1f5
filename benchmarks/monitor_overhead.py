"""SARM monitor overhead per control step, as a ratio to the unmonitored agent step, in one run.

For each scorer, episodes alternate between the closed loop without a monitor and with the
scorer's SARMMonitor in shadow mode (it scores every decision and never changes an action, so
both see the same trajectories). The loop times each part of a step:
- agent: `agent.act` (the VLM forward at decision steps, the expert otherwise), frame render
  at decision steps excluded;
- monitor: the wrapper's own work (`SARMMonitor.overhead_s`: reading the tap, scoring new
  activations, bookkeeping before and after the env step), the env step excluded.
Ratios: monitor / agent (the target, ≤ 1%); monitor / whole unmonitored control step (render
at decision steps + act + env step); and the A/B ratio of whole control steps with vs without
the wrapper, minus 1 (noisier: two measurements).

    OMP_NUM_THREADS=1 python benchmarks/monitor_overhead.py [--model tiny] [--episodes 4]
        [--scorers sae,mahalanobis,pca] [--sae-latents 256]

Without the trained checkpoint (agents/tiny_vlm/) it uses a random-weight tiny model: same
architecture, same cost.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table


def load_agent(model: str, decide_every: int):  # noqa: ANN201
    from agents.backend import VLMBackend
    from agents.tiny_model import TINY_VLM_DIR, build_tiny_model
    from agents.vlm_agent import VLMAgent

    if model == "tiny" and not (TINY_VLM_DIR / "model.safetensors").is_file():
        m, p = build_tiny_model(seed=0)
        return VLMAgent(VLMBackend(m, p), decide_every=decide_every), "tiny (random weights)"
    return VLMAgent(model, decide_every=decide_every, device="cpu"), model


def episode(loop, seed: int) -> dict[str, float]:  # noqa: ANN001
    """One episode through the closed loop; its agent, monitor and whole-step times and steps."""
    from rollouts.episode import EpisodeSpec

    (record,) = loop.run([EpisodeSpec(seed)])
    row = record.row
    return {"agent": row["agent_s"], "monitor": row["monitor_s"], "total": row["wall_s"],
            "steps": row["steps"], "record": record}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--episodes", type=int, default=4, help="episode pairs per scorer")
    parser.add_argument("--decide-every", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scorers", default="sae,mahalanobis,pca", help="comma-separated kinds")
    parser.add_argument("--sae-latents", type=int, default=None,
                        help="SAE dictionary size (default: sae.default_config, 4 × d)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from monitors.scorers import make_scorer
    from rollouts.episode import ClosedLoop

    agent, label = load_agent(args.model, args.decide_every)
    plain = ClosedLoop(agent, max_steps=args.max_steps)
    tokens: list = []
    for seed in range(2):
        acts = episode(plain, 10_000 + seed)["record"].activations
        tokens += [a[: int(acts["n_image_tokens"])] for a in acts["decision"]]
    table = Table(title=f"SARM overhead per step, {label}, decide every {args.decide_every}")
    for col in ("scorer", "agent ms/step", "control step ms", "monitor ms/step",
                "monitor / agent", "monitor / control step", "A/B step ratio − 1", "target"):  # fmt: skip
        table.add_column(col)
    sae_kwargs: dict = {"steps": 200}
    if args.sae_latents is not None:
        sae_kwargs["sae_overrides"] = {"n_latents": args.sae_latents}
    for kind in args.scorers.split(","):
        scorer = make_scorer(kind, **(sae_kwargs if kind == "sae" else {})).fit(tokens)
        scorer.calibrate(scorer.score_many(tokens), method="sigma", k=2)
        name = kind
        if kind == "sae":
            name = f"sae ({scorer.sae.n_latents} latents, k {scorer.sae.config.k})"
        # Shadow mode (no monitor enforces): the monitored episodes follow the same trajectories.
        monitored = ClosedLoop(agent, max_steps=args.max_steps, scorers={kind: scorer})
        plain_steps, mon_steps, agent_t, agent_n, mon_t, mon_n = [], [], 0.0, 0, 0.0, 0
        for i in range(args.episodes):
            seed = 20_000 + i
            a = episode(plain, seed)
            b = episode(monitored, seed)
            plain_steps.append(a["total"] / a["steps"])
            mon_steps.append(b["total"] / b["steps"])
            agent_t += a["agent"] + b["agent"]
            agent_n += a["steps"] + b["steps"]
            mon_t, mon_n = mon_t + b["monitor"], mon_n + b["steps"]
        monitored.close()
        agent_ms = 1000 * agent_t / agent_n
        mon_ms = 1000 * mon_t / mon_n
        step_ms = 1000 * statistics.mean(plain_steps)
        ab = statistics.median(mon_steps) / statistics.median(plain_steps) - 1
        table.add_row(name, f"{agent_ms:.3f}", f"{step_ms:.3f}", f"{mon_ms:.4f}",
                      f"{mon_ms / agent_ms:.2%}", f"{mon_ms / step_ms:.2%}", f"{ab:+.2%}", "≤ 1%")  # fmt: skip
    plain.close()
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
