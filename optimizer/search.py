"""Curriculum search with Optuna (TPE or CMA-ES), batched through the twins.

Candidates are asked of the study in batches; a whole batch is simulated through every twin in
one tensor batch (:func:`optimizer.objective.score_curricula`) and told back. With a database
``storage`` URL (the project's SQLite or PostgreSQL) the study is resumable: rerunning with the
same study name continues where it stopped.

Search scores are noisy and the best of many noisy scores is optimistic (winner's curse), so the
best few candidates and the default are re-scored at the end with fresh seeds and more rollouts;
the proposal and its predicted speed-up come from that re-scoring.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import pandas as pd
from tqdm.auto import tqdm

from twin.protocol import Curriculum
from optimizer.objective import CurriculumScore, TwinPool, score_curricula, speedup
from optimizer.space import CurriculumSpace, Param, ParamKind
from twin.analysis.criteria import TRAINED_1A, CriterionConfig
from twin.sim.forecast import Interval


class SamplerKind(enum.Enum):
    """Optuna sampler."""

    TPE = "tpe"
    CMAES = "cmaes"


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a curriculum search.

    Attributes:
        n_trials: candidates evaluated (rounded up to whole batches).
        batch_size: candidates simulated together.
        sampler: TPE or CMA-ES (CMA-ES samples the boolean axes independently).
        n_rollouts: runs per twin and candidate during the search.
        max_sessions: sessions cap of a run.
        rescore_top: best candidates re-scored at the end.
        rescore_rollouts: runs per twin in the re-scoring.
        seed: seeds the sampler and the simulations.
        storage: Optuna storage URL (None: in memory).
        study_name: name of the (resumable) study.
        criterion: what "trained" means.
    """

    n_trials: int = 48
    batch_size: int = 8
    sampler: SamplerKind = SamplerKind.TPE
    n_rollouts: int = 4
    max_sessions: int = 40
    rescore_top: int = 3
    rescore_rollouts: int = 16
    seed: int = 0
    storage: str | None = None
    study_name: str = "curriculum-search"
    criterion: CriterionConfig = TRAINED_1A


@dataclass(frozen=True)
class SearchResult:
    """A search's outcome.

    Attributes:
        best: the proposed curriculum's re-scored result.
        default: the base curriculum's re-scored result.
        predicted_speedup: ``1 - best / default`` mean trials to criterion, paired bootstrap over twins.
        rescored: every re-scored candidate (default first).
        trials: one row per evaluated candidate (parameters, mean trials, sessions, reached).
    """

    best: CurriculumScore
    default: CurriculumScore
    predicted_speedup: Interval
    rescored: tuple[CurriculumScore, ...]
    trials: pd.DataFrame

    def summary(self) -> dict[str, object]:
        """JSON-ready summary."""

        def row(s: CurriculumScore) -> dict[str, object]:
            return {
                "curriculum": s.curriculum.to_dict(),
                "mean_trials": asdict(s.mean_trials),
                "median_trials": s.median_trials,
                "mean_sessions": s.mean_sessions,
                "reached": s.reached,
                "warnings": list(s.warnings),
            }

        return {"best": row(self.best), "default": row(self.default), "predicted_speedup": asdict(self.predicted_speedup)}

    def save(self, folder: str | Path) -> Path:
        """Write ``search.json``, ``trials.csv`` and the proposed curriculum as YAML and JSON."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "search.json").write_text(json.dumps(self.summary(), indent=2))
        self.trials.to_csv(folder / "trials.csv", index=False)
        self.best.curriculum.save(folder / "proposed.yaml")
        self.best.curriculum.save(folder / "proposed.json")
        return folder


def suggest(trial: optuna.Trial, p: Param) -> float | int | bool:
    """Ask ``trial`` for the value of axis ``p``."""
    if p.kind is ParamKind.BOOL:
        return bool(trial.suggest_categorical(p.name, [False, True]))
    if p.kind is ParamKind.INT:
        return trial.suggest_int(p.name, int(p.low), int(p.high))
    return trial.suggest_float(p.name, p.low, p.high, log=p.kind is ParamKind.LOG_FLOAT)


def make_sampler(kind: SamplerKind, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``kind``, seeded."""
    if kind is SamplerKind.CMAES:
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def search_curricula(
    pool: TwinPool,
    space: CurriculumSpace,
    config: SearchConfig = SearchConfig(),
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Search ``space`` for the curriculum with the fewest expected trials to criterion.

    The base curriculum is enqueued as the first candidate, so the search never reports
    something worse than what it was given without saying so.

    Args:
        pool: the twins.
        space: the constrained search space.
        config: sizes, sampler, storage, seeds.
        progress: show a progress bar.
        on_batch: called as ``on_batch(done, total)`` after every batch (progress reports,
            cancellation checkpoints: an exception raised there stops the search).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=make_sampler(config.sampler, config.seed),
        storage=config.storage,
        study_name=config.study_name,
        load_if_exists=True,
    )
    if not study.trials:
        study.enqueue_trial(space.base_values())
    done = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    n_batches = max(0, -(-(config.n_trials - done) // config.batch_size))
    bar = tqdm(total=n_batches * config.batch_size, desc="curriculum search", disable=not progress)
    for b in range(n_batches):
        trials = [study.ask() for _ in range(config.batch_size)]
        cands = [space.build({p.name: suggest(t, p) for p in space.params}, name=f"trial-{t.number}") for t in trials]
        scores = score_curricula(pool, cands, config.n_rollouts, config.max_sessions, seed=config.seed + 1 + done + b, criterion=config.criterion)
        for t, s in zip(trials, scores):
            t.set_user_attr("mean_sessions", s.mean_sessions)
            t.set_user_attr("reached", s.reached)
            t.set_user_attr("warnings", list(s.warnings))
            study.tell(t, s.mean_trials.mean)
        bar.update(len(trials))
        if on_batch is not None:
            on_batch(b + 1, n_batches)
    bar.close()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    top = sorted(complete, key=lambda t: t.value)[: config.rescore_top]
    table = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "state"))
    return rescore(pool, space, [(f"proposed-trial-{t.number}", dict(t.params)) for t in top], config, table)


def rescore(
    pool: TwinPool, space: CurriculumSpace, top: list[tuple[str, dict[str, float | int | bool]]], config: SearchConfig, table: pd.DataFrame
) -> SearchResult:
    """Re-score the base and the ``top`` candidates (name, axis values) on fresh seeds with
    ``config.rescore_rollouts``; the best of them is the proposal."""
    cands = [space.build(space.base_values(), name=space.base.name)] + [space.build(v, name=n) for n, v in top]
    rescored = score_curricula(pool, cands, config.rescore_rollouts, config.max_sessions, seed=config.seed + 10_000, criterion=config.criterion)
    default = rescored[0]
    best = min(rescored, key=lambda s: s.mean_trials.mean)
    return SearchResult(best, default, speedup(default, best, seed=config.seed), tuple(rescored), table)


__all__ = ["SamplerKind", "SearchConfig", "SearchResult", "make_sampler", "rescore", "search_curricula", "suggest"]
