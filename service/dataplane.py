"""The data plane: what the gRPC servicers do, in domain terms (no protobuf here).

The servicers convert requests into the types of this module, call one method of
:class:`TwinDataPlane`, and convert the result back. Everything the service does lives here
and in the core; the collaborators (stores, job manager, twin cache, next-session proposer,
curriculum search, cohort-fit backend) are injected, so tests and deployments swap them.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from twin.fit.cohort import (
    SERVING_ALIAS,
    CohortFitConfig,
    CohortFitReport,
    adapt_animals,
    animal_batches,
    fit_population,
    last_phase,
    store_twins,
    twin_end_state,
    update_twin,
)
from twin.errors import TrialDataError
from twin.fit.train import FitConfig
from twin.sim.forecast import SessionForecast, forecast_session
from twin.models.learner import ModelSpec
from twin.analysis.predict import predict
from twin.models.rules import get_rule
from twin.persist.sessions import SessionRecord, SessionStore
from twin.models.state import TwinState
from twin.persist.store import Twin, TwinNotFoundError, TwinStore, TwinVersion
from twin.protocol import Curriculum
from twin.data.trials import validate_trials
from twin.fit.adapt import Adaptation

from service.cache import ResultCache, TwinCache
from service.errors import (
    DeadlineExceededError,
    FeatureUnavailableError,
    FieldViolation,
    InvalidArgumentError,
    InvalidTrialsError,
    NoTwinError,
    SubjectNotFoundError,
)
from service.jobs import JobContext, JobKind, JobManager, JobSnapshot, JobState
from service.paging import Page, paginate
from optimizer.planning import (
    CurriculumSearchFn,
    CurriculumSearchOutcome,
    CurriculumSearchRequest,
    LabDefault,
    PlanConstraints,
    Proposal,
    ProposeFn,
    SessionPlan,
    plan_next_session,
)

log = logging.getLogger("service.dataplane")


# -- request and result types -------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """The client's deadline, checked between steps of a request.

    Attributes:
        expires_at: ``time.monotonic()`` value it expires at (None: no deadline).
    """

    expires_at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        """A deadline ``seconds`` from now (None: none)."""
        return cls(None if seconds is None else time.monotonic() + seconds)

    def check(self, step: str) -> None:
        """Raise if the deadline passed (before ``step``).

        Raises:
            DeadlineExceededError: it did.
        """
        if self.expires_at is not None and time.monotonic() >= self.expires_at:
            raise DeadlineExceededError(f"the deadline passed before {step}")


NO_DEADLINE = Deadline()


@dataclass(frozen=True)
class TwinSelector:
    """Names a twin version: ``version`` or ``alias``, else the ``serving`` alias (or the
    latest version when the subject has no serving alias)."""

    subject: str
    version: int | None = None
    alias: str | None = None


@dataclass(frozen=True)
class StoredHistory:
    """Run along the subject's stored sessions.

    Attributes:
        through_session: last session used (None: all).
        from_session: first session returned (None: all; earlier ones still drive the weights).
    """

    through_session: int | None = None
    from_session: int | None = None


@dataclass(frozen=True, eq=False)
class SuppliedHistory:
    """Run along trials sent with the request.

    Attributes:
        trials: canonical trials (``subject`` column may be absent; set from the selector).
        continue_from_twin: the trials follow the twin's last trained session.
        field: request path of the trials, for error messages.
    """

    trials: pd.DataFrame
    continue_from_twin: bool = False
    field: str = "supplied.trials"


@dataclass(frozen=True)
class PredictResult:
    """Per-trial predictions of a twin.

    Attributes:
        twin: the version used.
        session: ``[T]`` session numbers.
        trial: ``[T]`` trial numbers.
        p_right: ``[T]`` p(right choice).
        weights: ``[T, K]`` weights in force.
        feature_names: the ``K`` weight names.
        log_likelihood: of the observed choices on these trials, nats.
    """

    twin: TwinVersion
    session: np.ndarray
    trial: np.ndarray
    p_right: np.ndarray
    weights: np.ndarray
    feature_names: tuple[str, ...]
    log_likelihood: float

    @property
    def n_trials(self) -> int:
        return int(self.p_right.shape[0])


@dataclass(frozen=True)
class ForecastRequest:
    """A forecast of the twin's next session.

    Attributes:
        twin: which twin.
        protocol: the planned mechanics (None: the lab's default).
        n_trials: trials (None: the middle of the protocol's session range).
        n_rollouts: simulated copies (None: the server's default).
        seed: seeds the simulation.
        start_phase: phase to start in (None: where the animal left off).
        interval_level: coverage of the intervals (None: the server's default).
    """

    twin: TwinSelector
    protocol: Curriculum | None = None
    n_trials: int | None = None
    n_rollouts: int | None = None
    seed: int = 0
    start_phase: int | None = None
    interval_level: float | None = None


@dataclass(frozen=True)
class ForecastResult:
    """A forecast and what it was made with."""

    twin: TwinVersion
    forecast: SessionForecast
    protocol: Curriculum


@dataclass(frozen=True)
class SubjectInfo:
    """What the server knows about a subject."""

    name: str
    n_sessions: int
    n_trials: int
    serving_version: int | None
    last_session_at: dt.datetime | None


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


@dataclass(frozen=True)
class NextSessionRequest:
    """A next-session plan request.

    Attributes:
        subject: the animal.
        constraints: limits of the plan.
        n_rollouts: simulated copies for the forecast (None: the server's default).
        seed: seeds the forecast.
    """

    subject: str
    constraints: PlanConstraints = PlanConstraints()
    n_rollouts: int | None = None
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


@dataclass(frozen=True)
class DataPlaneConfig:
    """Limits and defaults of the service.

    Attributes:
        default_page_size: page size when a request sets none.
        max_page_size: largest page.
        default_rollouts: forecast rollouts when a request sets none.
        max_rollouts: most forecast rollouts per request.
        max_forecast_trial_steps: most rollouts × trials per forecast (bounds its cost).
        interval_level: default interval coverage.
        max_interval_width: default widest acceptable accuracy interval of a plan.
        update_fit: optimisation settings of twin updates (None: the core's defaults).
        prediction_cache_trials: trials of stored-history predictions kept in memory (0: none).
        metadata_ttl_s: how stale a subject's metadata snapshot (versions, aliases, sessions) may
            be; changes made by other processes sharing the store are seen within it, changes
            made through this server at once.
    """

    default_page_size: int = 100
    max_page_size: int = 1000
    default_rollouts: int = 200
    max_rollouts: int = 2000
    max_forecast_trial_steps: int = 2_000_000
    interval_level: float = 0.9
    max_interval_width: float = 0.3
    update_fit: FitConfig | None = None
    prediction_cache_trials: int = 2_000_000
    metadata_ttl_s: float = 1.0


@dataclass(frozen=True)
class SubjectView:
    """A snapshot of one subject's metadata.

    Attributes:
        taken_at: ``time.monotonic()`` when read.
        versions: its twin versions (oldest first), aliases included.
        sessions: its stored sessions, in order.
    """

    taken_at: float
    versions: tuple[TwinVersion, ...]
    sessions: tuple[SessionRecord, ...]


def sel_meta(view: SubjectView, sel: TwinSelector) -> TwinVersion | None:
    """The version ``sel`` names in ``view`` (default: ``serving``, else the latest), or None."""
    if sel.version is not None:
        return next((v for v in view.versions if v.version == sel.version), None)
    alias = sel.alias if sel.alias is not None else SERVING_ALIAS
    found = next((v for v in view.versions if alias in v.aliases), None)
    if found is None and sel.alias is None and view.versions:
        return view.versions[-1]
    return found


# -- the data plane ---------------------------------------------------------------------------------


class TwinDataPlane:
    """Every operation of the twin.v1 services.

    Args:
        store: the twin store.
        sessions: stored sessions (same database).
        jobs: runs long-running operations.
        cache: loaded twins.
        config: limits and defaults.
        lab: the lab's default protocol (the planning fallback).
        propose: the optimizer's next-session proposal (None: not available in this build).
        search: the curriculum search (None: not available in this build).
        cohort_fit: the cohort-fit backend (in-process by default).
    """

    def __init__(
        self,
        store: TwinStore,
        sessions: SessionStore,
        jobs: JobManager,
        cache: TwinCache,
        config: DataPlaneConfig = DataPlaneConfig(),
        lab: LabDefault = LabDefault(),
        propose: ProposeFn | None = None,
        search: CurriculumSearchFn | None = None,
        cohort_fit: CohortFitFn = local_cohort_fit,
    ) -> None:
        self.store, self.sessions, self.jobs, self.cache = store, sessions, jobs, cache
        self.config, self.lab = config, lab
        self.propose, self.search, self.cohort_fit = propose, search, cohort_fit
        self.predictions = ResultCache(config.prediction_cache_trials)
        self._views: dict[str, SubjectView] = {}
        self._views_lock = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------

    def _view(self, subject: str, fresh: bool = False) -> SubjectView:
        """The subject's twin versions (with aliases) and stored sessions, from a snapshot at
        most ``config.metadata_ttl_s`` old (``fresh``: read now). Writes made through this
        server invalidate the snapshot at once."""
        now = time.monotonic()
        with self._views_lock:
            view = self._views.get(subject)
        if view is not None and not fresh and now - view.taken_at < self.config.metadata_ttl_s:
            return view
        view = SubjectView(now, tuple(self.store.versions(subject)), tuple(self.sessions.sessions(subject)))
        with self._views_lock:
            self._views[subject] = view
            if len(self._views) > 10_000:  # bound memory: drop the oldest snapshots
                for k in sorted(self._views, key=lambda k: self._views[k].taken_at)[:1000]:
                    del self._views[k]
        return view

    def invalidate(self, subject: str) -> None:
        """Forget the subject's metadata snapshot (after a write)."""
        with self._views_lock:
            self._views.pop(subject, None)

    def _known(self, subject: str) -> bool:
        view = self._view(subject, fresh=True)
        return bool(view.versions) or bool(view.sessions)

    def _resolve(self, sel: TwinSelector, field: str = "twin", fresh: bool = False) -> Twin:
        """Load the selected twin, telling unknown subjects from subjects without a twin.

        Aliases are resolved on a metadata snapshot (see :meth:`_view`): when the ``serving``
        alias moves, the next request loads the new version (the twin cache is keyed by version).
        """
        if not sel.subject:
            raise InvalidArgumentError.field(f"{field}.subject", "required")
        meta = None if fresh else sel_meta(self._view(sel.subject), sel)
        meta = meta or sel_meta(self._view(sel.subject, fresh=True), sel)
        if meta is None:
            view = self._view(sel.subject)
            if not view.versions and not view.sessions:
                raise SubjectNotFoundError(sel.subject)
            if not view.versions:
                raise NoTwinError(sel.subject)
            what = f"version {sel.version}" if sel.version is not None else f"alias {sel.alias!r}"
            raise TwinNotFoundError(f"subject {sel.subject!r} has no twin {what}")
        twin = self.cache.get(sel.subject, meta.version)
        return twin if meta == twin.meta else replace(twin, meta=meta)  # aliases move: use the snapshot's metadata

    def _state(self, twin: Twin) -> TwinState:
        """Where the twin continues from (computed from the stored sessions if not stored)."""
        if twin.state is not None:
            return twin.state
        subject, through = twin.meta.subject, twin.meta.trained_through_session
        if [r for r in self.sessions.sessions(subject) if r.session <= through]:
            return twin_end_state(twin.model, self.sessions.trials(subject, through_session=through))
        raise NoTwinError(subject, f"twin v{twin.meta.version} has no stored end state and its sessions are not stored")

    # -- listing ---------------------------------------------------------------------------

    def _page(self, items: list, key: Callable, page_size: int, page_token: str) -> Page:  # type: ignore[type-arg]
        c = self.config
        return paginate(items, key, page_size, page_token, c.default_page_size, c.max_page_size)

    def list_subjects(self, page_size: int = 0, page_token: str = "") -> Page[SubjectInfo]:
        """Subjects with stored sessions or twins, by name."""
        names = sorted(set(self.store.subjects()) | set(self.sessions.subjects()))
        page = self._page(names, lambda n: (n,), page_size, page_token)
        return Page(tuple(self._subject_info(n) for n in page.items), page.next_page_token)

    def _subject_info(self, name: str) -> SubjectInfo:
        recs = self.sessions.sessions(name)
        serving = None
        try:
            serving = self.store.resolve(name, alias=SERVING_ALIAS)
        except TwinNotFoundError:
            pass
        return SubjectInfo(name, len(recs), sum(r.n_trials for r in recs), serving, recs[-1].created_at if recs else None)

    def list_twins(self, subject: str = "", page_size: int = 0, page_token: str = "") -> Page[TwinVersion]:
        """Stored twin versions (one subject's, or everyone's), by subject then version.

        Raises:
            SubjectNotFoundError: ``subject`` is not known.
        """
        if subject:
            if not self._known(subject):
                raise SubjectNotFoundError(subject)
            versions = self.store.versions(subject)
        else:
            versions = [v for s in self.store.subjects() for v in self.store.versions(s)]
        return self._page(versions, lambda v: (v.subject, v.version), page_size, page_token)

    def get_twin(self, sel: TwinSelector) -> tuple[TwinVersion, int]:
        """A twin version's metadata (read now, not from a snapshot) and the number of stored
        sessions after its training."""
        twin = self._resolve(sel, fresh=True)
        later = [r for r in self._view(sel.subject, fresh=True).sessions if r.session > twin.meta.trained_through_session]
        return twin.meta, len(later)

    # -- predictions and forecasts ---------------------------------------------------------------

    def predict(self, sel: TwinSelector, history: StoredHistory | SuppliedHistory, deadline: Deadline = NO_DEADLINE) -> PredictResult:
        """Run the twin teacher-forced along a stored or supplied history."""
        twin = self._resolve(sel)
        if isinstance(history, StoredHistory):
            recs = self._view(sel.subject).sessions
            if not recs:
                raise NoTwinError(sel.subject, "no stored sessions to predict along; send the trials with the request")
            if history.through_session is not None and history.through_session < 1:
                raise InvalidArgumentError.field("stored.through_session", "must be >= 1")
            # stored sessions never change once written: same twin version + same sessions = same result
            used = tuple((r.session, r.data_hash) for r in recs if history.through_session is None or r.session <= history.through_session)
            key = (sel.subject, twin.meta.version, twin.meta.weights_sha256, used, history.from_session)
            cached = self.predictions.get(key)
            if isinstance(cached, PredictResult):
                return replace(cached, twin=twin.meta)
            result = self._predict_frame(twin, self.sessions.trials(sel.subject, through_session=history.through_session), None, history.from_session, deadline)
            self.predictions.put(key, result, result.n_trials)
            return result
        df = history.trials.copy()
        df["subject"] = sel.subject
        if "trial" in df.columns and len(df) and bool((df["trial"] == 0).all()):
            df["trial"] = df.groupby("session", sort=False).cumcount() + 1
        try:
            df = validate_trials(df, source=history.field)
        except TrialDataError as exc:
            raise InvalidTrialsError(history.field, exc) from None
        start = self._state(twin) if history.continue_from_twin else None
        return self._predict_frame(twin, df, start, None, deadline)

    def _predict_frame(self, twin: Twin, df: pd.DataFrame, start: TwinState | None, from_session: int | None, deadline: Deadline) -> PredictResult:
        """Run the twin along a validated one-subject table; keep sessions >= ``from_session``."""
        deadline.check("running the twin")
        pred = predict(twin.model, df, start=start)
        session = df["session"].to_numpy(np.int64)
        trial = df["trial"].to_numpy(np.int64)
        p, w, ll = pred.p_right, pred.weights, pred.log_likelihood
        if from_session:
            keep = session >= from_session
            y = df["choice"].to_numpy()[keep]
            pk = np.clip(p[keep], 1e-12, 1 - 1e-12)
            ll = float(np.sum(np.where(y == 1, np.log(pk), np.log1p(-pk))))
            session, trial, p, w = session[keep], trial[keep], p[keep], w[keep]
        return PredictResult(twin.meta, session, trial, p, w, pred.feature_names, float(ll))

    def forecast(self, req: ForecastRequest, deadline: Deadline = NO_DEADLINE) -> ForecastResult:
        """Simulate the twin's next session under a planned protocol."""
        c = self.config
        protocol = req.protocol or self.lab.protocol
        n_trials = req.n_trials or LabDefault(protocol).n_trials
        n_rollouts = req.n_rollouts or c.default_rollouts
        level = req.interval_level or c.interval_level
        bad: list[FieldViolation] = []
        if n_rollouts > c.max_rollouts:
            bad.append(FieldViolation("n_rollouts", f"at most {c.max_rollouts}"))
        if n_rollouts * n_trials > c.max_forecast_trial_steps:
            bad.append(FieldViolation("n_trials", f"n_rollouts x n_trials must be at most {c.max_forecast_trial_steps}"))
        if not 0.0 < level < 1.0:
            bad.append(FieldViolation("interval_level", "must be in (0, 1)"))
        if req.start_phase is not None and not 0 <= req.start_phase < len(protocol.stimulus.phases):
            bad.append(FieldViolation("start_phase", f"must be in [0, {len(protocol.stimulus.phases) - 1}] for this protocol"))
        if bad:
            raise InvalidArgumentError(*bad)
        twin = self._resolve(req.twin)
        state = self._state(twin)
        deadline.check("simulating the session")
        fc = forecast_session(twin.model, state, protocol, n_trials, n_rollouts, req.seed, start_phase=req.start_phase, interval_level=level)
        return ForecastResult(twin.meta, fc, protocol)

    # -- sessions and twin updates -------------------------------------------------------------

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
        self.invalidate(subject)
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
            return update_twin(self.store, subject, df, self.config.update_fit)
        finally:
            self.invalidate(subject)

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
                return self.cohort_fit(df, self.store, config, ctx)
            finally:
                for s in subjects:
                    self.invalidate(s)

        return self.jobs.submit(JobKind.FIT_COHORT, run, subject=subjects[0] if len(subjects) == 1 else "")

    # -- plans and curriculum search ------------------------------------------------------------

    def next_session(self, req: NextSessionRequest, deadline: Deadline = NO_DEADLINE) -> SessionPlan:
        """Plan the subject's next session (see :func:`optimizer.planning.plan_next_session`).

        A subject the server has never seen gets the default protocol from its first phase
        (a new animal), flagged as a fallback for want of a twin.
        """
        if not req.subject:
            raise InvalidArgumentError.field("subject", "required")
        c = self.config
        n_rollouts = req.n_rollouts or c.default_rollouts
        if n_rollouts > c.max_rollouts:
            raise InvalidArgumentError.field("n_rollouts", f"at most {c.max_rollouts}")
        twin = state = None
        phase0 = 0
        if self.store.versions(req.subject):
            twin = self._resolve(TwinSelector(req.subject))
            state = self._state(twin)
        elif self.sessions.sessions(req.subject):
            phase0 = last_phase(self.sessions.trials(req.subject), self.lab.protocol)

        def forecast(tw: Twin, st: TwinState, p: Proposal) -> SessionForecast:
            deadline.check("forecasting the plan")
            return forecast_session(tw.model, st, p.protocol, p.n_trials, n_rollouts, req.seed, start_phase=p.start_phase, interval_level=c.interval_level)

        return plan_next_session(req.subject, twin, state, req.constraints, forecast, self.propose, self.lab, phase_without_twin=phase0)

    def search_curricula(self, req: CurriculumSearchRequest) -> JobSnapshot:
        """Start a curriculum search through the twins (long-running).

        Raises:
            FeatureUnavailableError: no search is configured in this build.
        """
        search = self.search
        if search is None:
            raise FeatureUnavailableError("curriculum_search", "curriculum search not available in this build (the optimizer is not installed or configured)")
        subjects = req.subjects or tuple(self.store.subjects())
        bad = [FieldViolation(f"subjects[{i}]", f"subject {s!r} has no twin") for i, s in enumerate(req.subjects) if not self.store.versions(s)]
        if not subjects:
            bad.append(FieldViolation("subjects", "no subject has a twin"))
        if bad:
            raise InvalidArgumentError(*bad)
        full = CurriculumSearchRequest(tuple(subjects), req.n_candidates, req.horizon_trials, req.seed)

        def run(ctx: JobContext) -> CurriculumSearchOutcome:
            return search(full, self.store, ctx)

        return self.jobs.submit(JobKind.CURRICULUM_SEARCH, run, subject=subjects[0] if len(subjects) == 1 else "")

    # -- operations --------------------------------------------------------------------------

    def get_operation(self, op_id: str) -> JobSnapshot:
        """One operation."""
        if not op_id:
            raise InvalidArgumentError.field("id", "required")
        return self.jobs.get(op_id)

    def list_operations(self, kind: JobKind | None, state: JobState | None, subject: str, page_size: int = 0, page_token: str = "") -> Page[JobSnapshot]:
        """Operations, newest first."""
        return self._page(self.jobs.list(kind, state, subject or None), lambda s: (-s.seq,), page_size, page_token)

    def cancel_operation(self, op_id: str) -> JobSnapshot:
        """Request an operation's cancellation."""
        if not op_id:
            raise InvalidArgumentError.field("id", "required")
        return self.jobs.cancel(op_id)

    def watch_operation(self, op_id: str, is_active: Callable[[], bool]) -> Iterator[JobSnapshot]:
        """The operation now and after every change, until it is done."""
        if not op_id:
            raise InvalidArgumentError.field("id", "required")
        return self.jobs.watch(op_id, is_active)


__all__ = [
    "CohortFitFn",
    "DataPlaneConfig",
    "Deadline",
    "FitCohortRequest",
    "ForecastRequest",
    "ForecastResult",
    "NO_DEADLINE",
    "NextSessionRequest",
    "PredictResult",
    "StoredHistory",
    "SubjectInfo",
    "SuppliedHistory",
    "TwinDataPlane",
    "TwinSelector",
    "UploadOutcome",
    "local_cohort_fit",
]
