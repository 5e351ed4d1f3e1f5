"""sarm-eval's derived scorers: the raw-activation linear probe and the combined scorer.

Both are fitted in sarm-eval's fit stage (studies.sarm.eval.fit_scorers), after the anomaly
scorers, the TA2 vector and the contrast feature, and before scorers/fit.json is written:

- "probe" (monitors.probe.LinearProbeScorer): a fourth experiment, `probe-fit/`, runs the
  training attacks (`SarmEvalConfig.probe_attacks`, default TA2 ×4 and image noise 0.2) on the
  scorer-fit seeds, the seeds the anomaly scorers are fitted on: disjoint from the calibration
  and eval seeds. The probe learns the clean decisions of those seeds (the fit run) against
  the perturbed decisions (those at or after each attack's onset), reading every row of a
  decision: the image tokens pooled and the last token. Its threshold is calibrated like every
  scorer's, on the clean calibration episodes. Eval perturbations whose kind it was not trained
  on are its held-out kinds: `summary["probe"]` lists, per eval perturbation, whether its kind
  was trained on or held out, beside the probe's and the anomaly scorers' detection and AUC.
- "combined" (monitors.combined.CombinedScorer): the max of `SarmEvalConfig.combined_parts`'
  scores (default SAE and Mahalanobis), each divided by its calibrated threshold, recalibrated
  with the same method and settings on the same clean calibration episodes (the same clean
  false-alarm target as its parts). `summary["combined"]` names its parts and thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Scorer kinds fitted here rather than on clean activations alone.
DERIVED_SCORERS = ("probe", "combined")


def attack_kind(condition: str) -> str:
    """The kind of a perturbation condition ("ta2:4@10" → "ta2"; "sae:contrast:50@10" → "sae")."""
    from rollouts.conditions import parse_condition

    return parse_condition(condition.replace(":contrast:", ":0:")).kind


def _calibrate(cfg: Any, scorer: Any, episodes: list[list[torch.Tensor]]) -> dict[str, Any]:
    """Calibrate `scorer` on clean calibration episodes as fit_scorers does; its side-by-side
    calibration table."""
    from monitors.calibration import calibrate_episodes, calibration_table
    from studies.sarm.data import COMPARED_CALIBRATIONS

    method, split = cfg.calibration_method, cfg.seed_split()
    settings = {"k": cfg.k, "fpr": cfg.fpr or 0.05, "alpha": cfg.alpha}
    per_episode = [scorer.score_many(e) for e in episodes]
    scorer.calibration = calibrate_episodes(
        per_episode, method, seeds=split["calibration"], **settings
    )
    return calibration_table(per_episode, (method, *COMPARED_CALIBRATIONS), **settings)


def attacked_decisions(run_dir: Path, condition: str, seed: int) -> list[torch.Tensor]:
    """Every row of each decision an unmonitored episode made at or after its attack's onset."""
    from safetensors.torch import load_file

    from rollouts.conditions import parse_condition
    from rollouts.logs import RunLog

    acts = load_file(
        str(RunLog(run_dir).episode_path(condition, seed, "activations", "safetensors"))
    )
    onset = parse_condition(condition).onset or 0
    return [
        a
        for a, step in zip(acts["decision"], acts["decision_steps"].tolist(), strict=True)
        if step >= onset
    ]


def _fit_meta(fit_dir: Path, seed: int) -> tuple[int, int]:
    """(n_image_tokens, layer) of the fit run's decision activations."""
    from safetensors.torch import load_file

    from rollouts.logs import RunLog

    acts = load_file(
        str(RunLog(fit_dir).episode_path("unsteered", seed, "activations", "safetensors"))
    )
    return int(acts["n_image_tokens"]), int(acts["layer"])


def _contrast_feature(cfg: Any, fit_dir: Path) -> int:
    """The contrast latent for probe attacks named sae:contrast:… when the eval runs none (the
    SAE scorer's SAE, or one trained on the fit decisions, saved as the run's `sae/`)."""
    import pyarrow.parquet as pq

    from monitors.attacks import contrast_feature
    from monitors.sae_scorer import SAEReconstructionScorer
    from monitors.scorers import load_scorer
    from studies.sarm.data import decision_activations

    out, seeds = Path(cfg.out), cfg.seed_split()["fit"]
    material = {
        e["seed"]: e["material"] for e in pq.read_table(fit_dir / "episodes.parquet").to_pylist()
    }
    fit = {s: decision_activations(fit_dir, "unsteered", s, cfg.tokens) for s in seeds}
    saved = out / "scorers" / f"sae-{cfg.aggregate}"
    sae = (load_scorer(saved).sae if (saved / "scorer.json").is_file()
           else SAEReconstructionScorer(steps=cfg.sae_steps).fit([a for d in fit.values() for a in d]).sae)  # fmt: skip
    if not (out / "sae").is_dir():
        sae.save(
            out / "sae", metadata={"model": cfg.model_id, "layer": _fit_meta(fit_dir, seeds[0])[1]}
        )
    by = {
        m: [a for s, d in fit.items() if material[s] == m for a in d] for m in ("fragile", "rigid")
    }
    return contrast_feature(sae, [torch.cat(by["fragile"])], [torch.cat(by["rigid"])])


def fit_probe(
    cfg: Any, fit_dir: Path, feature: int | None, log: Any = print
) -> tuple[Any, dict[str, Any]]:
    """Run the probe's training attacks on the scorer-fit seeds, fit and calibrate the probe.

    Returns:
        (the calibrated LinearProbeScorer, {"info": training conditions and kinds, seeds,
        decision counts; "calibration": its calibration table}).
    """
    from monitors.probe import LinearProbeScorer
    from rollouts.experiment import run_experiment
    from studies.sarm.data import decision_activations

    out, split = Path(cfg.out), cfg.seed_split()
    if feature is None and any(attack_kind(p) == "sae" for p in cfg.probe_conditions):
        feature = _contrast_feature(cfg, fit_dir)  # also saves the SAE its overdrive edits
    conditions = [p.replace(":contrast:", f":{feature}:") for p in cfg.probe_conditions]
    sae = out / "sae"
    run = run_experiment(cfg.experiment("probe-fit", split["fit"], conditions, vector=str(out / "perturbation_vector.safetensors"),
                                        sae=str(sae) if sae.is_dir() else None), progress=False)  # fmt: skip
    clean = [a for s in split["fit"] for a in decision_activations(fit_dir, "unsteered", s, "all")]
    attacked = [a for c in conditions for s in split["fit"] for a in attacked_decisions(run, c, s)]
    n_img, layer = _fit_meta(fit_dir, split["fit"][0])
    kinds = sorted({attack_kind(c) for c in conditions})
    probe = LinearProbeScorer(
        n_image_tokens=n_img, aggregate=cfg.aggregate, model=cfg.model_id, layer=layer
    )
    probe.fit(clean, attacked, kinds=kinds)
    calib = [decision_activations(fit_dir, "unsteered", s, "all") for s in split["calibration"]]
    table = _calibrate(cfg, probe, calib)
    log(
        f"probe: trained on {kinds}: {len(clean)} clean + {len(attacked)} attacked decisions of {len(split['fit'])} fit seeds"
    )
    info = {"conditions": conditions, "trained_kinds": kinds, "seeds": split["fit"], "n_train": probe.n_train,
            "use_last": probe.use_last, "n_image_tokens": n_img}  # fmt: skip
    return probe, {"info": info, "calibration": table}


def fit_combined(cfg: Any, fit_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The combined scorer of the saved, calibrated parts, recalibrated on the clean
    calibration episodes; (scorer, its calibration table)."""
    from monitors.combined import CombinedScorer
    from monitors.scorers import load_scorer
    from studies.sarm.data import decision_activations

    out = Path(cfg.out)
    parts = [load_scorer(out / "scorers" / f"{k}-{cfg.aggregate}") for k in cfg.combined_parts]
    combined = CombinedScorer(parts)
    calib = [
        decision_activations(fit_dir, "unsteered", s, cfg.tokens)
        for s in cfg.seed_split()["calibration"]
    ]
    return combined, _calibrate(cfg, combined, calib)


def fit_derived_scorers(
    cfg: Any, fit_dir: Path, feature: int | None, log: Any = print
) -> dict[str, Any]:
    """Fit, calibrate and save the probe and combined scorers among `cfg.scorers` (in that
    order), under scorers/<name>/.

    Returns:
        {"names": their folder names, "calibrations": name → calibration table,
         "marker": entries for scorers/fit.json ({"probe": ..., "combined": ...})}.
    """
    out = Path(cfg.out)
    names: list[str] = []
    tables: dict[str, Any] = {}
    marker: dict[str, Any] = {}
    for kind in (k for k in cfg.scorers if k in DERIVED_SCORERS):
        if kind == "probe":
            scorer, entry = fit_probe(cfg, fit_dir, feature, log)
            marker["probe"] = {"scorer": scorer.name.replace("/", "-"), **entry["info"]}
            table = entry["calibration"]
        else:
            scorer, table = fit_combined(cfg, fit_dir)
            marker["combined"] = {"scorer": scorer.name, "parts": scorer.part_names,
                                  "part_thresholds": scorer.thresholds.tolist()}  # fmt: skip
        name = scorer.name.replace("/", "-")
        scorer.save(out / "scorers" / name)
        names.append(name)
        tables[name] = table
    return {"names": names, "calibrations": tables, "marker": marker}


def derived_summary(
    summary: dict[str, Any], marker: dict[str, Any], perturbations: list[str]
) -> dict[str, Any]:
    """The probe's and the combined scorer's sections of summary.json.

    Args:
        summary: studies.sarm.summary.summarize's result (every scorer side by side).
        marker: scorers/fit.json (its "probe" and "combined" entries; absent: no section).
        perturbations: the eval's perturbation conditions, in order.

    Returns:
        {"probe": {scorer, trained_kinds, held_out_kinds, conditions, seeds, n_train, rows:
         [{perturbation, kind, split ("trained" or "held-out"), detection: {scorer: rate},
         auc: {scorer: auc}}]}, "combined": {scorer, parts, part_thresholds, threshold}}, each
        section only where that scorer ran.
    """
    out: dict[str, Any] = {}
    probe = marker.get("probe")
    if probe and probe["scorer"] in summary["clean"]:
        name, trained = probe["scorer"], set(probe["trained_kinds"])
        order = [name, *(s for s in summary["clean"] if s != name)]
        rows = []
        for p in perturbations:
            per = summary["perturbations"].get(p)
            if per is None:
                continue
            kind = attack_kind(p)
            rows.append({"perturbation": p, "kind": kind, "split": "trained" if kind in trained else "held-out",
                         "detection": {s: per[s]["detection"] for s in order if s in per},
                         "auc": {s: per[s]["auc"] for s in order if s in per}})  # fmt: skip
        held = sorted({r["kind"] for r in rows if r["split"] == "held-out"})
        out["probe"] = {**probe, "held_out_kinds": held, "rows": rows}
    combined = marker.get("combined")
    if combined and combined["scorer"] in summary["clean"]:
        out["combined"] = {
            **combined,
            "threshold": summary["clean"][combined["scorer"]]["threshold"],
        }
    return out


def print_probe(doc: dict[str, Any], console: Any = None) -> None:
    """A rich table of the probe's detection and AUC per eval perturbation, its kind marked
    trained or held out, beside every other scorer (nothing when the run had no probe)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    probe = doc.get("summary", {}).get("probe")
    if not probe:
        return
    console = console or Console()
    rows = probe["rows"]
    scorers = list(rows[0]["detection"]) if rows else [probe["scorer"]]
    t = Table(title=f"linear probe: trained on {', '.join(probe['trained_kinds'])} (fit seeds); held out: "
                    f"{', '.join(probe['held_out_kinds']) or 'none'}. Detection rate / decision AUC")  # fmt: skip
    t.add_column("perturbation", overflow="fold")
    t.add_column("kind")
    for s in scorers:
        t.add_column(s, overflow="fold")
    for r in rows:
        cells = []
        for s in scorers:
            d, a = r["detection"][s], r["auc"][s]
            det = "–" if not d["n"] else f"{d['rate']:.2f} (n={d['n']})"
            auc = "–" if a.get("auc") is None or a["auc"] != a["auc"] else f"{a['auc']:.2f}"
            cells.append(f"{det} / {auc}")
        t.add_row(*map(Text, [r["perturbation"], f"{r['kind']} ({r['split']})", *cells]))
    console.print(t)
