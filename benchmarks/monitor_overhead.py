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

A second table, per decision, puts each scorer beside the tiny model's decision forward
(`VLMBackend.prob_yes` on one frame, median): `score()` timed directly on one decision's rows
(median), and the monitor's in-loop time per decision (`monitor_s` over the decisions it
scored; the wrapper's per-step bookkeeping included), each as a share of the forward. Scorers:
SAE, Mahalanobis, PCA, the linear probe (monitors.probe; it reads the image tokens and the
last token) and the combined max of SAE and Mahalanobis (monitors.combined).

    OMP_NUM_THREADS=1 python benchmarks/monitor_overhead.py [--model tiny] [--episodes 4]
        [--scorers sae,mahalanobis,pca,probe,combined] [--sae-latents 256] [--repeats 30]

Without the trained checkpoint (agents/tiny_vlm/) it uses a random-weight tiny model: same
architecture, same cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def build_scorers(
    kinds: list[str], tokens: list, decisions: list, n_img: int, sae_kwargs: dict
) -> dict:
    """Every scorer kind fitted on the clean decisions and calibrated (mean + 2·std of its own
    scores): anomaly scorers on the image tokens; the probe on every row against the same
    decisions shifted along a random direction (its cost does not depend on what it learnt);
    the combined scorer over the SAE and Mahalanobis scorers (fitted for it if not listed)."""
    from monitors.combined import CombinedScorer
    from monitors.probe import LinearProbeScorer
    from monitors.scorers import make_scorer

    out: dict = {}
    for kind in [k for k in kinds if k != "combined"] + (
        ["combined"] if "combined" in kinds else []
    ):
        if kind == "probe":
            g = torch.Generator().manual_seed(0)
            shift = torch.randn(decisions[0].shape[1], generator=g)
            s = LinearProbeScorer(n_image_tokens=n_img).fit(
                decisions, [d + shift for d in decisions]
            )
            s.calibrate(s.score_many(decisions), method="sigma", k=2)
        elif kind == "combined":
            parts = [out.get(k) or build_scorers([k], tokens, decisions, n_img, sae_kwargs)[k]
                     for k in ("sae", "mahalanobis")]  # fmt: skip
            s = CombinedScorer(parts)
            s.calibrate(s.score_many(tokens), method="sigma", k=2)
        else:
            s = make_scorer(kind, **(sae_kwargs if kind == "sae" else {})).fit(tokens)
            s.calibrate(s.score_many(tokens), method="sigma", k=2)
        out[kind] = s
    return out


def median_ms(fn, repeats: int) -> float:  # noqa: ANN001
    """Median wall time of `fn()` in ms over `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def decision_forward_ms(agent, repeats: int) -> float:  # noqa: ANN001
    """The tiny model's decision: `VLMBackend.prob_yes` on one env frame (inputs, forward,
    P(yes)), median over `repeats`."""
    from envs import FrankaPickEnv

    env = FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=384)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    return median_ms(lambda: agent.backend.prob_yes([frame], agent.question), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--episodes", type=int, default=4, help="episode pairs per scorer")
    parser.add_argument("--decide-every", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scorers", default="sae,mahalanobis,pca,probe,combined", help="comma-separated kinds"
    )
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed calls per decision-level median"
    )
    parser.add_argument("--sae-latents", type=int, default=None,
                        help="SAE dictionary size (default: sae.default_config, 4 × d)")  # fmt: skip
    args = parser.parse_args()
    kinds = args.scorers.split(",")
    from monitors.scorers import scorer_kinds

    bad = [k for k in kinds if k not in scorer_kinds()]
    if bad or args.episodes < 1 or args.repeats < 1:
        parser.error(
            f"--scorers {bad} not among {scorer_kinds()}"
            if bad
            else "--episodes and --repeats must be >= 1"
        )
    torch.set_num_threads(args.threads)

    from rollouts.episode import ClosedLoop

    agent, label = load_agent(args.model, args.decide_every)
    plain = ClosedLoop(agent, max_steps=args.max_steps)
    tokens: list = []
    decisions: list = []
    for seed in range(2):
        acts = episode(plain, 10_000 + seed)["record"].activations
        n_img = int(acts["n_image_tokens"])
        tokens += [a[:n_img] for a in acts["decision"]]
        decisions += list(acts["decision"])
    table = Table(title=f"SARM overhead per step, {label}, decide every {args.decide_every}")
    for col in ("scorer", "agent ms/step", "control step ms", "monitor ms/step",
                "monitor / agent", "monitor / control step", "A/B step ratio − 1", "target"):  # fmt: skip
        table.add_column(col)
    forward_ms = decision_forward_ms(agent, args.repeats)
    per_decision = Table(title=f"SARM overhead per decision, {label}: beside the decision forward "
                               f"(prob_yes on one frame, {forward_ms:.2f} ms median of {args.repeats})")  # fmt: skip
    for col in ("scorer", "rows scored", "score() ms (median)", "score / forward",
                "monitor ms/decision (in loop)", "monitor / forward"):  # fmt: skip
        per_decision.add_column(col)
    sae_kwargs: dict = {"steps": 200}
    if args.sae_latents is not None:
        sae_kwargs["sae_overrides"] = {"n_latents": args.sae_latents}
    scorers = build_scorers(kinds, tokens, decisions, n_img, sae_kwargs)
    for kind in kinds:
        scorer = scorers[kind]
        name = kind
        if kind == "sae":
            name = f"sae ({scorer.sae.n_latents} latents, k {scorer.sae.config.k})"
        # Shadow mode (no monitor enforces): the monitored episodes follow the same trajectories.
        monitored = ClosedLoop(agent, max_steps=args.max_steps, scorers={kind: scorer})
        plain_steps, mon_steps, agent_t, agent_n, mon_t, mon_n, n_dec = [], [], 0.0, 0, 0.0, 0, 0
        for i in range(args.episodes):
            seed = 20_000 + i
            a = episode(plain, seed)
            b = episode(monitored, seed)
            plain_steps.append(a["total"] / a["steps"])
            mon_steps.append(b["total"] / b["steps"])
            agent_t += a["agent"] + b["agent"]
            agent_n += a["steps"] + b["steps"]
            mon_t, mon_n = mon_t + b["monitor"], mon_n + b["steps"]
            n_dec += b["record"].row["decisions"]
        monitored.close()
        agent_ms = 1000 * agent_t / agent_n
        mon_ms = 1000 * mon_t / mon_n
        step_ms = 1000 * statistics.mean(plain_steps)
        ab = statistics.median(mon_steps) / statistics.median(plain_steps) - 1
        table.add_row(name, f"{agent_ms:.3f}", f"{step_ms:.3f}", f"{mon_ms:.4f}",
                      f"{mon_ms / agent_ms:.2%}", f"{mon_ms / step_ms:.2%}", f"{ab:+.2%}", "≤ 1%")  # fmt: skip
        rows = decisions if getattr(scorer, "tokens", None) == "all" else tokens
        score_ms = median_ms(lambda s=scorer, x=rows[0]: s.score(x), args.repeats)
        loop_ms = 1000 * mon_t / max(n_dec, 1)
        per_decision.add_row(name, f"{rows[0].shape[0]}", f"{score_ms:.4f}", f"{score_ms / forward_ms:.2%}",
                             f"{loop_ms:.4f} (n={n_dec})", f"{loop_ms / forward_ms:.2%}")  # fmt: skip
    plain.close()
    console = Console(width=160)
    console.print(table)
    console.print(per_decision)


if __name__ == "__main__":
    main()
