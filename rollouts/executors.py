"""Where an experiment's batches run: in this process, in local processes, or on Ray.

Every executor gives each worker its own EpisodeRunner (model, closed loop, resources) and
sends it batches; the episode records come back to the driver, which writes them (atomically,
in rollouts.runner.write_record). Workers write nothing, so a Ray cluster needs no shared
filesystem for the run folder; resources named in the config (SAE, vectors, scorers, a model
folder) must be readable at the same paths on every node. None of them changes an episode's
result: the same config gives the same episodes.parquet with every executor.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from typing import Any

from rollouts.episode import EpisodeRecord
from rollouts.experiment_config import ExperimentConfig
from rollouts.runner import Batch, EpisodeRunner

Sink = Callable[[list[EpisodeRecord]], Any]


def execute(cfg: ExperimentConfig, batches: list[Batch], sink: Sink, progress: bool = True) -> None:
    """Run every batch on cfg.executor; pass each batch's records to `sink` as they finish."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("episodes", total=sum(len(b.seeds) for b in batches))

        def done(records: list[EpisodeRecord]) -> None:
            sink(records)
            bar.advance(task, len(records))

        if not batches:
            return
        if cfg.executor == "ray":
            _ray(cfg, batches, done)
        elif cfg.workers == 1 or len(batches) == 1:
            runner = _runner_for(asdict(cfg))
            for batch in batches:
                done(runner.run(batch))
        else:
            _processes(cfg, batches, done)


# --- local processes ----------------------------------------------------------------------
_RUNNERS: dict[str, EpisodeRunner] = {}


def _runner_for(cfg_dict: dict[str, Any]) -> EpisodeRunner:
    """This process's runner for a config (built once: it loads the model)."""
    key = repr(sorted(cfg_dict.items()))
    if key not in _RUNNERS:
        for old in _RUNNERS.values():
            old.loop.close()
        _RUNNERS.clear()
        _RUNNERS[key] = EpisodeRunner(ExperimentConfig(**cfg_dict))
    return _RUNNERS[key]


def _process_job(cfg_dict: dict[str, Any], batch: Batch) -> list[EpisodeRecord]:
    return _runner_for(cfg_dict).run(batch)


def _processes(cfg: ExperimentConfig, batches: list[Batch], done: Callable) -> None:
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        # One batch per task keeps progress live; each worker process loads the model once.
        futures = [pool.submit(_process_job, asdict(cfg), b) for b in batches]
        for fut in as_completed(futures):
            done(fut.result())


# --- Ray ----------------------------------------------------------------------------------
def _ray(cfg: ExperimentConfig, batches: list[Batch], done: Callable) -> None:
    """One model-holding actor per worker; batches are tasks on an ActorPool."""
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        if cfg.address:
            ray.init(address=cfg.address, log_to_driver=False)
        else:
            ray.init(num_cpus=cfg.workers, include_dashboard=False, log_to_driver=False)
    try:
        worker = ray.remote(num_cpus=1, num_gpus=cfg.gpus_per_worker)(_RayWorker)
        cfg_dict = asdict(cfg)
        actors = [worker.remote(cfg_dict) for _ in range(cfg.workers)]
        pool = ActorPool(actors)
        for records in pool.map_unordered(lambda actor, b: actor.run.remote(b), batches):
            done(records)
        for actor in actors:
            ray.kill(actor)
    finally:
        if started:
            ray.shutdown()


class _RayWorker:
    """A Ray actor holding one EpisodeRunner."""

    def __init__(self, cfg_dict: dict[str, Any]) -> None:
        self.runner = EpisodeRunner(ExperimentConfig(**cfg_dict))

    def run(self, batch: Batch) -> list[EpisodeRecord]:
        """Run one batch; the records go back to the driver."""
        return self.runner.run(batch)
