"""Cohort fitting into the twin store: population rule → per-animal twins → stored versions,
and twin updates when an animal's new sessions arrive."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import pandas as pd

from twin.batch import TrialBatch, make_batch
from twin.errors import TwinError

from twin.fit import FitConfig, fit
from twin.model import ModelSpec
from twin.store import TwinStore, TwinVersion, hash_trials
from twin.twins import Adaptation, adapt, choose_adaptation

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


def _last_session_split(batch: TrialBatch) -> tuple[TrialBatch, TrialBatch]:
    last = batch.session.max(1).values
    if int(last.min()) < 2:
        raise TwinError("every animal needs at least 2 sessions (the last one validates the fit)")
    return batch.truncate_sessions(last - 1), batch.with_mask(batch.sessions_mask(last))


def fit_cohort(df: pd.DataFrame, store: TwinStore, config: CohortFitConfig = CohortFitConfig(), progress: bool = True) -> CohortFitReport:
    """Fit the population rule on every animal, adapt one twin per animal, store them all.

    Each animal's twin is stored as a new version with the hash of that animal's trials and its
    last trained session, and the ``serving`` alias is moved to it.
    """
    t0 = time.perf_counter()
    batch = make_batch(df, config.spec.features)
    train, val = _last_session_split(batch)
    pop = fit(config.spec, train, val, config.fit, progress=progress, description=f"population {config.spec.rule}")
    table = None
    adaptation = config.adaptation
    if adaptation is None:
        k = config.choose_at or max(2, int(batch.session.max(1).values.min().item()) // 2)
        adaptation, table = choose_adaptation(pop.model, batch, k)
    twins = adapt(pop.model, train, val, adaptation)
    versions = []
    for i, subject in enumerate(batch.subjects):
        sub = df[df["subject"] == subject]
        twin = twins.twins[subject]
        val_i = val.select([i])
        n = float(val_i.mask.sum().item())
        v_ll = float(twin.log_likelihood(val_i).sum().item() / max(n, 1.0))
        versions.append(
            store.put(
                subject,
                twin,
                trained_through_session=int(sub["session"].max()),
                data_hash=hash_trials(sub),
                metrics={"val_ll": v_ll, "population_val_ll": pop.best_val_ll},
                hyperparameters={"spec": config.spec.to_dict(), "fit": asdict(config.fit), "adaptation": adaptation.value},
                alias=SERVING_ALIAS,
            )
        )
    return CohortFitReport(tuple(versions), adaptation, table, pop.best_val_ll, time.perf_counter() - t0)


def update_twin(store: TwinStore, subject: str, trials: pd.DataFrame, config: FitConfig | None = None) -> TwinVersion:
    """Warm-start the subject's latest twin on all its sessions (the newest validates) and store
    the result as a new version; the previous versions stay as they were.

    Args:
        store: the twin store.
        subject: the animal.
        trials: the animal's full canonical trials table, new sessions included.
        config: optimisation settings of the adaptation step.
    """
    model, meta = store.load(subject)
    sub = trials[trials["subject"] == subject]
    if sub.empty:
        raise TwinError(f"no trials of subject {subject!r} in the update")
    if int(sub["session"].max()) <= meta.trained_through_session:
        raise TwinError(f"subject {subject!r}: no session after {meta.trained_through_session}, the twin is up to date")
    batch = make_batch(sub, model.spec.features)
    train, val = _last_session_split(batch)
    adaptation = Adaptation(meta.hyperparameters.get("adaptation", Adaptation.INITIAL_WEIGHTS_AND_RATE.value))
    if adaptation is Adaptation.NONE:
        adaptation = Adaptation.INITIAL_WEIGHTS
    res = adapt(model, train, val, adaptation, config)
    twin = res.twins[subject]
    return store.put(
        subject,
        twin,
        trained_through_session=int(sub["session"].max()),
        data_hash=hash_trials(sub),
        metrics={"val_ll": res.val_ll},
        hyperparameters={**meta.hyperparameters, "adaptation": adaptation.value, "warm_start_from": meta.version},
        alias=SERVING_ALIAS,
    )


__all__ = ["CohortFitConfig", "CohortFitReport", "fit_cohort", "update_twin", "SERVING_ALIAS"]
