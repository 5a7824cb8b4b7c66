"""Cohort twin fitting on Ray: the per-animal adaptation step, one Ray task per batch of animals.

The population step runs in the driver; the animals are then split into batches
(:func:`twin.fit.cohort.animal_batches`) and each batch is adapted by one Ray task through the
batched path (:func:`twin.fit.cohort.adapt_animals`), never one tiny task per animal. Tasks ask for a
GPU (and fit on CUDA) when the cluster has GPUs. A task whose worker dies is retried; a batch that
still fails is reported by subject, and nothing is stored for it. Results are stored by the driver
only after the tasks return, all in one transaction with the ``serving`` aliases, so a killed
run leaves no half-written twin and no half-switched cohort.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import ray

from cluster.ray_env import cluster_gpus, init_ray
from twin.fit.cohort import (
    AnimalTwin,
    CohortFitConfig,
    CohortFitReport,
    PopulationFit,
    adapt_animals,
    animal_batches,
    fit_population,
    store_twins,
)
from twin.persist.store import TwinStore

TaskFn = Callable[[PopulationFit, pd.DataFrame, str], list[AnimalTwin]]


@dataclass(frozen=True)
class RayCohortReport:
    """A cohort fit on Ray: what was stored and which animals failed (with the error)."""

    report: CohortFitReport
    failed: dict[str, str] = field(default_factory=dict)
    n_tasks: int = 0


def _run_batch(task_fn: TaskFn, population: PopulationFit, part: pd.DataFrame, device: str) -> list[AnimalTwin]:
    import torch

    torch.set_num_threads(1)
    return task_fn(population, part, device)


def fit_cohort_ray(
    df: pd.DataFrame,
    store: TwinStore,
    config: CohortFitConfig = CohortFitConfig(),
    animals_per_batch: int = 16,
    address: str | None = None,
    max_retries: int = 2,
    progress: bool = True,
    task_fn: TaskFn = adapt_animals,
) -> RayCohortReport:
    """Like :func:`twin.fit.cohort.fit_cohort`, with the adaptation batches as Ray tasks.

    Args:
        df: canonical trials of the cohort.
        store: where the twins go.
        config: population model, optimisation, adaptation.
        animals_per_batch: animals per Ray task.
        address: Ray cluster address (None: local Ray on loopback).
        max_retries: retries of a task whose worker died or that raised.
        progress: progress bar for the population fit.
        task_fn: the unit of work (replaceable for fault-injection tests).
    """
    t0 = time.perf_counter()
    init_ray(address)
    population = fit_population(df, config, progress)
    gpus = 1.0 if cluster_gpus() > 0 else 0.0
    device = "cuda" if gpus else "cpu"
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True)(_run_batch)
    parts = animal_batches(df, animals_per_batch)
    pop_ref = ray.put(population)
    refs = [remote.remote(task_fn, pop_ref, part, device) for part in parts]
    twins: list[AnimalTwin] = []
    failed: dict[str, str] = {}
    for part, ref in zip(parts, refs):
        try:
            twins.extend(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - every failure is reported per subject
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the task's own error
            for s in dict.fromkeys(part["subject"]):
                failed[str(s)] = f"{type(cause).__name__}: {cause}"
    versions = store_twins(store, population, config, twins)
    rep = CohortFitReport(versions, population.adaptation, population.adaptation_table, population.val_ll, time.perf_counter() - t0)
    return RayCohortReport(report=rep, failed=failed, n_tasks=len(parts))
