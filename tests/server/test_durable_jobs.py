"""The job manager over the store's operation log: ids and results survive a restart, request
ids are idempotent, the queue is bounded, recovery resumes or fails what a killed process left,
and shutdown records queued and interrupted jobs for the next start instead of cancelling them."""

from __future__ import annotations

import threading

import grpc
import pytest

from server.status import status_code, to_rpc_status
from service.errors import InvalidArgumentError, UnavailableError
from service.jobs import JobContext, JobKind, JobManager, JobState, JobType
from twin.persist.oplog import OperationLog
from twin.persist.store import TwinStore

PLAIN = JobType(lambda r: {"value": r}, lambda d: d["value"])


def _manager(root, **kw) -> JobManager:
    m = JobManager(oplog=OperationLog(TwinStore(root)), **kw)
    m.register(JobKind.TWIN_UPDATE, PLAIN)
    m.register(JobKind.FIT_COHORT, PLAIN)
    return m


def test_ids_results_and_errors_survive_a_restart(tmp_path):
    m = _manager(tmp_path)
    ok = m.submit(JobKind.FIT_COHORT, lambda ctx: 42, request_id="r1")
    bad = m.submit(JobKind.FIT_COHORT, lambda ctx: (_ for _ in ()).throw(InvalidArgumentError.field("epochs", "must be >= 1")))
    m.wait(ok.id, 10), m.wait(bad.id, 10)
    m.shutdown(1.0)
    again = _manager(tmp_path)
    got = again.get(ok.id)
    assert got.state is JobState.SUCCEEDED and got.result == 42 and got.request_id == "r1"
    failed = again.get(bad.id)
    status = to_rpc_status(failed.error)
    assert failed.state is JobState.FAILED and status_code(status) == grpc.StatusCode.INVALID_ARGUMENT and "epochs" in status.message
    assert [s.id for s in again.list()] == [bad.id, ok.id]
    assert again.submit(JobKind.FIT_COHORT, lambda ctx: 0, request_id="r1").id == ok.id  # a retry: the same operation
    again.shutdown(1.0)


def test_a_request_id_is_refused_for_a_different_request_even_after_a_restart(tmp_path):
    m = _manager(tmp_path)
    ran = []
    req = {"subjects": ("a", "b"), "seed": 3}
    first = m.submit(JobKind.FIT_COHORT, lambda ctx: ran.append(1), request_id="r", params={"x": 1}, request=req)
    m.wait(first.id, 10)
    assert m.submit(JobKind.FIT_COHORT, lambda ctx: ran.append(2), request_id="r", request={"subjects": ["a", "b"], "seed": 3}).id == first.id  # tuples read back as lists
    with pytest.raises(InvalidArgumentError, match=r"request_id.*different request.*differs in seed"):
        m.submit(JobKind.FIT_COHORT, lambda ctx: ran.append(3), request_id="r", request={**req, "seed": 4})
    assert m.submit(JobKind.TWIN_UPDATE, lambda ctx: 0, request_id="r", request={"other": True}).id != first.id  # ids are per kind
    m.shutdown(1.0)
    again = _manager(tmp_path)
    assert again.seen(JobKind.FIT_COHORT, "r", req).id == first.id and again.seen(JobKind.FIT_COHORT, "unknown", req) is None
    with pytest.raises(InvalidArgumentError, match="differs in subjects"):
        again.seen(JobKind.FIT_COHORT, "r", {**req, "subjects": ["a"]})
    assert again.get(first.id).state is JobState.SUCCEEDED and ran == [1]
    again.shutdown(1.0)


def test_request_ids_return_the_same_operation_and_the_queue_is_bounded(tmp_path):
    gate = threading.Event()
    m = _manager(tmp_path, max_pending=2)
    ran = []

    def work(ctx: JobContext) -> int:
        gate.wait(10)
        ran.append(ctx.job_id)
        return 1

    first = m.submit(JobKind.FIT_COHORT, work, request_id="a")
    assert m.submit(JobKind.FIT_COHORT, work, request_id="a").id == first.id
    m.submit(JobKind.FIT_COHORT, work)
    with pytest.raises(UnavailableError, match="queue is full"):
        for _ in range(3):  # the first may have started already: at most 2 wait
            m.submit(JobKind.FIT_COHORT, work)
    gate.set()
    m.wait(first.id, 10)
    m.shutdown(5.0)
    assert ran.count(first.id) == 1


def test_recovery_resumes_registered_kinds_and_fails_the_others(tmp_path):
    gate = threading.Event()
    m = _manager(tmp_path)
    m.register(JobKind.CURRICULUM_SEARCH, PLAIN)
    running = m.submit(JobKind.TWIN_UPDATE, lambda ctx: gate.wait(10), subject="m1", params={"subject": "m1"})
    queued = m.submit(JobKind.TWIN_UPDATE, lambda ctx: 1, subject="m2", params={"subject": "m2"})
    search = m.submit(JobKind.CURRICULUM_SEARCH, lambda ctx: 1)
    # the process is killed here: nothing more is written (a new manager reads the rows as they are)
    resumed_with = []
    nxt = JobManager(oplog=OperationLog(TwinStore(tmp_path)))
    nxt.register(JobKind.TWIN_UPDATE, JobType(PLAIN.encode, PLAIN.decode, lambda rec: (lambda ctx: resumed_with.append(rec.params["subject"]) or 7)))
    resumed, failed = nxt.recover()
    assert set(resumed) == {running.id, queued.id} and failed == [search.id]
    assert nxt.wait(queued.id, 10).result == 7 and nxt.wait(running.id, 10).state is JobState.SUCCEEDED
    assert sorted(resumed_with) == ["m1", "m2"]
    lost = nxt.get(search.id)
    assert lost.state is JobState.FAILED and status_code(to_rpc_status(lost.error)) == grpc.StatusCode.UNAVAILABLE
    gate.set()
    m.shutdown(1.0)
    nxt.shutdown(1.0)


def test_shutdown_records_queued_and_interrupted_jobs_for_resume(tmp_path):
    started = threading.Event()
    m = _manager(tmp_path)

    def long(ctx: JobContext) -> int:
        started.set()
        while True:
            ctx.report(0.5, "working")  # a checkpoint
            threading.Event().wait(0.01)

    running = m.submit(JobKind.FIT_COHORT, long)
    queued = m.submit(JobKind.TWIN_UPDATE, lambda ctx: 1, subject="m1")
    assert started.wait(10)
    m.shutdown(grace_s=0.2)
    oplog = OperationLog(TwinStore(tmp_path))
    assert oplog.get(queued.id).state is JobState.PENDING  # not cancelled
    rec = oplog.get(running.id)
    assert rec.state is JobState.PENDING and "resumes at the next start" in rec.message
    nxt = _manager(tmp_path)
    nxt.register(JobKind.FIT_COHORT, JobType(PLAIN.encode, PLAIN.decode, lambda rec: (lambda ctx: 5), resume_rank=1))
    nxt.register(JobKind.TWIN_UPDATE, JobType(PLAIN.encode, PLAIN.decode, lambda rec: (lambda ctx: 6)))
    assert nxt.recover()[0] == [queued.id, running.id]  # the update before the (older) long fit
    assert nxt.wait(running.id, 10).result == 5 and nxt.wait(queued.id, 10).result == 6
    nxt.shutdown(1.0)
