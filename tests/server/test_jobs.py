"""The job manager behind long-running operations: progress, failure status, cancellation
(pending and running), watching, retention and shutdown."""

from __future__ import annotations

import threading

import grpc
import pytest

from server.status import status_code, to_rpc_status
from service.errors import OperationCancelledError, OperationNotFoundError, UnavailableError
from service.jobs import JobContext, JobKind, JobManager, JobState
from twin.errors import TwinError


@pytest.fixture
def jobs():
    m = JobManager(max_workers=1, keep_finished=3)
    yield m
    m.shutdown(grace_s=1.0)


def test_success_with_progress(jobs):
    def work(ctx: JobContext) -> int:
        for i in range(3):
            ctx.report(i / 3, f"step {i}")
        return 42

    snap = jobs.submit(JobKind.TWIN_UPDATE, work, subject="m1")
    assert snap.state is JobState.PENDING and snap.subject == "m1"
    done = jobs.wait(snap.id, timeout=10)
    assert done.state is JobState.SUCCEEDED and done.result == 42 and done.progress == 1.0
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at


def test_failure_carries_the_domain_error(jobs):
    def boom(ctx):
        raise TwinError("no session after 3, the twin is up to date")

    done = jobs.wait(jobs.submit(JobKind.TWIN_UPDATE, boom).id, timeout=10)
    assert done.state is JobState.FAILED and isinstance(done.error, TwinError)
    status = to_rpc_status(done.error)
    assert status_code(status) == grpc.StatusCode.FAILED_PRECONDITION and "up to date" in status.message


def test_unexpected_failure_is_kept_as_one_internal_incident(jobs):
    def boom(ctx):
        raise RuntimeError("secret internals")

    done = jobs.wait(jobs.submit(JobKind.TWIN_UPDATE, boom).id, timeout=10)
    first, again = to_rpc_status(done.error), to_rpc_status(done.error)
    assert status_code(first) == grpc.StatusCode.INTERNAL and "secret" not in first.message
    assert first == again  # the incident id is fixed when the job fails, not per read


def test_cancel_pending_and_running(jobs):
    started, release = threading.Event(), threading.Event()

    def slow(ctx):
        started.set()
        while not release.wait(0.01):
            ctx.check_cancelled()
        return "finished"

    running = jobs.submit(JobKind.FIT_COHORT, slow)
    queued = jobs.submit(JobKind.FIT_COHORT, slow)
    assert started.wait(5)
    assert jobs.cancel(queued.id).state is JobState.CANCELLED
    assert jobs.cancel(running.id).state is JobState.RUNNING  # takes effect at the next checkpoint
    done = jobs.wait(running.id, timeout=5)
    assert done.state is JobState.CANCELLED and isinstance(done.error, OperationCancelledError)
    assert status_code(to_rpc_status(done.error)) == grpc.StatusCode.CANCELLED
    assert jobs.cancel(running.id) == done  # finished: unchanged


def test_watch_sees_every_change_until_done(jobs):
    gate = threading.Event()

    def work(ctx):
        gate.wait(5)
        for p in (0.25, 0.5, 0.75):
            ctx.report(p)
        return None

    snap = jobs.submit(JobKind.CURRICULUM_SEARCH, work)
    seen = []
    for s in jobs.watch(snap.id, poll_s=0.05):
        seen.append(s)
        gate.set()
    assert seen[-1].state is JobState.SUCCEEDED
    assert [s.revision for s in seen] == sorted({s.revision for s in seen})
    assert [s.progress for s in seen] == sorted(s.progress for s in seen)


def test_list_filters_and_retention(jobs):
    ids = [jobs.submit(JobKind.TWIN_UPDATE, lambda ctx: None, subject=f"m{i}").id for i in range(5)]
    jobs.wait(ids[-1], timeout=5)  # one worker: the others finished before it
    listed = jobs.list()
    assert [s.id for s in listed] == ids[::-1][:3]  # newest first, only the last 3 finished kept
    assert [s.subject for s in jobs.list(subject="m4")] == ["m4"]
    assert jobs.list(kind=JobKind.FIT_COHORT) == []
    with pytest.raises(OperationNotFoundError):
        jobs.get(ids[0])


def test_shutdown_refuses_new_jobs():
    m = JobManager()
    m.shutdown(grace_s=0.1)
    with pytest.raises(UnavailableError):
        m.submit(JobKind.TWIN_UPDATE, lambda ctx: None)
