"""Batch curriculum search on a Ray cluster: Ray Tune with OptunaSearch, several candidates per
trial.

Each Tune trial evaluates ``candidates_per_trial`` curricula (the search space's axes repeated
once per slot, sampled jointly by OptunaSearch) and the base curriculum through every twin in one
tensor batch, and reports the best of them by the local search's objective
(:func:`optimizer.search.objective_value`: by default the lower decile of the per-``(model,
animal)`` speed-ups against the base, ``config.robust``), so both searches rank candidates by
one statistic; trials run in parallel on the cluster's workers. The driver then re-scores the
best candidates against the base curriculum on fresh seeds, exactly as the local search does
(:func:`optimizer.search.rescore`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cluster.tune_space import tune_domain
from optimizer.objective import CurriculumScore, TwinPool, score_curricula
from optimizer.search import SearchBackend, SearchConfig, SearchResult, objective_value, rescore
from optimizer.space import CurriculumSpace


def _slot_values(space: CurriculumSpace, config: dict[str, object], slot: int) -> dict[str, float | int | bool]:
    return {p.name: config[f"{p.name}__{slot}"] for p in space.params}  # type: ignore[misc]


def search_curricula_tune(
    pool: TwinPool,
    space: CurriculumSpace,
    config: SearchConfig,
    storage_path: str | Path,
    candidates_per_trial: int = 4,
    max_concurrent: int = 2,
    address: str | None = None,
) -> SearchResult[CurriculumScore]:
    """Search ``space`` on Ray Tune; ``config.n_trials`` candidates in all (rounded up to whole
    trials of ``candidates_per_trial``).

    Args:
        pool: the twins (shipped to the workers through the object store).
        space: the constrained search space.
        config: sizes, seeds and the objective candidates are ranked by (``config.robust``, as in
            the local search); ``storage``/``sampler`` are not used: Tune keeps its own state.
        storage_path: folder for Tune's experiment state.
        candidates_per_trial: curricula simulated together in one Tune trial.
        max_concurrent: trials running at once.
        address: Ray cluster address (None: local Ray on loopback).
    """
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from cluster.ray_env import init_ray

    init_ray(address)
    pool_ref = ray.put(pool)
    k = candidates_per_trial
    n_trials = max(1, -(-config.n_trials // k))

    metric = f"speedup_{config.robust.statistic.value}"

    def trainable(cfg: dict[str, object]) -> None:
        import torch

        torch.set_num_threads(1)
        twins = ray.get(pool_ref)
        grid = twins.grid()
        base = space.build(space.base_values(), name=space.base.name)
        cands = [space.build(_slot_values(space, cfg, j), name=f"slot-{j}") for j in range(k)]
        ref, *scores = score_curricula(twins, [base] + cands, config.n_rollouts, config.max_sessions, seed=config.seed + 1, criterion=config.criterion)
        values = [objective_value(grid, ref.per_model, s.per_model, config.robust) for s in scores]  # the local search's ranking
        means = [s.mean_trials.mean for s in scores]
        best = max(range(k), key=lambda j: values[j])
        tune.report(
            {
                metric: values[best],
                "mean_trials": means[best],
                "best_slot": best,
                **{f"{metric}__{j}": v for j, v in enumerate(values)},
                **{f"mean_trials__{j}": m for j, m in enumerate(means)},
            }
        )

    param_space = {f"{p.name}__{j}": tune_domain(p) for j in range(k) for p in space.params}
    base = {f"{name}__{j}": v for j in range(k) for name, v in space.base_values().items()}
    search = OptunaSearch(seed=config.seed, points_to_evaluate=[base])
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode="max",
            num_samples=n_trials,
            search_alg=ConcurrencyLimiter(search, max_concurrent=max_concurrent),
        ),
        run_config=tune.RunConfig(storage_path=str(Path(storage_path).resolve()), name="curriculum-search", verbose=0),
    )
    grid = tuner.fit()
    rows = []
    for res in grid:
        if res.error is not None or res.metrics is None or metric not in res.metrics:
            raise RuntimeError(f"a curriculum search trial failed: {res.error}")
        for j in range(k):
            rows.append(
                {
                    "trial": res.path,
                    "slot": j,
                    metric: res.metrics[f"{metric}__{j}"],
                    "mean_trials": res.metrics[f"mean_trials__{j}"],
                    "max_sessions": config.max_sessions,
                    **_slot_values(space, res.config, j),
                }
            )
    table = pd.DataFrame(rows).sort_values(metric, ascending=False, kind="stable").reset_index(drop=True)  # best by the objective first
    top = [(f"proposed-{i}", {p.name: table.loc[i, p.name].item() for p in space.params}) for i in range(min(config.rescore_top, len(table)))]
    return rescore(pool, space, top, config, table)


def tune_search(storage_path: str | Path, candidates_per_trial: int = 4, max_concurrent: int = 2, address: str | None = None) -> SearchBackend:
    """:func:`search_curricula_tune` as a search backend of :func:`optimizer.search.search_store`."""
    return lambda pool, space, config: search_curricula_tune(pool, space, config, storage_path, candidates_per_trial, max_concurrent, address)


__all__ = ["search_curricula_tune", "tune_search"]
