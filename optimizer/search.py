"""Curriculum search with Optuna (TPE or CMA-ES), batched through the twins.

Candidates are asked of the study in batches; a whole batch is simulated through every twin in
one tensor batch (:func:`optimizer.objective.score_curricula`) and told back. With a database
``storage`` URL (the project's SQLite or PostgreSQL) the study is resumable: rerunning with the
same study name continues where it stopped.

Candidates are judged against the base over every model of the ensemble (every rule family and
seed), paired by animal and model, and ranked by a risk-aware statistic (by default the lower
decile of the per-``(model, animal)`` speed-ups, :class:`optimizer.objective.RobustConfig`): a
curriculum that only one model believes in is not proposed. The base is scored in every batch.

Search scores are noisy and the best of many noisy scores is optimistic (winner's curse), so the
best few candidates and the default are re-scored at the end with fresh seeds and more rollouts.
The best of them is then attributed to its changes against the base (:mod:`optimizer.attribution`)
and reduced to the changes that help robustly; the proposal is that minimal set, re-scored once
more against the base on fresh seeds for its predicted speed-up (with the speed-up each rule
family predicts). Every output states the sessions cap the simulations ran with.

:class:`SearchResult` is the outcome of every search, of curricula here and of a rule fit's
hyperparameters (:mod:`cluster.search`); :func:`search_store` is the whole job of a curriculum
search over a twin store: load the twins, pool them, search, keep the result in the store.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Generic, TypeVar
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from twin.progress import progress_bar

from twin.protocol import CurriculumError
from optimizer.hparams import HyperParamScore
from optimizer.attribution import Attribution, AttributionConfig, Scorer, attribute
from optimizer.objective import (
    CurriculumScore,
    FitRange,
    ModelGrid,
    RiskStatistic,
    RobustConfig,
    RobustSpeedup,
    TwinPool,
    lower_quantile_speedup,
    robust_speedup,
    score_curricula,
)
from twin.models.ensemble import TwinEnsemble
from optimizer.space import CurriculumSpace, Param, ParamKind, describe_change
from twin.analysis.criteria import TRAINED_1A, CriterionConfig
from twin.persist.sessions import SessionStore
from twin.persist.store import ResultKind, StoredResult, TwinStore
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
        robust: what candidates are ranked by (mean or lower-quantile speed-up over the
            ensemble's models) and the intervals' level.
        attribution: how the best candidate's changes are judged (its ``seed`` is offset by
            ``seed``).
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
    robust: RobustConfig = RobustConfig()
    attribution: AttributionConfig = AttributionConfig()


S = TypeVar("S", CurriculumScore, HyperParamScore)
"""The score of one candidate of a search."""


@dataclass(frozen=True)
class SearchResult(Generic[S]):
    """A search's outcome: of curricula (:func:`search_curricula`) or of a rule fit's
    hyperparameters (:mod:`cluster.search`).

    Attributes:
        kind: what was searched (``CURRICULUM_SEARCH`` or ``HYPERPARAMETER_SEARCH``); the kind
            the result is stored as, and the layout of :meth:`summary` and :meth:`save`.
        best: the proposal's score (curricula: the minimal proposal, re-scored with ``default``).
        default: the base curriculum's (re-scored), or the default hyperparameters', score.
        trials: one row per evaluated candidate (parameters and score).
        rescored: curricula: every re-scored candidate of the search (default first); empty for
            hyperparameters.
        predicted_speedup: curricula: ``1 - best / default`` mean trials to criterion, paired
            bootstrap over animals and their models; None for hyperparameters.
        robust: curricula: the proposal against the default over every model (lower quantile,
            per rule family, sessions cap); when the proposal was declined (see ``note``), the
            declined proposal's.
        attribution: curricula: the best candidate's changes and their effects, and the minimal
            set that is the proposal.
        objective: curricula: what candidates were ranked by.
        note: curricula: why the default was kept although some changes helped (empty otherwise).
        criterion: curricula: the criterion trials are counted to (None for hyperparameters).
    """

    kind: ResultKind
    best: S
    default: S
    trials: pd.DataFrame
    rescored: tuple[CurriculumScore, ...] = ()
    predicted_speedup: Interval | None = None
    robust: RobustSpeedup | None = None
    attribution: Attribution | None = None
    objective: RobustConfig | None = None
    note: str = ""
    criterion: CriterionConfig | None = None

    @property
    def max_sessions(self) -> int | None:
        """Curricula: the sessions cap every prediction of this result was simulated with."""
        return self.best.max_sessions if isinstance(self.best, CurriculumScore) else None

    def __post_init__(self) -> None:
        curricula = self.kind is ResultKind.CURRICULUM_SEARCH
        if not curricula and self.kind is not ResultKind.HYPERPARAMETER_SEARCH:
            raise ValueError(f"not a search: {self.kind}")
        score = CurriculumScore if curricula else HyperParamScore
        if not (isinstance(self.best, score) and isinstance(self.default, score)) or curricula != (self.predicted_speedup is not None):
            raise TypeError(f"a {self.kind.value} result holds {score.__name__} scores{' and a predicted speed-up' if curricula else ''}")

    def summary(self) -> dict[str, object]:
        """JSON-ready summary: curricula, the best and the default with their scores and the
        predicted speed-up; hyperparameters, the best, both scores and every trial."""
        best, default = self.best, self.default
        if isinstance(best, HyperParamScore) and isinstance(default, HyperParamScore):
            return {"best": best.params.to_dict(), "best_val_ll": best.val_ll, "default_val_ll": default.val_ll, "trials": self.trials.to_dict(orient="records")}

        def row(s: S) -> dict[str, object]:
            assert isinstance(s, CurriculumScore)
            return {
                "curriculum": s.curriculum.to_dict(),
                "mean_trials": asdict(s.mean_trials),
                "median_trials": s.median_trials,
                "mean_sessions": s.mean_sessions,
                "reached": s.reached,
                "max_sessions": s.max_sessions,
                "warnings": list(s.warnings),
            }

        out: dict[str, object] = {"best": row(best), "default": row(default), "predicted_speedup": asdict(self.predicted_speedup), "max_sessions": self.max_sessions}  # type: ignore[arg-type]
        c = self.criterion
        out["criterion"] = None if c is None else c.label
        out["criterion_description"] = None if c is None else c.describe()
        if self.objective is not None:
            out["objective"] = {"statistic": self.objective.statistic.value, "quantile": self.objective.quantile, "level": self.objective.level}
        if self.robust is not None:
            out["robust"] = self.robust.to_dict()
        if self.attribution is not None:
            out["attribution"] = self.attribution.to_dict()
        if self.note:
            out["note"] = self.note
        return out

    def lines(self) -> list[str]:
        """Curricula: the result as text (default, proposal, per-family speed-ups, per-change
        table), every line that states a prediction with its sessions cap."""
        b, d, sp = self.best, self.default, self.predicted_speedup
        assert isinstance(b, CurriculumScore) and isinstance(d, CurriculumScore) and sp is not None
        cap = f"sessions cap {b.max_sessions}"
        crit = self.criterion.label if self.criterion is not None else "criterion"
        out = [
            f"default {d.curriculum.name}: {d.mean_trials.mean:.0f} trials to {crit} [{d.mean_trials.lo:.0f}, {d.mean_trials.hi:.0f}] ({cap})",
            f"proposed: {b.mean_trials.mean:.0f} [{b.mean_trials.lo:.0f}, {b.mean_trials.hi:.0f}], predicted speed-up {sp.mean:.1%} [{sp.lo:.1%}, {sp.hi:.1%}] ({cap}; interval over animals and models)",
        ]
        if self.robust is not None and self.objective is not None:
            r = self.robust
            out.append(f"  ranked by {self.objective.statistic.value}; the {r.quantile:.0%} quantile of the per-(model, animal) speed-ups is {r.lower_quantile:+.1%}")
            for f in r.by_family:
                out.append(f"  {f.family:<12} predicts {f.speedup.mean:+.1%} [{f.speedup.lo:+.1%}, {f.speedup.hi:+.1%}] over {f.n_units} animals ({cap})")
        if self.attribution is not None and self.attribution.changes:
            out.append(f"  changes of the best candidate against {d.curriculum.name} (drop-one / add-one speed-ups, {self.attribution.level:.0%} intervals, {cap}):")
            out += ["    " + line for line in self.attribution.table()]
        elif self.attribution is not None:
            out.append(f"  the best candidate does not change {d.curriculum.name}")
        if self.note:
            out.append(f"  {self.note}")
        return out

    def save(self, path: str | Path) -> Path:
        """Write the result. Hyperparameters: the summary as one JSON file ``path``. Curricula: a
        folder ``path`` of ``search.json``, ``trials.csv`` and the proposal as YAML and JSON."""
        path = Path(path)
        best = self.best
        if isinstance(best, HyperParamScore):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.summary(), indent=2, default=str))
            return path
        path.mkdir(parents=True, exist_ok=True)
        (path / "search.json").write_text(json.dumps(self.summary(), indent=2))
        self.trials.to_csv(path / "trials.csv", index=False)
        best.curriculum.save(path / "proposed.yaml")
        best.curriculum.save(path / "proposed.json")
        return path


def suggest(trial: optuna.Trial, p: Param) -> object:
    """Ask ``trial`` for the value of axis ``p``."""
    if p.kind in (ParamKind.BOOL, ParamKind.CHOICE):
        return trial.suggest_categorical(p.name, list(p.values()))  # type: ignore[arg-type]
    if p.kind in (ParamKind.INT, ParamKind.LOG_INT):
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.kind is ParamKind.LOG_INT)
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
) -> SearchResult[CurriculumScore]:
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
    bar = progress_bar(total=n_batches * config.batch_size, desc="curriculum search", disable=not progress)
    grid = pool.grid()
    base = space.build(space.base_values(), name=space.base.name)
    for b in range(n_batches):
        trials = [study.ask() for _ in range(config.batch_size)]
        cands = [base] + [space.build({p.name: suggest(t, p) for p in space.params}, name=f"trial-{t.number}") for t in trials]
        ref, *scores = score_curricula(pool, cands, config.n_rollouts, config.max_sessions, seed=config.seed + 1 + done + b, criterion=config.criterion)
        for t, s in zip(trials, scores):
            value = objective_value(grid, ref.per_model, s.per_model, config.robust)
            t.set_user_attr("mean_trials", s.mean_trials.mean)
            t.set_user_attr("mean_sessions", s.mean_sessions)
            t.set_user_attr("reached", s.reached)
            t.set_user_attr(f"speedup_{config.robust.statistic.value}", value)
            t.set_user_attr("max_sessions", config.max_sessions)
            t.set_user_attr("warnings", list(s.warnings))
            study.tell(t, -value)  # minimised
        bar.update(len(trials))
        if on_batch is not None:
            on_batch(b + 1, n_batches)
    bar.close()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    top = sorted(complete, key=lambda t: t.value)[: config.rescore_top]
    table = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "state"))
    return rescore(pool, space, [(f"proposed-trial-{t.number}", dict(t.params)) for t in top], config, table)


def objective_value(grid: ModelGrid, reference: np.ndarray, other: np.ndarray, robust: RobustConfig) -> float:
    """The figure candidates are ranked by (larger is better): the mean speed-up of ``other``
    (``[P]`` per-model trials) against ``reference``, or the lower quantile of the per-``(model,
    animal)`` speed-ups."""
    if robust.statistic is RiskStatistic.MEAN:
        w = grid.weight
        return float(1 - (grid.gather(other) * w).sum(1).mean() / max((grid.gather(reference) * w).sum(1).mean(), 1e-12))
    return lower_quantile_speedup(grid, reference, other, robust.quantile)


def pool_scorer(pool: TwinPool, space: CurriculumSpace, config: SearchConfig) -> Scorer:
    """An attribution scorer (:data:`optimizer.attribution.Scorer`): candidates (axis values)
    built in ``space`` and scored through ``pool`` with ``config.rescore_rollouts`` in one call;
    ``[C, P]`` per-``(model, animal)`` trials in the order of :meth:`TwinPool.grid`."""

    def score(values: Sequence[dict[str, float | int | bool]], seed: int) -> np.ndarray:  # type: ignore[type-arg]
        cands = [space.build(dict(v), name=f"variant-{i}") for i, v in enumerate(values)]
        return np.stack([s.per_model for s in score_curricula(pool, cands, config.rescore_rollouts, config.max_sessions, seed=seed, criterion=config.criterion)])

    return score  # type: ignore[return-value]


def rescore(
    pool: TwinPool, space: CurriculumSpace, top: list[tuple[str, dict[str, float | int | bool]]], config: SearchConfig, table: pd.DataFrame
) -> SearchResult[CurriculumScore]:
    """Re-score the base and the ``top`` candidates (name, axis values) on fresh seeds with
    ``config.rescore_rollouts``; attribute the best of them (by ``config.robust.statistic``)
    to its changes, keep the minimal set that helps robustly, and re-score it against the base
    on fresh seeds: that is the proposal."""
    grid = pool.grid()
    base_values = space.base_values()
    cands = [space.build(base_values, name=space.base.name)] + [space.build(v, name=n) for n, v in top]
    rescored = score_curricula(pool, cands, config.rescore_rollouts, config.max_sessions, seed=config.seed + 10_000, criterion=config.criterion)
    first = rescored[0]
    best_i = max(range(len(top)), key=lambda i: objective_value(grid, first.per_model, rescored[i + 1].per_model, config.robust)) if top else None
    proposal = {**base_values, **top[best_i][1]} if best_i is not None else dict(base_values)
    attr = attribute(
        base_values,
        proposal,
        pool_scorer(pool, space, config),
        grid,
        replace(config.attribution, seed=config.attribution.seed + config.seed + 20_000),
        describe_change,
    )
    label = top[best_i][0] if best_i is not None else "proposed"
    name = space.base.name if not attr.kept else label if len(attr.kept) == len(attr.changes) else f"{label}-minimal"
    final = [space.build(base_values, name=space.base.name), space.build(dict(attr.minimal), name=name)]
    default, best = score_curricula(pool, final, config.rescore_rollouts, config.max_sessions, seed=config.seed + 30_000, criterion=config.criterion)
    if not attr.kept:
        best = default
    robust = robust_speedup(grid, default.per_model, best.per_model, config.max_sessions, config.robust, seed=config.seed)
    note = ""
    stat = config.robust.statistic
    if attr.kept and robust.value(stat) <= 0:  # its changes help on average, but not by the ranking statistic
        note = f"the minimal proposal's {stat.value} speed-up ({robust.value(stat):+.1%}) is not above zero: {space.base.name} is kept (the per-family figures are the declined proposal's)"
        best = default
        return SearchResult(ResultKind.CURRICULUM_SEARCH, best, default, table, tuple(rescored), Interval(0.0, 0.0, 0.0), robust, attr, config.robust, note, config.criterion)
    return SearchResult(ResultKind.CURRICULUM_SEARCH, best, default, table, tuple(rescored), robust.speedup, robust, attr, config.robust, note, config.criterion)


SearchBackend = Callable[[TwinPool, CurriculumSpace, SearchConfig], SearchResult[CurriculumScore]]
"""A curriculum search over a pool: :func:`local_search` here, Ray Tune in :mod:`cluster.curricula`."""


def local_search(progress: bool = True, on_batch: Callable[[int, int], None] | None = None) -> SearchBackend:
    """:func:`search_curricula` in this process, with its progress bar and batch callback."""
    return lambda pool, space, config: search_curricula(pool, space, config, progress=progress, on_batch=on_batch)


def load_pool(store: TwinStore, subjects: Sequence[str] | None = None, alias: str | None = "serving", fit_range: bool = True, min_weight: float = 0.01) -> TwinPool:
    """The store's twins as a :class:`~optimizer.objective.TwinPool`; an ensemble twin brings
    its components of weight ``>= min_weight``, weighted (see :meth:`TwinPool.from_ensembles`).

    Args:
        store: the twin store.
        subjects: twins to use (None or empty: every subject of the store).
        alias: the version of each twin (None: the latest).
        fit_range: check candidates against what the twins were fitted on: the range of the
            stored sessions of the subjects that have some (none stored: no checks; the weight
            range is that of each ensemble's largest-weight component).
        min_weight: components of smaller ensemble weight are left out (their cost is a full
            simulation each, their effect on the expectation at most that weight).

    Raises:
        CurriculumError: the store holds no twins.
        TwinNotFoundError: a subject without a twin or without the alias.
    """
    names = list(subjects or store.subjects())
    if not names:
        raise CurriculumError("--store", f"no twins in {store.root}")
    loaded = {s: store.load_twin(s, alias=alias) for s in names}
    twins = {s: t.twin for s, t in loaded.items()}  # an ensemble's largest-weight component
    stored: FitRange | None = None
    if fit_range:
        sessions = SessionStore(store)
        have = [s for s in names if sessions.sessions(s)]
        if have:
            stored = FitRange.from_trials({s: twins[s].model for s in have}, pd.concat([sessions.trials(s) for s in have]))
    ensembles = {s: t.ensemble if t.ensemble is not None else TwinEnsemble.of([t.twin], [1.0], [t.meta.rule]) for s, t in loaded.items()}
    return TwinPool.from_ensembles(ensembles, stored, min_weight)


def search_store(
    store: TwinStore,
    space: CurriculumSpace,
    config: SearchConfig,
    *,
    subjects: Sequence[str] | None = None,
    alias: str | None = "serving",
    fit_range: bool = True,
    result_name: str | None = None,
    backend: SearchBackend | None = None,
    on_pool: Callable[[TwinPool], None] | None = None,
) -> tuple[SearchResult[CurriculumScore], StoredResult | None]:
    """Load twins from ``store``, pool them, search ``space`` through them, store the result.

    Args:
        store: the twin store.
        space: the constrained search space.
        config: the search's sizes, sampler and seeds.
        subjects: twins to use (default: all; see :func:`load_pool`).
        alias: version of each twin (None: the latest).
        fit_range: check candidates against the range of the stored sessions.
        result_name: keep the summary in the store's results under this name (None: not kept).
        backend: the search (default: :func:`local_search` without a progress bar).
        on_pool: called with the pool before the search starts (a log line, say).

    Returns:
        The result and, with ``result_name``, its stored record.
    """
    pool = load_pool(store, subjects, alias, fit_range)
    if on_pool is not None:
        on_pool(pool)
    res = (backend or local_search(progress=False))(pool, space, config)
    stored = None if result_name is None else store.put_result(res.kind, result_name, res.summary())
    return res, stored


__all__ = [
    "SamplerKind",
    "SearchBackend",
    "SearchConfig",
    "SearchResult",
    "load_pool",
    "local_search",
    "make_sampler",
    "objective_value",
    "pool_scorer",
    "rescore",
    "search_curricula",
    "search_store",
    "suggest",
]
