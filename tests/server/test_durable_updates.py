"""Twin updates and cohort fits that lose nothing: uploads with request ids stored once, updates
coalesced one per subject, recorded in the session's transaction and resumed after a restart,
the update a killed server never queued caught up at the next start, FitCohort idempotent."""

from __future__ import annotations

import threading
import time

import pytest
from server_env import FAST_UPDATE, TWIN_SUBJECTS

from server.app import build_plane
from service.errors import InvalidArgumentError
from service.jobs import JobKind, JobState
from service.updates import FitCohortRequest
from twin.models.params import Adaptation
from twin.persist.integrity import verify_store
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore

S = TWIN_SUBJECTS[0]


@pytest.fixture
def new_sessions(cohort_trials):
    s3 = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)].drop(columns=["subject", "session"])
    return [s3.iloc[i * 90 : (i + 1) * 90] for i in range(3)]


def _blocked(plane) -> threading.Event:
    """Occupy the plane's one job worker until the returned event is set."""
    gate = threading.Event()
    plane.jobs.submit(JobKind.CURRICULUM_SEARCH, lambda ctx: gate.wait(60))
    return gate


def test_a_retried_upload_is_stored_once_and_returns_the_same_update(store_dir, new_sessions):
    plane = build_plane(store_dir, config=FAST_UPDATE)
    gate = _blocked(plane)
    first = plane.updates.upload_session(S, new_sessions[0], request_id="rig-1/2026-05-03")
    again = plane.updates.upload_session(S, new_sessions[0], request_id="rig-1/2026-05-03")
    assert (again.record.session, again.operation.id) == (first.record.session, first.operation.id) == (3, first.operation.id)
    with pytest.raises(InvalidArgumentError, match="request_id"):
        plane.updates.upload_session(TWIN_SUBJECTS[1], new_sessions[0], request_id="rig-1/2026-05-03")
    gate.set()
    plane.jobs.shutdown(30.0)
    restarted = build_plane(store_dir, config=FAST_UPDATE)
    third = restarted.updates.upload_session(S, new_sessions[0], request_id="rig-1/2026-05-03")  # after a restart too
    assert third.record.session == 3 and third.operation.id == first.operation.id
    assert [r.session for r in restarted.sessions.sessions(S)] == [1, 2, 3]
    done = restarted.jobs.wait(first.operation.id, 120)
    assert done.state is JobState.SUCCEEDED and done.result.trained_through_session == 3
    restarted.jobs.shutdown(10.0)


def test_uploads_coalesce_into_one_update_per_subject(store_dir, new_sessions):
    plane = build_plane(store_dir, config=FAST_UPDATE)
    gate = _blocked(plane)
    ops = [plane.updates.upload_session(S, s).operation for s in new_sessions]
    assert len({op.id for op in ops}) == 1  # all three joined the waiting update
    gate.set()
    done = plane.jobs.wait(ops[0].id, 120)
    assert done.state is JobState.SUCCEEDED, done.error
    assert [(v.version, v.trained_through_session) for v in plane.store.versions(S)] == [(1, 2), (2, 5)]
    plane.jobs.shutdown(10.0)


def test_shutdown_records_the_pending_update_and_the_next_start_resumes_it(serve, new_sessions):
    running = serve()
    started = threading.Event()

    def search(ctx):  # a long job with checkpoints holds the one worker
        started.set()
        while True:
            ctx.report(0.5, "searching")
            time.sleep(0.01)

    blocker = running.plane.jobs.submit(JobKind.CURRICULUM_SEARCH, search)
    assert started.wait(10)
    op = running.plane.updates.upload_session(S, new_sessions[0]).operation
    running.stop(grace_s=0.5)  # what SIGTERM does: the search outlasts the grace
    oplog = running.plane.jobs.oplog
    assert oplog.get(op.id).state is JobState.PENDING and oplog.get(blocker.id).state is JobState.PENDING
    restarted = serve()
    done = restarted.plane.jobs.wait(op.id, 120)
    assert done.state is JobState.SUCCEEDED and done.result.version == 2 and done.result.trained_through_session == 3
    assert restarted.plane.jobs.get(blocker.id).state is JobState.FAILED  # a search is not resumed: start it again


def test_a_session_whose_update_was_never_queued_is_caught_up_at_start(store_dir, new_sessions):
    store = TwinStore(store_dir)
    SessionStore(store).add_session(S, new_sessions[0])  # stored, then killed before its update was recorded
    store.close()
    plane = build_plane(store_dir, config=FAST_UPDATE)
    (op,) = plane.jobs.list(JobKind.TWIN_UPDATE, subject=S)
    assert plane.jobs.wait(op.id, 120).state is JobState.SUCCEEDED
    assert plane.store.get(S).trained_through_session == 3
    plane.jobs.shutdown(10.0)
    again = build_plane(store_dir, config=FAST_UPDATE)  # nothing left to do: no new update
    assert [o.id for o in again.jobs.list(JobKind.TWIN_UPDATE, subject=S)] == [op.id]
    again.jobs.shutdown(1.0)


def test_fit_cohort_request_id_is_idempotent_and_switches_whole(store_dir):
    plane = build_plane(store_dir, config=FAST_UPDATE)
    req = FitCohortRequest(subjects=TWIN_SUBJECTS, rule="reinforce", epochs=2, patience=2, adaptation=Adaptation.INITIAL_WEIGHTS)
    op = plane.updates.fit_cohort(req, request_id="fit-1")
    assert plane.updates.fit_cohort(req, request_id="fit-1").id == op.id
    done = plane.jobs.wait(op.id, 180)
    assert done.state is JobState.SUCCEEDED, done.error
    assert sorted((v.subject, v.version) for v in done.result.versions) == [(s, 2) for s in TWIN_SUBJECTS]
    plane.jobs.shutdown(10.0)
    restarted = build_plane(store_dir, config=FAST_UPDATE)
    read = restarted.jobs.get(op.id)
    assert read.state is JobState.SUCCEEDED and [v.version for v in read.result.versions] == [2, 2, 2]
    assert read.result.adaptation is Adaptation.INITIAL_WEIGHTS
    assert restarted.updates.fit_cohort(req, request_id="fit-1").id == op.id
    assert {restarted.store.get(s, alias="serving").version for s in TWIN_SUBJECTS} == {2}
    assert verify_store(restarted.store, min_age_s=0).clean
    restarted.jobs.shutdown(1.0)


def test_fit_cohort_of_the_default_ensemble_twin(store_dir, cohort_trials):
    """``rule: ensemble`` fits the default ensemble (every default rule) and serves it; the
    admission counts its population fits, and too few sessions are refused before any work."""
    from twin.fit.ensemble_cohort import DEFAULT_ENSEMBLE_RULES
    from twin.models.ensemble import ENSEMBLE_RULE

    plane = build_plane(store_dir, config=FAST_UPDATE)
    req = FitCohortRequest(subjects=TWIN_SUBJECTS, rule=ENSEMBLE_RULE, epochs=1, patience=1)
    with pytest.raises(InvalidArgumentError, match="at least 3 sessions"):
        plane.updates.fit_cohort(req)  # the store holds sessions 1-2
    for s in TWIN_SUBJECTS:
        third = cohort_trials[(cohort_trials.subject == s) & (cohort_trials.session == 3)].drop(columns=["subject", "session"])
        plane.updates.upload_session(s, third, skip_update=True)
    with pytest.raises(InvalidArgumentError, match="adaptation"):
        plane.updates.fit_cohort(FitCohortRequest(subjects=TWIN_SUBJECTS, rule=ENSEMBLE_RULE, epochs=1, patience=1, adaptation=Adaptation.NONE))
    op = plane.updates.fit_cohort(req)
    done = plane.jobs.wait(op.id, 600)
    assert done.state is JobState.SUCCEEDED, done.error
    assert {v.rule for v in done.result.versions} == {ENSEMBLE_RULE} and len(done.result.versions) == len(TWIN_SUBJECTS)
    loaded = plane.store.load_twin(TWIN_SUBJECTS[0], alias="serving")
    assert loaded.ensemble is not None and [lab.split("/")[0] for lab in loaded.ensemble.labels] == list(DEFAULT_ENSEMBLE_RULES)
    assert loaded.meta.trained_through_session == 3
    plane.jobs.shutdown(10.0)
