"""The data plane: what the gRPC servicers do, in domain terms (no protobuf, no gRPC).

The servicers convert requests into domain types, call one method of one part of
:class:`TwinDataPlane`, and convert the result back. The parts, one per concept:

* :class:`~service.catalog.TwinCatalog`: subjects and twin versions (lookups, listings);
* :class:`~service.predictions.Predictions`: predictions and forecasts;
* :class:`~service.updates.Updates`: session uploads, twin updates, cohort fits;
* :class:`~service.curricula.Curricula`: next-session plans, curriculum searches;
* :class:`~service.operations.Operations`: the long-running operations.

The collaborators (stores, job manager, twin cache, next-session proposer, curriculum search,
cohort-fit backend) are injected, so tests and deployments swap them. Over a job manager with
the store's operation log, :meth:`TwinDataPlane.recover` (at start) takes over what a previous
server left: its operations, the twin updates its sessions still need, its leftover files.
"""

from __future__ import annotations

import logging

from twin.persist.integrity import remove_leftovers
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore

from optimizer.planning import CurriculumSearchFn, LabDefault, ProposeFn
from service.cache import TwinCache
from service.catalog import TwinCatalog
from service.config import DataPlaneConfig
from service.curricula import Curricula, search_outcome, search_outcome_json
from service.jobs import JobKind, JobManager, JobType
from service.operations import Operations
from service.teaching import Teaching
from service.predictions import Predictions
from service.updates import CohortFitFn, Updates, local_cohort_fit


class TwinDataPlane:
    """Every operation of the twin.v1 services, one part per concept over shared collaborators.

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

    Attributes:
        catalog: subjects and twin versions.
        predictions: predictions and forecasts.
        updates: session uploads, twin updates and cohort fits.
        curricula: next-session plans and curriculum searches.
        operations: the long-running operations.
        teaching: trial-by-trial teaching streams.
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
        self.store, self.sessions, self.jobs, self.cache, self.config = store, sessions, jobs, cache, config
        self.catalog = TwinCatalog(store, sessions, cache, config)
        self.predictions = Predictions(self.catalog, lab)
        self.updates = Updates(self.catalog, jobs, cohort_fit)
        self.curricula = Curricula(self.catalog, jobs, lab, propose, search)
        self.operations = Operations(jobs, config)
        self.teaching = Teaching(self.catalog, lab, config.teach_decision_budget_ms)
        # a finished search's candidates are kept in its operation's row (written with its
        # SUCCEEDED state, in one transaction); an interrupted search is marked failed after a
        # restart (it is cheap to start again)
        jobs.register(JobKind.CURRICULUM_SEARCH, JobType(search_outcome_json, search_outcome))

    def recover(self, leftover_min_age_s: float = 300.0) -> list[str]:
        """Take over from a previous server over the same store (call before serving): remove
        temporary and orphan files older than ``leftover_min_age_s`` (younger ones may belong to
        a writer still running), resume or fail its operations, queue the twin updates its
        stored sessions still need. Returns the subjects whose update was queued."""
        removed = remove_leftovers(self.store, leftover_min_age_s)
        queued = self.updates.recover()
        if removed or queued:
            logging.getLogger("service.dataplane").info("recovered", extra={"leftover_files_removed": len(removed), "updates_queued": len(queued)})
        return queued


__all__ = ["TwinDataPlane"]
