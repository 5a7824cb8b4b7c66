"""Hyperparameter search over rule fits: plain Optuna (study in a database, resumable) or
Ray Tune with OptunaSearch and the ASHA scheduler. Objective: validation log-likelihood of each
animal's last session (:func:`optimizer.hparams.score_hyperparams`)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from cluster.tune_space import tune_domain
from optimizer.hparams import HYPERPARAMETER_SPACE, HyperParams, HyperParamScore, score_hyperparams
from optimizer.search import SearchResult, suggest
from twin.persist.store import ResultKind


def _suggest(trial: optuna.Trial) -> HyperParams:
    return HyperParams(**{p.name: suggest(trial, p) for p in HYPERPARAMETER_SPACE})  # type: ignore[arg-type]


def _result(best: HyperParams, best_val_ll: float, default_val_ll: float, trials: pd.DataFrame) -> SearchResult[HyperParamScore]:
    return SearchResult(ResultKind.HYPERPARAMETER_SEARCH, HyperParamScore(best, best_val_ll), HyperParamScore(HyperParams(), default_val_ll), trials)


def search_optuna(
    df: pd.DataFrame, rule: str, n_trials: int, epochs: int, storage: str | None = None, study_name: str = "twin-hparams", seed: int = 0
) -> SearchResult[HyperParamScore]:
    """TPE search with plain Optuna; with ``storage`` (a database URL) the study is resumable."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=study_name, load_if_exists=True)
    study.optimize(lambda t: score_hyperparams(df, rule, _suggest(t), epochs, seed), n_trials=n_trials)
    default = score_hyperparams(df, rule, HyperParams(), epochs, seed)
    best = HyperParams(**study.best_params)
    table = study.trials_dataframe(attrs=("number", "value", "params", "state"))
    return _result(best, float(study.best_value), default, table)


def search_tune(
    df: pd.DataFrame, rule: str, n_trials: int, epochs: int, storage_path: Path, seed: int = 0, address: str | None = None, max_concurrent: int = 2
) -> SearchResult[HyperParamScore]:
    """The same search on Ray Tune: OptunaSearch proposes, ASHA stops weak trials early; each
    trial reports its validation LL after every epoch."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from cluster.ray_env import init_ray

    init_ray(address)
    df_ref = df  # captured by the trainable (Tune puts it in the object store once)

    def trainable(config: dict[str, object]) -> None:
        import torch

        torch.set_num_threads(1)
        hp = HyperParams(**config)  # type: ignore[arg-type]
        score_hyperparams(df_ref, rule, hp, epochs, seed, on_epoch=lambda rec: tune.report({"val_ll": rec.val_ll, "epoch": rec.epoch}))

    space = {p.name: tune_domain(p) for p in HYPERPARAMETER_SPACE}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_ll",
            mode="max",
            num_samples=n_trials,
            search_alg=ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=max_concurrent),
            scheduler=ASHAScheduler(max_t=epochs, grace_period=max(1, epochs // 4)),
        ),
        run_config=tune.RunConfig(storage_path=str(Path(storage_path).resolve()), name="twin-hparams", verbose=0),
    )
    grid = tuner.fit()
    best = grid.get_best_result(metric="val_ll", mode="max", scope="all")
    table = grid.get_dataframe(filter_metric="val_ll", filter_mode="max")
    best_ll = float(table["val_ll"].max())
    default = score_hyperparams(df, rule, HyperParams(), epochs, seed)
    return _result(HyperParams(**{p.name: best.config[p.name] for p in HYPERPARAMETER_SPACE}), best_ll, default, table)
