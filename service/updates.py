"""Sessions in, twins out: uploading a finished session (which starts the subject's twin
update) and fitting a cohort, both as long-running operations.

Twin updates are queued one per subject: an upload while the subject's update waits joins it
(coalesces), an upload while it runs queues the next one, and an update that finds sessions
newer than the ones it trained on queues a follow-up. Over a store's operation log an upload's
update is recorded in the session's own transaction, with the upload's request id, so neither
is lost or done twice when the server is killed; :meth:`Updates.recover` resumes them at the
next start and queues an update for any subject whose stored sessions its twin has not seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

import pandas as pd

from twin.cancel import cancellable
from twin.errors import TrialDataError
from twin.models.params import Adaptation
from twin.fit.cohort import CohortFitConfig, CohortFitReport, adapt_animals, animal_batches, fit_population, store_twins, update_twin
from twin.fit.ensemble_cohort import ComponentConfig, ComponentFit, EnsembleFitConfig, fit_component, fit_ensemble, store_ensembles
from twin.fit.train import FitConfig
from twin.models.ensemble import ENSEMBLE_RULE
from twin.models.learner import ModelSpec
from twin.models.rules import get_rule
from twin.persist.oplog import OperationRecord
from twin.persist.sessions import SessionRecord
from twin.persist.store import TwinStore, TwinVersion

from service.catalog import TwinCatalog
from service.errors import FieldViolation, InvalidArgumentError, InvalidTrialsError, UnavailableError
from service.jobs import JobContext, JobFn, JobKind, JobManager, JobSnapshot, JobState, JobType

log = logging.getLogger("service.updates")


@dataclass(frozen=True)
class UploadOutcome:
    """A stored session and the twin update it started.

    Attributes:
        record: the stored session.
        operation: the twin update it started or joined (None when none).
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
        rule: learning rule name, or ``ensemble`` for the default ensemble twin
            (:data:`~twin.fit.ensemble_cohort.DEFAULT_ENSEMBLE_RULES`, stacked).
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


MAX_ID_CHARS = 200
"""Longest subject name, label or request id."""


def cohort_params(req: FitCohortRequest, subjects: list[str]) -> dict[str, object]:
    """A cohort fit as stored in its operation's row (what resuming it needs)."""
    ad = None if req.adaptation is None else req.adaptation.value
    return {"subjects": list(subjects), "rule": req.rule, "epochs": req.epochs, "patience": req.patience, "adaptation": ad, "seed": req.seed}


def cohort_request(params: Mapping[str, object]) -> tuple[FitCohortRequest, list[str]]:
    """The cohort fit a stored operation row describes (see :func:`cohort_params`)."""
    ad = params.get("adaptation")
    subjects = [str(x) for x in params["subjects"]]  # type: ignore[union-attr]
    req = FitCohortRequest(tuple(subjects), str(params["rule"]), int(params["epochs"]), int(params["patience"]), Adaptation(ad) if ad else None, int(params["seed"]))  # type: ignore[call-overload]
    return req, subjects


class _SeenUpload(Exception):
    """An upload's request id is recorded already (raised inside the session's transaction)."""


#: ``fit(df, store, config, ctx)`` → the stored cohort (local by default; Ray when injected).
CohortFitFn = Callable[[pd.DataFrame, TwinStore, CohortFitConfig, JobContext], CohortFitReport]


def local_ensemble_fit(df: pd.DataFrame, store: TwinStore, config: EnsembleFitConfig, ctx: JobContext) -> CohortFitReport:
    """Fit a cohort's ensemble twins in this process (:func:`twin.fit.ensemble_cohort.fit_ensemble`),
    reporting progress per component and honouring cancellation between them (nothing is stored
    when cancelled)."""
    t0 = time.perf_counter()
    n = len(config.components)

    def components(comps: "list[ComponentConfig] | tuple[ComponentConfig, ...]", frame: pd.DataFrame, cfg: EnsembleFitConfig, k: int, per_batch: int, progress: bool) -> list[ComponentFit]:
        out = []
        for i, c in enumerate(comps):
            ctx.check_cancelled()
            ctx.report(0.05 + 0.9 * i / n, f"fitting ensemble component {i + 1}/{n} ({c.label}) on {frame['subject'].nunique()} animals")
            out.append(fit_component(c, frame, cfg, k, per_batch, progress))
        return out

    result = fit_ensemble(df, config, progress=False, fit_components=components)
    ctx.report(0.97, "storing ensemble twins")
    versions = store_ensembles(store, result, config, in_transaction=ctx.record_versions)
    vals = [a.val_ll for a in result.animals if a.val_ll == a.val_ll]
    return CohortFitReport(versions, config.adaptation, None, float(sum(vals) / len(vals)) if vals else float("nan"), time.perf_counter() - t0)


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
    versions = store_twins(store, population, config, twins, in_transaction=ctx.record_versions)
    return CohortFitReport(versions, population.adaptation, population.adaptation_table, population.val_ll, time.perf_counter() - t0)


class Updates:
    """UploadSession and FitCohort: store sessions and (re)fit twins in long-running operations.

    Args:
        catalog: twin lookups, the stores and the limits and defaults.
        jobs: runs the operations (durably when it has an operation log).
        cohort_fit: the cohort-fit backend (in-process by default).
    """

    def __init__(self, catalog: TwinCatalog, jobs: JobManager, cohort_fit: CohortFitFn = local_cohort_fit) -> None:
        self.catalog, self.jobs, self.cohort_fit = catalog, jobs, cohort_fit
        self.store, self.sessions = catalog.store, catalog.sessions
        self.oplog = jobs.oplog
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        jobs.register(JobKind.TWIN_UPDATE, JobType(self._encode_versions, self._decode_update, lambda rec: self._update_job(rec.subject)))
        jobs.register(JobKind.FIT_COHORT, JobType(self._encode_cohort, self._decode_cohort, self._resume_cohort, resume_rank=1))

    # -- uploads -------------------------------------------------------------------------------

    def upload_session(
        self, subject: str, trials: pd.DataFrame, label: str | None = None, skip_update: bool = False, trials_field: str = "trials", request_id: str = ""
    ) -> UploadOutcome:
        """Validate and store one finished session; start the subject's twin update (or join
        the one waiting). A request id seen before returns what that upload stored.

        Raises:
            InvalidArgumentError: a bad subject name, label or request id, or a request id
                used before for another subject.
            InvalidTrialsError: bad trials (located at ``trials_field[i].column``).
            UnavailableError: the operation queue is full (nothing is stored; retry later).
        """
        for name, value in (("subject", subject), ("label", label or ""), ("request_id", request_id)):
            if len(value) > MAX_ID_CHARS:
                raise InvalidArgumentError.field(name, f"at most {MAX_ID_CHARS} characters")
        if not subject or not subject.strip():
            raise InvalidArgumentError.field("subject", "required")
        if request_id and self.oplog is not None:
            seen = self._seen_upload(request_id, subject)
            if seen is not None:
                return seen
        versions = [] if skip_update else self.store.versions(subject)
        latest = versions[-1] if versions else None
        if latest is not None and self.oplog is not None and self.oplog.pending(JobKind.TWIN_UPDATE, subject) is None:
            self.jobs.check_capacity()  # refused before anything is stored
        joined: dict[str, object] = {}

        def in_transaction(s: Session, rec: SessionRecord) -> None:
            assert self.oplog is not None
            if request_id and self.oplog.upload(request_id, s) is not None:
                raise _SeenUpload()
            op_id = ""
            if latest is not None and rec.session > latest.trained_through_session:
                pending = self.oplog.pending(JobKind.TWIN_UPDATE, subject, s)
                if pending is None:
                    pending = self.oplog.add(self.jobs.new_record(JobKind.TWIN_UPDATE, subject, params={"subject": subject}), s)
                    joined["new"] = True
                op_id = pending.id
            if request_id:
                self.oplog.record_upload(s, request_id, subject, rec.session, op_id)
            joined["op"] = op_id

        try:
            record = self.sessions.add_session(subject, trials, label=label, source=trials_field, in_transaction=in_transaction if self.oplog is not None else None)
        except TrialDataError as exc:
            raise InvalidTrialsError(trials_field, exc) from None
        except _SeenUpload:
            seen = self._seen_upload(request_id, subject)
            assert seen is not None
            return seen
        self.catalog.invalidate(subject)
        log.info("session stored", extra={"subject": subject, "session": record.session, "n_trials": record.n_trials})
        if skip_update:
            return UploadOutcome(record, None, "twin update skipped on request")
        if latest is None:
            return UploadOutcome(record, None, f"subject {subject!r} has no twin yet; fit one with FitCohort")
        if record.session <= latest.trained_through_session:
            why = (
                f"stored as session {record.session}, but twin v{latest.version} is already trained through session "
                f"{latest.trained_through_session}: the stored sessions do not cover the twin's history"
            )
            return UploadOutcome(record, None, why)
        if self.oplog is None:
            return UploadOutcome(record, self._queue_update(subject), "")
        op_id = str(joined["op"])
        op = self.jobs.adopt(op_id, self._update_job(subject)) if joined.get("new") else self.jobs.get(op_id)
        return UploadOutcome(record, op, "")

    def _seen_upload(self, request_id: str, subject: str) -> UploadOutcome | None:
        """What an upload with this request id stored before (None: it is new)."""
        assert self.oplog is not None
        seen = self.oplog.upload(request_id)
        if seen is None:
            return None
        if seen.subject != subject:
            raise InvalidArgumentError.field("request_id", f"already used by an upload for another subject ({seen.subject!r})")
        record = next(r for r in self.sessions.sessions(subject) if r.session == seen.session)
        op = self.jobs.get(seen.operation_id) if seen.operation_id else None
        return UploadOutcome(record, op, "" if op is not None else "no twin update was started by this upload")

    # -- twin updates --------------------------------------------------------------------------

    def _queue_update(self, subject: str) -> JobSnapshot:
        """The subject's waiting update (new sessions join it), or a new one."""
        waiting = self.jobs.list(JobKind.TWIN_UPDATE, JobState.PENDING, subject)
        if waiting:
            return waiting[-1]
        return self.jobs.submit(JobKind.TWIN_UPDATE, self._update_job(subject), subject=subject, params={"subject": subject})

    def _update_job(self, subject: str) -> JobFn:
        return lambda ctx: self._update_twin(subject, ctx)

    def _lock(self, subject: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(subject, threading.Lock())

    def _update_twin(self, subject: str, ctx: JobContext) -> TwinVersion:
        with self._lock(subject):  # one update per subject at a time
            ctx.report(0.05, "loading the stored sessions")
            df = self.sessions.trials(subject)
            latest = self.store.get(subject)
            if int(df["session"].max()) <= latest.trained_through_session:
                ctx.report(1.0, f"twin v{latest.version} already covers every stored session")
                return latest
            ctx.report(0.1, f"warm-starting twin v{latest.version} on sessions 1..{int(df['session'].max())}")
            try:
                with cancellable(ctx.check_cancelled):  # CancelOperation (or shutdown) stops the fit within a trial
                    version = update_twin(self.store, subject, df, self.catalog.config.update_fit, in_transaction=ctx.record_versions)
            finally:
                self.catalog.invalidate(subject)
        self._follow_up(subject)
        return version

    def _follow_up(self, subject: str) -> JobSnapshot | None:
        """Queue the subject's next update (or join the queued one) when sessions its twin has
        not seen are stored (None when none is needed or the server is stopping)."""
        stored = self.sessions.sessions(subject)
        versions = self.store.versions(subject)
        if not stored or not versions or stored[-1].session <= versions[-1].trained_through_session:
            return None
        try:
            return self._queue_update(subject)
        except UnavailableError:  # shutting down or full: the next start's recovery queues it
            return None

    def recover(self) -> list[str]:
        """After a restart: resume (or fail) the previous process's operations, then queue an
        update for every subject whose stored sessions its twin has not seen. Returns the
        subjects queued."""
        self.jobs.recover()
        queued = []
        for subject in self.store.subjects():
            if self.jobs.list(JobKind.TWIN_UPDATE, JobState.PENDING, subject) or self.jobs.list(JobKind.TWIN_UPDATE, JobState.RUNNING, subject):
                continue
            if self._follow_up(subject) is not None:
                queued.append(subject)
        return queued

    # -- cohort fits ---------------------------------------------------------------------------

    def fit_cohort(self, req: FitCohortRequest, request_id: str = "") -> JobSnapshot:
        """Start a cohort fit over stored sessions (long-running); a request id seen before
        returns that fit's operation (the same id with a different request: INVALID_ARGUMENT)."""
        if len(request_id) > MAX_ID_CHARS:
            raise InvalidArgumentError.field("request_id", f"at most {MAX_ID_CHARS} characters")
        ensemble = req.rule == ENSEMBLE_RULE
        if not ensemble:
            get_rule(req.rule)  # UnknownRuleError → INVALID_ARGUMENT on `rule`
        subjects = list(req.subjects) or self.sessions.subjects()
        bad = []
        for i, s in enumerate(req.subjects):
            n = len(self.sessions.sessions(s))
            if n < 2:
                bad.append(FieldViolation(f"subjects[{i}]", f"subject {s!r} has {n} stored session(s); a twin needs at least 2"))
        if ensemble and not bad and subjects:
            fewest = min(len(self.sessions.sessions(s)) for s in subjects)
            if fewest < 3:
                bad.append(FieldViolation("subjects", f"an ensemble is stacked on held-out sessions: it needs at least 3 sessions per animal (one has {fewest})"))
            if req.adaptation in (Adaptation.NONE, Adaptation.FULL):
                bad.append(FieldViolation("adaptation", "an ensemble adapts each component's w0 (and rates): unset, w0 or w0+rate"))
        elif req.adaptation is None and not bad and subjects:
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
        subject = subjects[0] if len(subjects) == 1 else ""
        as_sent = cohort_params(req, list(req.subjects))
        return self.jobs.submit(JobKind.FIT_COHORT, self._cohort_job(req, subjects), subject=subject, request_id=request_id, params=cohort_params(req, subjects), request=as_sent)

    def _cohort_job(self, req: FitCohortRequest, subjects: list[str]) -> JobFn:
        fit_cfg = FitConfig(epochs=req.epochs, patience=req.patience, seed=req.seed)
        ensemble = req.rule == ENSEMBLE_RULE
        if ensemble:
            ens_cfg = EnsembleFitConfig(fit=fit_cfg, adaptation=req.adaptation or Adaptation.INITIAL_WEIGHTS_AND_RATE)  # the default components
        else:
            config = CohortFitConfig(spec=ModelSpec(req.rule), fit=fit_cfg, adaptation=req.adaptation)

        def run(ctx: JobContext) -> CohortFitReport:
            ctx.report(0.01, f"loading the sessions of {len(subjects)} subjects")
            df = pd.concat([self.sessions.trials(s) for s in subjects], ignore_index=True)
            ctx.check_cancelled()
            try:
                with cancellable(ctx.check_cancelled):  # CancelOperation (or shutdown) stops the fit within a trial
                    if ensemble:  # the components one after the other here (the cluster backends fit one rule)
                        return local_ensemble_fit(df, self.store, ens_cfg, ctx)
                    return self.cohort_fit(df, self.store, config, ctx)
            finally:
                for s in subjects:
                    self.catalog.invalidate(s)

        return run

    def _resume_cohort(self, rec: OperationRecord) -> JobFn:
        return self._cohort_job(*cohort_request(rec.params))

    # -- results in the operation log ----------------------------------------------------------

    @staticmethod
    def _encode_versions(result: object) -> dict[str, object]:
        versions = result.versions if isinstance(result, CohortFitReport) else (result,)
        return {"twins": [[v.subject, v.version] for v in versions]}  # type: ignore[union-attr]

    def _decode_update(self, d: Mapping[str, object]) -> TwinVersion:
        (subject, version), = d["twins"]  # type: ignore[misc]
        return self.store.get(str(subject), int(version))

    def _encode_cohort(self, result: object) -> dict[str, object]:
        assert isinstance(result, CohortFitReport)
        return {**self._encode_versions(result), "adaptation": result.adaptation.value, "population_val_ll": result.population_val_ll, "seconds": result.seconds}

    def _decode_cohort(self, d: Mapping[str, object]) -> CohortFitReport:
        versions = tuple(self.store.get(str(s), int(v)) for s, v in d["twins"])  # type: ignore[union-attr]
        first = versions[0].hyperparameters if versions else None
        adaptation = Adaptation(d["adaptation"]) if d.get("adaptation") else (first.adaptation if first and first.adaptation else Adaptation.NONE)
        pop = d.get("population_val_ll", versions[0].metrics.population_val_ll if versions else None)
        return CohortFitReport(versions, adaptation, None, float(pop or 0.0), float(d.get("seconds", 0.0)))  # type: ignore[arg-type]


__all__ = ["CohortFitFn", "FitCohortRequest", "UploadOutcome", "Updates", "cohort_params", "cohort_request", "local_cohort_fit", "local_ensemble_fit"]
