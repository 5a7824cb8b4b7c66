"""Admission of the requests that store data or queue long-running work (UploadSession,
FitCohort): their sizes against the limits and the bounded operation queue, checked before
the data plane touches the store.

Predict, Forecast, NextSession and SearchCurricula check their own costs
(:mod:`service.predictions`, :mod:`service.curricula`); the checks of this module come first for
the two requests whose work :mod:`service.updates` does.
"""

from __future__ import annotations

from twin.fit.ensemble_cohort import EnsembleFitConfig
from twin.models.ensemble import ENSEMBLE_RULE

from service.catalog import TwinCatalog
from service.errors import FieldViolation
from service.jobs import JobManager, JobState
from service.limits import MAX_SEED, Limits, raise_invalid
from service.updates import FitCohortRequest


class Admission:
    """Checks requests against :class:`~service.limits.Limits` before any work starts.

    Args:
        catalog: subjects, stored sessions and the config (limits).
        jobs: the operation queue (only its length is read).
    """

    def __init__(self, catalog: TwinCatalog, jobs: JobManager) -> None:
        self.catalog, self.jobs = catalog, jobs

    @property
    def limits(self) -> Limits:
        """The limits (of the catalog's config)."""
        return self.catalog.config.limits

    def pending(self) -> int:
        """Operations waiting to run."""
        return len(self.jobs.list(state=JobState.PENDING))

    def upload(self, subject: str, n_trials: int, label: str, skip_update: bool, trials_field: str = "trials") -> None:
        """An UploadSession of ``n_trials``, before its trials are converted.

        Raises:
            InvalidArgumentError: a blank or overlong subject, an overlong label.
            LimitExceededError: more trials than ``max_session_trials``; or the upload would
                queue a twin update while ``max_pending_operations`` wait (nothing is stored:
                retry later).
        """
        lim = self.limits
        raise_invalid([lim.name("subject", subject), lim.name("label", label, required=False)])
        lim.check_session_trials(n_trials, trials_field)
        if not skip_update and self.catalog.store.versions(subject):
            lim.check_queue(self.pending())

    def fit_cohort(self, req: FitCohortRequest) -> None:
        """A FitCohort: names, seed, subjects, epochs and stored trials x epochs, and the queue.

        Raises:
            InvalidArgumentError: bad names, counts or seed.
            LimitExceededError: over a limit, or the queue is full.
        """
        lim = self.limits
        raise_invalid(
            [
                *lim.subjects("subjects", list(req.subjects), "max_fit_subjects"),
                lim.name("rule", req.rule),
                None if req.epochs >= 1 else FieldViolation("epochs", "must be >= 1"),
                None if req.patience >= 1 else FieldViolation("patience", "must be >= 1"),
                None if 0 <= req.seed <= MAX_SEED else FieldViolation("seed", f"must be in [0, {MAX_SEED}]"),
            ]
        )
        sessions = self.catalog.sessions
        subjects = list(req.subjects) or sessions.subjects()
        lim.check(lim.over("subjects", len(subjects), "max_fit_subjects", "subjects"), lim.over("epochs", req.epochs, "max_fit_epochs", "epochs"))
        n_trials = sum(r.n_trials for s in subjects for r in sessions.sessions(s))
        fits = EnsembleFitConfig().population_fits if req.rule == ENSEMBLE_RULE else 1  # FitCohort fits the default ensemble
        lim.check_fit(len(subjects), n_trials, req.epochs, fits)
        lim.check_queue(self.pending())


__all__ = ["Admission"]
