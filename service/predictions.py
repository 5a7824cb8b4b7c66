"""Predictions and forecasts: a twin run teacher-forced along a stored or supplied history, and
simulated through a planned next session. An ensemble twin (rule ``ensemble``) predicts its
weighted mixture and forecasts with one component drawn by weight per rollout."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from twin.analysis.predict import Prediction, predict, predict_batch, predict_ensemble
from twin.data.batch import columns_batch
from twin.data.trials import TrialColumns, validate_columns, validate_trials
from twin.errors import TrialDataError
from twin.models.state import TwinState
from twin.persist.store import Twin, TwinVersion
from twin.sim.forecast import SessionForecast, forecast_ensemble_session, forecast_session
from twin.protocol import Curriculum

from optimizer.planning import LabDefault
from service.cache import ResultCache
from service.catalog import TwinCatalog, TwinSelector
from service.config import NO_DEADLINE, Deadline
from service.errors import FieldViolation, InvalidArgumentError, InvalidTrialsError, NoTwinError
from service.limits import MAX_SEED


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
        trials: canonical trials (a table, whose ``subject`` column may be absent: it is set
            from the selector; or columns, the serving path's form, with no table built).
        continue_from_twin: the trials follow the twin's last trained session.
        field: request path of the trials, for error messages.
    """

    trials: pd.DataFrame | TrialColumns
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


class Predictions:
    """Predict and Forecast over the catalog's twins.

    Args:
        catalog: twin lookups (and the limits and defaults in its config).
        lab: the lab's default protocol (forecasts without a protocol use it).
    """

    def __init__(self, catalog: TwinCatalog, lab: LabDefault = LabDefault()) -> None:
        self.catalog, self.lab = catalog, lab
        self.cache = ResultCache(catalog.config.prediction_cache_trials)

    def predict(self, sel: TwinSelector, history: StoredHistory | SuppliedHistory, deadline: Deadline = NO_DEADLINE) -> PredictResult:
        """Run the twin teacher-forced along a stored or supplied history.

        Raises:
            LimitExceededError: more trials than ``limits.max_supplied_trials`` (supplied) or
                ``limits.max_history_trials`` (stored) allow.
            DeadlineExceededError, OperationCancelledError: the client's deadline passed, or
                it went away, while the twin ran.
        """
        limits = self.catalog.config.limits
        if isinstance(history, SuppliedHistory):
            limits.check_supplied_trials(len(history.trials), history.field)
        else:
            bad = []
            if history.through_session is not None and history.through_session < 1:
                bad.append(FieldViolation("stored.through_session", "must be >= 1"))
            if history.from_session is not None and history.from_session < 1:
                bad.append(FieldViolation("stored.from_session", "must be >= 1"))
            if history.from_session is not None and history.through_session is not None and history.from_session > history.through_session:
                bad.append(FieldViolation("stored.from_session", "must be <= stored.through_session"))
            if bad:
                raise InvalidArgumentError(*bad)
        twin = self.catalog.resolve(sel)
        if isinstance(history, StoredHistory):
            recs = self.catalog.view(sel.subject).sessions
            if not recs:
                raise NoTwinError(sel.subject, "no stored sessions to predict along; send the trials with the request")
            used_recs = [r for r in recs if history.through_session is None or r.session <= history.through_session]
            limits.check_history_trials(sum(r.n_trials for r in used_recs))
            # stored sessions never change once written: same twin version + same sessions = same result
            used = tuple((r.session, r.data_hash) for r in used_recs)
            key = (sel.subject, twin.meta.version, twin.meta.weights_sha256, used, history.from_session)
            cached = self.cache.get(key)
            if isinstance(cached, PredictResult):
                return replace(cached, twin=twin.meta)
            deadline.check("reading the stored sessions")
            result = self._predict_frame(twin, self.catalog.sessions.trials(sel.subject, through_session=history.through_session), None, history.from_session, deadline)
            self.cache.put(key, result, result.n_trials)
            return result
        if isinstance(history.trials, TrialColumns):
            return self._predict_columns(twin, history, deadline)
        df = history.trials.copy()
        df["subject"] = sel.subject
        if "trial" in df.columns and len(df) and bool((df["trial"] == 0).all()):
            df["trial"] = df.groupby("session", sort=False).cumcount() + 1
        deadline.check("validating the trials")
        try:
            df = validate_trials(df, source=history.field)
        except TrialDataError as exc:
            raise InvalidTrialsError(history.field, exc) from None
        with deadline.scope("running the twin"):
            start = self.catalog.state(twin) if history.continue_from_twin else None
        return self._predict_frame(twin, df, start, None, deadline)

    def _predict_frame(self, twin: Twin, df: pd.DataFrame, start: TwinState | None, from_session: int | None, deadline: Deadline) -> PredictResult:
        """Run the twin along a validated one-subject table; keep sessions >= ``from_session``.
        An ensemble twin predicts its mixture (:meth:`_predict_ensemble`)."""
        deadline.check("running the twin")
        with deadline.scope("running the twin"):
            pred = predict(twin.model, df, start=start) if twin.ensemble is None else self._predict_ensemble(twin, df, start is not None)
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

    def _predict_ensemble(self, twin: Twin, df: pd.DataFrame, continue_from_twin: bool) -> Prediction:
        """The ensemble's mixture prediction along ``df`` (from each component's end state when
        the trials continue the twin's sessions)."""
        ens = self.catalog.ensemble(twin) if continue_from_twin else twin.ensemble
        assert ens is not None
        return predict_ensemble(ens, df, ens.states if continue_from_twin else None)

    def _forecast_ensemble(self, twin: Twin, protocol: Curriculum, n_trials: int, n_rollouts: int, req: ForecastRequest, level: float) -> SessionForecast:
        """An ensemble twin's forecast: each rollout runs one component drawn by weight."""
        ens = self.catalog.ensemble(twin)
        assert ens is not None
        return forecast_ensemble_session(ens, protocol, n_trials, n_rollouts, req.seed, start_phase=req.start_phase, interval_level=level)

    def _predict_columns(self, twin: Twin, history: SuppliedHistory, deadline: Deadline) -> PredictResult:
        """A supplied history given as columns: validated and run as the table would be (the same
        checks and messages, trials numbered in order when all are 0), with no table built."""
        cols = history.trials
        assert isinstance(cols, TrialColumns)
        if len(cols) and not cols.trial.any():
            cols = replace(cols, trial=_number_within_sessions(cols.session))
        deadline.check("validating the trials")
        try:
            cols = validate_columns(cols, source=history.field)
        except TrialDataError as exc:
            raise InvalidTrialsError(history.field, exc) from None
        with deadline.scope("running the twin"):
            start = self.catalog.state(twin) if history.continue_from_twin else None
            if twin.model.spec.features.stimuli or twin.ensemble is not None:  # named stimuli need their table columns; an ensemble mixes its components' predictions
                return self._predict_frame(twin, cols.frame(twin.meta.subject), start, None, deadline)  # validated columns make a canonical table
            pred = predict_batch(twin.model, columns_batch(cols, twin.meta.subject, twin.model.spec.features), start=start)
        return PredictResult(twin.meta, cols.session, cols.trial, pred.p_right, pred.weights, pred.feature_names, float(pred.log_likelihood))

    def forecast(self, req: ForecastRequest, deadline: Deadline = NO_DEADLINE) -> ForecastResult:
        """Simulate the twin's next session under a planned protocol.

        Raises:
            LimitExceededError: more rollouts, trials or rollouts x trials than the limits allow.
            DeadlineExceededError, OperationCancelledError: the client's deadline passed, or
                it went away, during the simulation.
        """
        c = self.catalog.config
        protocol = req.protocol or self.lab.protocol
        n_trials = req.n_trials or LabDefault(protocol).n_trials
        n_rollouts = req.n_rollouts or c.default_rollouts
        level = req.interval_level or c.interval_level
        bad: list[FieldViolation] = []
        if n_trials < 1:
            bad.append(FieldViolation("n_trials", "must be >= 1"))
        if n_rollouts < 1:
            bad.append(FieldViolation("n_rollouts", "must be >= 1"))
        if not 0.0 < level < 1.0:
            bad.append(FieldViolation("interval_level", "must be in (0, 1)"))
        if not 0 <= req.seed <= MAX_SEED:
            bad.append(FieldViolation("seed", f"must be in [0, {MAX_SEED}]"))
        if req.start_phase is not None and not 0 <= req.start_phase < len(protocol.stimulus.phases):
            bad.append(FieldViolation("start_phase", f"must be in [0, {len(protocol.stimulus.phases) - 1}] for this protocol"))
        if bad:
            raise InvalidArgumentError(*bad)
        c.limits.check_forecast(n_rollouts, n_trials)
        twin = self.catalog.resolve(req.twin)
        deadline.check("simulating the session")
        with deadline.scope("simulating the session"):
            if twin.ensemble is not None:
                fc = self._forecast_ensemble(twin, protocol, n_trials, n_rollouts, req, level)
            else:
                state = self.catalog.state(twin)
                fc = forecast_session(twin.model, state, protocol, n_trials, n_rollouts, req.seed, start_phase=req.start_phase, interval_level=level)
        return ForecastResult(twin.meta, fc, protocol)


def _number_within_sessions(session: np.ndarray) -> np.ndarray:
    """``[n]`` 1-based position of each trial among the trials of its session number, in order
    (what ``groupby("session").cumcount() + 1`` gives a table)."""
    _, group = np.unique(session, return_inverse=True)
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    out = np.empty(len(session), np.int64)
    out[order] = np.arange(len(session)) - first[group[order]] + 1
    return out


__all__ = ["ForecastRequest", "ForecastResult", "PredictResult", "Predictions", "StoredHistory", "SuppliedHistory"]
