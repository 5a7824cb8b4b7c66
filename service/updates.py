"""Sessions in, twins out: uploading a finished session (which starts the subject's twin
update) and fitting a cohort, both as long-running operations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from twin.cancel import cancellable
from twin.errors import TrialDataError
from twin.models.params import Adaptation
from twin.fit.cohort import CohortFitConfig, CohortFitReport, adapt_animals, animal_batches, fit_population, store_twins, update_twin
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.models.rules import get_rule
from twin.persist.sessions import SessionRecord
from twin.persist.store import TwinStore, TwinVersion

from service.catalog import TwinCatalog
from service.errors import FieldViolation, InvalidArgumentError, InvalidTrialsError
from service.jobs import JobContext, JobKind, JobManager, JobSnapshot

log = logging.getLogger("service.updates")


@dataclass(frozen=True)
class UploadOutcome:
    """A stored session and the twin update it started.

    Attributes:
        record: the stored session.
        operation: the twin update (None when none was started).
        skipped_reason: why none was started ("" when one was).
    """

    record: SessionRecord
    operation: JobSnapshot | None
    skipped_reason: str


@dataclass(frozen=True)
class FitCohortRequest:
    """A cohort fit.

    Attributes:
        subjects: subjects to fit (empty: every subject with stored sessions).
        rule: learning rule name.
        epochs: maximum population epochs.
        patience: early-stopping patience.
        adaptation: per-animal adaptation (None: chosen on held-out sessions).
        seed: seeds the fit.
    """

    subjects: tuple[str, ...] = ()
    rule: str = "dnn"
    epochs: int = 300
    patience: int = 30
    adaptation: Adaptation | None = None
    seed: int = 0


#: ``fit(df, store, config, ctx)`` → the stored cohort (local by default; Ray when injected).
CohortFitFn = Callable[[pd.DataFrame, TwinStore, CohortFitConfig, JobContext], CohortFitReport]


def local_cohort_fit(df: pd.DataFrame, store: TwinStore, config: CohortFitConfig, ctx: JobContext, animals_per_batch: int = 32) -> CohortFitReport:
    """Fit a cohort in this process, reporting progress and honouring cancellation between the
    population fit and each adaptation batch (nothing is stored when cancelled)."""
    t0 = time.perf_counter()
    ctx.report(0.05, f"fitting the population {config.spec.rule} rule on {df['subject'].nunique()} animals")
    population = fit_population(df, config, progress=False)
    parts = animal_batches(df, animals_per_batch)
    twins = []
    for i, part in enumerate(parts):
        ctx.report(0.6 + 0.35 * i / len(parts), f"adapting twins: batch {i + 1}/{len(parts)}")
        twins += adapt_animals(population, part)
    ctx.report(0.97, "storing twins")
    versions = store_twins(store, population, config, twins)
    return CohortFitReport(versions, population.adaptation, population.adaptation_table, population.val_ll, time.perf_counter() - t0)


class Updates:
    """UploadSession and FitCohort: store sessions and (re)fit twins in long-running operations.

    Args:
        catalog: twin lookups, the stores and the limits and defaults.
        jobs: runs the operations.
        cohort_fit: the cohort-fit backend (in-process by default).
    """

    def __init__(self, catalog: TwinCatalog, jobs: JobManager, cohort_fit: CohortFitFn = local_cohort_fit) -> None:
        self.catalog, self.jobs, self.cohort_fit = catalog, jobs, cohort_fit
        self.store, self.sessions = catalog.store, catalog.sessions

    def upload_session(self, subject: str, trials: pd.DataFrame, label: str | None = None, skip_update: bool = False, trials_field: str = "trials") -> UploadOutcome:
        """Validate and store one finished session; start the subject's twin update.

        Raises:
            InvalidArgumentError: a bad subject name.
            InvalidTrialsError: bad trials (located at ``trials_field[i].column``).
        """
        if not subject or not subject.strip():
            raise InvalidArgumentError.field("subject", "required")
        if len(subject) > 200:
            raise InvalidArgumentError.field("subject", "at most 200 characters")
        if label is not None and len(label) > 200:
            raise InvalidArgumentError.field("label", "at most 200 characters")
        try:
            record = self.sessions.add_session(subject, trials, label=label, source=trials_field)
        except TrialDataError as exc:
            raise InvalidTrialsError(trials_field, exc) from None
        self.catalog.invalidate(subject)
        log.info("session stored", extra={"subject": subject, "session": record.session, "n_trials": record.n_trials})
        if skip_update:
            return UploadOutcome(record, None, "twin update skipped on request")
        versions = self.store.versions(subject)
        if not versions:
            return UploadOutcome(record, None, f"subject {subject!r} has no twin yet; fit one with FitCohort")
        latest = versions[-1]
        if record.session <= latest.trained_through_session:
            why = (
                f"stored as session {record.session}, but twin v{latest.version} is already trained through session "
                f"{latest.trained_through_session}: the stored sessions do not cover the twin's history"
            )
            return UploadOutcome(record, None, why)
        op = self.jobs.submit(JobKind.TWIN_UPDATE, lambda ctx: self._update_twin(subject, ctx), subject=subject)
        return UploadOutcome(record, op, "")

    def _update_twin(self, subject: str, ctx: JobContext) -> TwinVersion:
        ctx.report(0.05, "loading the stored sessions")
        df = self.sessions.trials(subject)
        latest = self.store.get(subject)
        if int(df["session"].max()) <= latest.trained_through_session:
            ctx.report(1.0, f"twin v{latest.version} already covers every stored session")
            return latest
        ctx.report(0.1, f"warm-starting twin v{latest.version} on sessions 1..{int(df['session'].max())}")
        try:
            with cancellable(ctx.check_cancelled):  # CancelOperation (or shutdown) stops the fit within a trial
                return update_twin(self.store, subject, df, self.catalog.config.update_fit)
        finally:
            self.catalog.invalidate(subject)

    def fit_cohort(self, req: FitCohortRequest) -> JobSnapshot:
        """Start a cohort fit over stored sessions (long-running)."""
        get_rule(req.rule)  # UnknownRuleError → INVALID_ARGUMENT on `rule`
        subjects = list(req.subjects) or self.sessions.subjects()
        bad = []
        for i, s in enumerate(req.subjects):
            n = len(self.sessions.sessions(s))
            if n < 2:
                bad.append(FieldViolation(f"subjects[{i}]", f"subject {s!r} has {n} stored session(s); a twin needs at least 2"))
        if req.adaptation is None and not bad and subjects:
            fewest = min(len(self.sessions.sessions(s)) for s in subjects)
            if fewest < 3:
                why = f"choosing the adaptation on held-out sessions needs at least 3 sessions per animal (one has {fewest}); set it explicitly"
                bad.append(FieldViolation("adaptation", why))
        if not subjects:
            bad.append(FieldViolation("subjects", "no subject has stored sessions"))
        if req.epochs < 1 or req.patience < 1:
            bad.append(FieldViolation("epochs" if req.epochs < 1 else "patience", "must be >= 1"))
        if bad:
            raise InvalidArgumentError(*bad)
        config = CohortFitConfig(spec=ModelSpec(req.rule), fit=FitConfig(epochs=req.epochs, patience=req.patience, seed=req.seed), adaptation=req.adaptation)

        def run(ctx: JobContext) -> CohortFitReport:
            ctx.report(0.01, f"loading the sessions of {len(subjects)} subjects")
            df = pd.concat([self.sessions.trials(s) for s in subjects], ignore_index=True)
            ctx.check_cancelled()
            try:
                with cancellable(ctx.check_cancelled):  # CancelOperation (or shutdown) stops the fit within a trial
                    return self.cohort_fit(df, self.store, config, ctx)
            finally:
                for s in subjects:
                    self.catalog.invalidate(s)

        return self.jobs.submit(JobKind.FIT_COHORT, run, subject=subjects[0] if len(subjects) == 1 else "")


__all__ = ["CohortFitFn", "FitCohortRequest", "UploadOutcome", "Updates", "local_cohort_fit"]
