"""An ensemble fit's components as parallel Ray tasks.

The components of :func:`twin.fit.ensemble_cohort.fit_ensemble` (a rule, a seed or bootstrap)
are independent until stacking, and each is a sequential, single-threaded fit, so one process
uses one core however many the machine has. :func:`fit_components_ray` runs each component as
Ray tasks (one CPU each, torch at one thread): on a local Ray that is every core of the machine,
on a cluster every worker. With a refit (`refit=True`) a component's two phases are independent
(:func:`~twin.fit.ensemble_cohort.fit_component_stacking`: fitted before the stacking split and
scored after it; :func:`~twin.fit.ensemble_cohort.fit_component_final`: refitted on all sessions
and adapted per animal), so each is its own task and the costliest rule's fit is split over two
CPUs instead of finishing last; without a refit the final phase adapts the stacking phase's rule
and both run in one task (the default). The results are the in-process ones (same seeds, same arithmetic);
stacking and the per-animal ensembles are then made in the calling process.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import ray

from cluster.ray_env import init_ray
from twin.fit.ensemble_cohort import (
    ComponentConfig, ComponentFit, EnsembleFitConfig, FinalPhase, FitComponents, StackingPhase, component_fit, fit_component,
    fit_component_final, fit_component_stacking,
)


#: Rule → relative cost of its fit, for the order tasks are submitted in (the longest first, so
#: that on fewer CPUs than components no long fit starts last): the per-origin fit times of the
#: rolling-origin experiment (``experiments/results/rolling_origin_summary.md``: static 0.3,
#: dnn 3.9, reinforce 6.1, dnn_delta 11.8 min) and the RNN's step, the costliest per trial
#: (``bench/results/fit_throughput.md``). Unknown rules count as the costliest. The order is a
#: heuristic: costs depend on the data (at 40 x 6,000 simulated REINFORCE learners,
#: ``bench/results/ensemble_fit_full_ray.md``: reinforce 404 s, dnn_delta 354 s, rnn 347 s, dnn
#: 105 s, static 12 s), and with a refit each component's two phases are separate tasks, which
#: evens the load whatever the order.
FIT_COST_RANK = {"static": 0, "dnn": 1, "reinforce": 2, "dnn_delta": 3, "rnn": 4}


def submission_order(components: Sequence[ComponentConfig]) -> list[int]:
    """Indices of ``components`` by decreasing expected fit cost (stable among equals)."""
    top = max(FIT_COST_RANK.values()) + 1
    return sorted(range(len(components)), key=lambda i: -FIT_COST_RANK.get(components[i].spec.rule, top))


def _run_component(comp: ComponentConfig, df: pd.DataFrame, config: EnsembleFitConfig, k: int, animals_per_batch: int) -> ComponentFit:
    import torch

    torch.set_num_threads(1)
    return fit_component(comp, df, config, k, animals_per_batch, progress=False)


def _run_stacking(comp: ComponentConfig, df: pd.DataFrame, config: EnsembleFitConfig, k: int) -> StackingPhase:
    import torch

    torch.set_num_threads(1)
    return fit_component_stacking(comp, df, config, k, progress=False)


def _run_final(comp: ComponentConfig, df: pd.DataFrame, config: EnsembleFitConfig, animals_per_batch: int) -> FinalPhase:
    import torch

    torch.set_num_threads(1)
    return fit_component_final(comp, df, config, animals_per_batch, progress=False)


def fit_components_ray(address: str | None = None, num_cpus: int | None = None, max_retries: int = 1) -> FitComponents:
    """A :data:`~twin.fit.ensemble_cohort.FitComponents` that runs each component as a Ray task.

    Args:
        address: Ray cluster to join (None: a local Ray on loopback, ``num_cpus`` CPUs, default
            all of this machine's).
        num_cpus: CPUs of the local Ray.
        max_retries: retries of a task whose worker died (a raised error is not retried: a
            component's fit is deterministic, so it would raise again).
    """

    def run(components: Sequence[ComponentConfig], df: pd.DataFrame, config: EnsembleFitConfig, k: int, animals_per_batch: int = 32, progress: bool = False) -> list[ComponentFit]:
        init_ray(address, num_cpus=num_cpus)
        df_ref, cfg_ref = ray.put(df), ray.put(config)
        order = submission_order(components)
        if not config.refit:  # the final phase needs the stacking phase's rule: one task each
            remote = ray.remote(num_cpus=1, max_retries=max_retries)(_run_component)
            refs = {i: remote.remote(components[i], df_ref, cfg_ref, k, animals_per_batch) for i in order}
            return [ray.get(refs[i]) for i in range(len(components))]  # in the components' order
        stacking = ray.remote(num_cpus=1, max_retries=max_retries)(_run_stacking)
        final = ray.remote(num_cpus=1, max_retries=max_retries)(_run_final)
        # costliest component first, its final phase (a population fit and the adaptation) first
        refs = {}
        for i in order:
            refs[i, "final"] = final.remote(components[i], df_ref, cfg_ref, animals_per_batch)
            refs[i, "stacking"] = stacking.remote(components[i], df_ref, cfg_ref, k)
        return [component_fit(components[i], ray.get(refs[i, "stacking"]), ray.get(refs[i, "final"])) for i in range(len(components))]

    return run


__all__ = ["FIT_COST_RANK", "fit_components_ray", "submission_order"]
