"""Cohort fitting into the twin store: population rule → per-animal twins → stored versions,
and twin updates when an animal's new sessions arrive."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch

from twin.data.batch import make_batch
from twin.errors import TwinError
from twin.data.splits import split_last_sessions

from twin.fit.train import FitConfig, fit
from twin.models.ensemble import ENSEMBLE_RULE
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import Adaptation, TwinModel
from twin.models.state import TwinState, end_state
from twin.persist.records import TwinHyperparameters, TwinMetrics
from twin.persist.store import InTransaction, NewVersion, TwinStore, TwinVersion, hash_trials
from twin.protocol import IBL_DEFAULT, Curriculum, phase_of_contrasts
from twin.fit.adapt import adapt, choose_adaptation, default_adapt_config

SERVING_ALIAS = "serving"


@dataclass(frozen=True)
class CohortFitConfig:
    """How a cohort's twins are made.

    Attributes:
        spec: the population model's structure.
        fit: population optimisation settings.
        adaptation: per-animal adaptation, or None to choose it on held-out future sessions.
        choose_at: session ``k`` for that choice (fit < k, validate k, forecast > k); None → half
            the smallest animal's session count.
    """

    spec: ModelSpec = ModelSpec("dnn")
    fit: FitConfig = FitConfig()
    adaptation: Adaptation | None = None
    choose_at: int | None = None


@dataclass(frozen=True)
class CohortFitReport:
    """What a cohort fit stored."""

    versions: tuple[TwinVersion, ...]
    adaptation: Adaptation
    adaptation_table: pd.DataFrame | None
    population_val_ll: float
    seconds: float


@dataclass(frozen=True)
class PopulationFit:
    """The cohort-level step of a twin fit: population model and the chosen adaptation.

    Attributes:
        model: the population model.
        val_ll: its validation log-likelihood per trial (nats).
        adaptation: the per-animal adaptation.
        adaptation_table: how the adaptation was chosen (None when the config fixed it).
        warnings: the population fit's convergence warnings; empty when it converged.
    """

    model: LearnerModel
    val_ll: float
    adaptation: Adaptation
    adaptation_table: pd.DataFrame | None
    warnings: tuple[str, ...] = ()
    """The population fit's convergence warnings (stored with every twin of the cohort)."""


def fit_population(df: pd.DataFrame, config: CohortFitConfig = CohortFitConfig(), progress: bool = True) -> PopulationFit:
    """Fit the population rule on every animal (each one's last session validates) and choose
    the per-animal adaptation on held-out future sessions unless the config fixes it."""
    batch = make_batch(df, config.spec.features)
    train, val = split_last_sessions(batch)
    pop = fit(config.spec, train, val, config.fit, progress=progress, description=f"population {config.spec.rule}")
    adaptation, table = config.adaptation, None
    if adaptation is None:
        k = config.choose_at or max(2, int(batch.session.max(1).values.min().item()) // 2)
        adaptation, table = choose_adaptation(pop.model, batch, k)
    return PopulationFit(pop.model, pop.best_val_ll, adaptation, table, tuple(pop.warning_messages))


@dataclass(frozen=True)
class AnimalTwin:
    """One animal's adapted twin and what the store records about it.

    Attributes:
        subject: the animal.
        twin: its twin (the population rule, shared with the other twins of the fit, and the
            animal's parameters).
        trained_through_session: the last session it was fitted on.
        data_hash: hash of the animal's trials.
        val_ll: mean log-likelihood per trial on its validation session (nats).
        state: where it continues from.
        warnings: convergence warnings of its adaptation; empty when it converged.
    """

    subject: str
    twin: TwinModel
    trained_through_session: int
    data_hash: str
    val_ll: float
    state: TwinState | None = None
    warnings: tuple[str, ...] = ()

    @property
    def model(self) -> LearnerModel:
        """The twin as a learner model."""
        return self.twin.model


def last_phase(trials: pd.DataFrame, protocol: Curriculum = IBL_DEFAULT, window: int = 40) -> int:
    """The protocol phase one animal was in at the end of its last session (from the contrasts of
    its last ``window`` trials, :func:`twin.protocol.phase_of_contrasts`; iblrig v8 phases can
    change every 200 trials, so the window is short)."""
    last = trials[trials["session"] == trials["session"].max()].tail(window)
    return phase_of_contrasts(protocol, (last["contrast_left"] + last["contrast_right"]).to_numpy())


def twin_end_state(model: LearnerModel, trials: pd.DataFrame) -> TwinState:
    """One animal's twin state after all of ``trials`` (one subject), phase included."""
    return end_state(model, trials, phase=last_phase(trials))


def adapt_animals(population: PopulationFit, df: pd.DataFrame, device: str = "cpu") -> list[AnimalTwin]:
    """Adapt the twins of the animals in ``df`` (one batched fit) on ``device``. This is the
    unit of work that cohort fits split across processes or Ray tasks: its result for an animal
    depends only on the animals in the same call."""
    batch = make_batch(df, population.model.spec.features)
    train, val = split_last_sessions(batch)
    cfg = replace(default_adapt_config(population.adaptation), device=device)
    res = adapt(population.model, train, val, population.adaptation, cfg)
    out = []
    for i, subject in enumerate(batch.subjects):
        sub = df[df["subject"] == subject]
        twin = res.twins[subject]
        val_i = val.select([i])
        with torch.no_grad():
            v_ll = float(twin.model.log_likelihood(val_i).sum().item() / max(float(val_i.mask.sum().item()), 1.0))
        warnings = res.warnings.get(subject, ())
        out.append(AnimalTwin(subject, twin, int(sub["session"].max()), hash_trials(sub), v_ll, twin_end_state(twin.model, sub), warnings))
    return out


def animal_batches(df: pd.DataFrame, animals_per_batch: int) -> list[pd.DataFrame]:
    """Split a cohort's table into consecutive groups of ``animals_per_batch`` subjects."""
    if animals_per_batch < 1:
        raise ValueError("animals_per_batch must be >= 1")
    names = list(dict.fromkeys(df["subject"]))
    groups = [names[i : i + animals_per_batch] for i in range(0, len(names), animals_per_batch)]
    return [df[df["subject"].isin(g)] for g in groups]


def store_twins(
    store: TwinStore, population: PopulationFit, config: CohortFitConfig, twins: list[AnimalTwin], in_transaction: InTransaction | None = None
) -> tuple[TwinVersion, ...]:
    """Store every twin as a new version and move the ``serving`` alias to them, all in one
    transaction (a killed fit switches no alias; the population rule is stored once).

    The versions share a new cohort id (in their hyperparameters), by which
    ``twin store verify`` checks the cohort was switched whole; ``in_transaction`` joins the
    transaction (see :meth:`~twin.persist.store.TwinStore.put_many`).
    """
    hyper = TwinHyperparameters(spec=config.spec, fit=asdict(config.fit), adaptation=population.adaptation, cohort=uuid.uuid4().hex)
    metrics = [TwinMetrics(t.val_ll, population.val_ll, population.warnings, t.warnings) for t in twins]
    items = [NewVersion(t.subject, t.twin, t.trained_through_session, t.data_hash, m, hyper, t.state) for t, m in zip(twins, metrics)]
    return store.put_many(items, alias=SERVING_ALIAS, in_transaction=in_transaction)


def fit_cohort(
    df: pd.DataFrame, store: TwinStore, config: CohortFitConfig = CohortFitConfig(), progress: bool = True, animals_per_batch: int = 32
) -> CohortFitReport:
    """Fit the population rule on every animal, adapt one twin per animal (batches of
    ``animals_per_batch``, in this process), store them all.

    Each animal's twin is stored as a new version with the hash of that animal's trials and its
    last trained session, and the ``serving`` alias is moved to it.
    """
    t0 = time.perf_counter()
    population = fit_population(df, config, progress)
    twins = [t for part in animal_batches(df, animals_per_batch) for t in adapt_animals(population, part)]
    versions = store_twins(store, population, config, twins)
    return CohortFitReport(versions, population.adaptation, population.adaptation_table, population.val_ll, time.perf_counter() - t0)


def update_twin(
    store: TwinStore, subject: str, trials: pd.DataFrame, config: FitConfig | None = None, in_transaction: InTransaction | None = None
) -> TwinVersion:
    """Warm-start the subject's latest twin on all its sessions (the newest validates) and store
    the result as a new version; the previous versions stay as they were.

    Args:
        store: the twin store.
        subject: the animal.
        trials: the animal's full canonical trials table, new sessions included.
        config: optimisation settings of the adaptation step.
        in_transaction: joins the transaction that stores the new version (see
            :meth:`~twin.persist.store.TwinStore.put_many`).

    An ensemble twin is updated as one (every component warm-started, the weights kept:
    :func:`twin.fit.ensemble_cohort.update_ensemble`).
    """
    if store.get(subject).rule == ENSEMBLE_RULE:
        from twin.fit.ensemble_cohort import update_ensemble  # it builds on this module

        return update_ensemble(store, subject, trials, config, in_transaction)
    model, meta = store.load(subject)  # the animal's twin: adapting it warm-starts from its parameters
    sub = trials[trials["subject"] == subject]
    if sub.empty:
        raise TwinError(f"no trials of subject {subject!r} in the update")
    if int(sub["session"].max()) <= meta.trained_through_session:
        raise TwinError(f"subject {subject!r}: no session after {meta.trained_through_session}, the twin is up to date")
    batch = make_batch(sub, model.spec.features)
    train, val = split_last_sessions(batch)
    adaptation = meta.hyperparameters.adaptation or Adaptation.INITIAL_WEIGHTS_AND_RATE
    if adaptation is Adaptation.NONE:
        adaptation = Adaptation.INITIAL_WEIGHTS
    res = adapt(model, train, val, adaptation, config)
    twin = res.twins[subject]
    return store.put(
        subject,
        twin,
        trained_through_session=int(sub["session"].max()),
        data_hash=hash_trials(sub),
        metrics=TwinMetrics(
            val_ll=res.val_ll, population_warnings=meta.metrics.population_warnings, adaptation_warnings=res.warnings.get(subject, ())
        ),
        hyperparameters=replace(meta.hyperparameters, adaptation=adaptation, warm_start_from=meta.version),
        alias=SERVING_ALIAS,
        state=twin_end_state(twin.model, sub),
        in_transaction=in_transaction,
    )


__all__ = [
    "AnimalTwin",
    "CohortFitConfig",
    "CohortFitReport",
    "PopulationFit",
    "SERVING_ALIAS",
    "adapt_animals",
    "animal_batches",
    "fit_cohort",
    "fit_population",
    "last_phase",
    "twin_end_state",
    "store_twins",
    "update_twin",
]
