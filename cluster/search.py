"""Hyperparameter search over rule fits: plain Optuna (study in a database, resumable) or
Ray Tune with OptunaSearch and the ASHA scheduler. Objective: validation log-likelihood of each
animal's last session (:func:`optimizer.hparams.score_hyperparams`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from optimizer.hparams import SEARCH_SPACE, HyperParams, score_hyperparams


@dataclass(frozen=True)
class SearchResult:
    """Best candidate, its score, the default's score and every trial."""

    best: HyperParams
    best_val_ll: float
    default_val_ll: float
    trials: pd.DataFrame

    def save(self, path: Path) -> Path:
        """Write the result as JSON (best, default, table)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {"best": self.best.to_dict(), "best_val_ll": self.best_val_ll, "default_val_ll": self.default_val_ll, "trials": self.trials.to_dict(orient="records")},
                indent=2,
                default=str,
            )
        )
        return path


def _suggest(trial: optuna.Trial) -> HyperParams:
    lo, hi = SEARCH_SPACE["hidden_size"]
    lr_lo, lr_hi = SEARCH_SPACE["learning_rate"]
    return HyperParams(
        hidden_size=trial.suggest_int("hidden_size", int(lo), int(hi), log=True),  # type: ignore[arg-type]
        learning_rate=trial.suggest_float("learning_rate", float(lr_lo), float(lr_hi), log=True),  # type: ignore[arg-type]
        tbptt=trial.suggest_categorical("tbptt", list(SEARCH_SPACE["tbptt"])),  # type: ignore[arg-type]
        history=trial.suggest_categorical("history", list(SEARCH_SPACE["history"])),  # type: ignore[arg-type]
    )


def search_optuna(
    df: pd.DataFrame, rule: str, n_trials: int, epochs: int, storage: str | None = None, study_name: str = "twin-hparams", seed: int = 0
) -> SearchResult:
    """TPE search with plain Optuna; with ``storage`` (a database URL) the study is resumable."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=study_name, load_if_exists=True)
    study.optimize(lambda t: score_hyperparams(df, rule, _suggest(t), epochs, seed), n_trials=n_trials)
    default = score_hyperparams(df, rule, HyperParams(), epochs, seed)
    best = HyperParams(**study.best_params)
    table = study.trials_dataframe(attrs=("number", "value", "params", "state"))
    return SearchResult(best, float(study.best_value), default, table)


def search_tune(
    df: pd.DataFrame, rule: str, n_trials: int, epochs: int, storage_path: Path, seed: int = 0, address: str | None = None, max_concurrent: int = 2
) -> SearchResult:
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

    lo, hi = SEARCH_SPACE["hidden_size"]
    lr_lo, lr_hi = SEARCH_SPACE["learning_rate"]
    space = {
        "hidden_size": tune.lograndint(int(lo), int(hi) + 1),  # type: ignore[arg-type]
        "learning_rate": tune.loguniform(float(lr_lo), float(lr_hi)),  # type: ignore[arg-type]
        "tbptt": tune.choice(list(SEARCH_SPACE["tbptt"])),
        "history": tune.choice(list(SEARCH_SPACE["history"])),
    }
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
    return SearchResult(HyperParams(**{k: best.config[k] for k in ("hidden_size", "learning_rate", "tbptt", "history")}), best_ll, default, table)
