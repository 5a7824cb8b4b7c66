"""Long-running operations: a thread-pool job manager with progress, cancellation and watching,
durable when given the store's operation log.

A job is a callable taking a :class:`JobContext`; it reports progress through it and checks
for cancellation at its checkpoints. The manager keeps every job's state (and the last
``keep_finished`` finished ones), lets callers get, list, cancel and watch them, and notifies
watchers on every change. At most ``max_pending`` jobs wait in its queue.

With an :class:`~twin.persist.oplog.OperationLog` every job is a row of the store's database,
written when it is queued and on every change: its id, state and result outlive the process.
:meth:`JobManager.recover` (at the next start) resumes the unfinished jobs of the kinds that
registered a resume function (:class:`JobType`) and marks the others failed; a request id finds
the job a retried request started (and a different request under the same id is refused, when
the request was recorded with it); shutdown leaves queued jobs queued, and records running ones
that outlast the grace period as queued again, for the next start to resume.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from twin.persist.oplog import OperationKind as JobKind
from twin.persist.oplog import OperationLog, OperationRecord
from twin.persist.oplog import OperationState as JobState

from service.errors import DomainError, InvalidArgumentError, OperationCancelledError, OperationNotFoundError, UnavailableError, as_domain_error, public_message
from service.job_records import decode_error, encode_error

log = logging.getLogger("service.jobs")


@dataclass(frozen=True)
class JobSnapshot:
    """A job as it was at one moment.

    Attributes:
        id: unique id.
        kind: what it does.
        state: where it is.
        progress: fraction done in [0, 1].
        message: note on the current step.
        subject: the subject concerned ("" for several).
        created_at: submission time (UTC).
        started_at: start time, once started.
        finished_at: end time, once done.
        result: the job function's return value, once succeeded.
        error: the error it failed (or was cancelled) with; anything unexpected is kept as an
            :class:`~service.errors.InternalError` (its traceback logged once, when it failed).
        revision: increases on every change (watchers compare it).
        seq: submission order (newest has the largest).
        request_id: the client's request id ("" when none).
    """

    id: str
    kind: JobKind
    state: JobState
    progress: float
    message: str
    subject: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: object | None
    error: DomainError | None
    revision: int
    seq: int
    request_id: str = ""


class _Interrupted(OperationCancelledError):
    """The server is shutting down: the job stops at its checkpoint and is queued again."""


class JobContext:
    """What a running job sees of its manager: progress reports and cancellation."""

    def __init__(self, manager: "JobManager", job_id: str) -> None:
        self._manager = manager
        self.job_id = job_id
        self._cancel = threading.Event()
        self._interrupt = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """A checkpoint: raise if cancellation was requested.

        Raises:
            OperationCancelledError: cancellation was requested (or the server is shutting
                down; the job is then queued again for the next start).
        """
        if self._interrupt.is_set():
            raise _Interrupted("interrupted by a shutdown")
        if self._cancel.is_set():
            raise OperationCancelledError("cancelled on request")

    def record_versions(self, s: Session, refs: list[tuple[str, int]]) -> None:
        """Mark the job succeeded with the twin versions ``refs`` in the store transaction
        ``s`` that inserts them (a no-op without an operation log): a job killed right after
        that commit is not run again."""
        oplog = self._manager.oplog
        if oplog is not None:
            done = dict(state=JobState.SUCCEEDED, progress=1.0, message="done", finished_at=_now(), result={"twins": [list(r) for r in refs]})
            oplog.update(self.job_id, s, **done)

    def report(self, progress: float, message: str = "") -> None:
        """Record progress (clipped to [0, 1]) and a note, then check for cancellation."""
        self._manager._update(self.job_id, progress=min(max(float(progress), 0.0), 1.0), message=message)
        self.check_cancelled()


JobFn = Callable[[JobContext], object]


@dataclass(frozen=True)
class JobType:
    """How the manager stores, reads back and resumes the jobs of one kind.

    Attributes:
        encode: a succeeded job's result → JSON.
        decode: that JSON → the result (after a restart).
        resume: a stored, unfinished job → the function that runs it again (None: such jobs
            are marked failed after a restart).
        resume_rank: order of resuming (lower first; within a rank, oldest first): small jobs
            such as twin updates go before a cohort fit that would hold the worker long.
    """

    encode: Callable[[object], Mapping[str, object]]
    decode: Callable[[Mapping[str, object]], object]
    resume: Callable[[OperationRecord], JobFn] | None = None
    resume_rank: int = 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _json(value: Mapping[str, object]) -> dict[str, object]:
    """``value`` as the operation log reads it back (tuples as lists)."""
    return json.loads(json.dumps(dict(value)))


class JobManager:
    """Runs jobs on a thread pool and keeps their state (in the store's database when given an
    operation log).

    Args:
        max_workers: jobs running at once (fits are CPU-bound: 1 on a small machine).
        keep_finished: finished jobs kept in memory (the operation log keeps every one).
        max_pending: jobs waiting to run at most; more are refused (UNAVAILABLE: retry later).
        oplog: the store's operation log (None: jobs live in memory only).
    """

    def __init__(self, max_workers: int = 1, keep_finished: int = 1000, max_pending: int = 1000, oplog: OperationLog | None = None) -> None:
        if max_workers < 1 or keep_finished < 1 or max_pending < 1:
            raise ValueError("max_workers, keep_finished and max_pending must be >= 1")
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="twin-job")
        self._keep, self.max_pending, self.oplog = keep_finished, max_pending, oplog
        self._cond = threading.Condition()
        self._jobs: OrderedDict[str, JobSnapshot] = OrderedDict()
        self._contexts: dict[str, JobContext] = {}
        self._futures: dict[str, Future[None]] = {}
        self._types: dict[JobKind, JobType] = {}
        self._seq = itertools.count(1)
        self._closed = False

    def register(self, kind: JobKind, job_type: JobType) -> None:
        """Say how jobs of ``kind`` are stored and resumed (before :meth:`recover`)."""
        self._types[kind] = job_type

    # -- submitting --------------------------------------------------------------------------

    def check_capacity(self) -> None:
        """Raise unless a new job may be queued.

        Raises:
            UnavailableError: shutting down, or ``max_pending`` jobs are waiting already.
        """
        with self._cond:
            self._check_capacity_locked()

    def _check_capacity_locked(self) -> None:
        if self._closed:
            raise UnavailableError("the server is shutting down; no new operations are accepted")
        waiting = sum(1 for snap in self._jobs.values() if snap.state is JobState.PENDING)
        if waiting >= self.max_pending:
            raise UnavailableError(f"the operation queue is full ({waiting} operations waiting); retry later")

    def new_record(self, kind: JobKind, subject: str = "", request_id: str = "", params: Mapping[str, object] | None = None, message: str = "queued") -> OperationRecord:
        """A new job's first record (not yet stored or queued)."""
        return OperationRecord(uuid.uuid4().hex, kind, JobState.PENDING, subject, request_id, dict(params or {}), 0.0, message, _now())

    def submit(
        self,
        kind: JobKind,
        fn: JobFn,
        subject: str = "",
        message: str = "queued",
        request_id: str = "",
        params: Mapping[str, object] | None = None,
        request: Mapping[str, object] | None = None,
    ) -> JobSnapshot:
        """Queue ``fn`` as a new job and return its first snapshot; a request id the manager
        has seen for ``kind`` returns that job instead (nothing new is queued).

        Args:
            kind: what the job does.
            fn: the job.
            subject: the subject concerned ("" for several).
            message: its first note.
            request_id: the client's id of the request ("" when none).
            params: what resuming it needs (JSON).
            request: the request as the client sent it (JSON), kept in ``params["request"]``:
                a retry under the same request id must send the same (see :meth:`seen`).

        Raises:
            InvalidArgumentError: the request id was used by a different request.
            UnavailableError: the manager is shutting down, or its queue is full.
        """
        if request is not None:
            params = {**(params or {}), "request": _json(request)}
        with self._cond:
            seen = self.seen(kind, request_id, request)
            if seen is not None:
                return seen
            self._check_capacity_locked()
            rec = self.new_record(kind, subject, request_id, params, message)
            if self.oplog is not None:
                try:
                    rec = self.oplog.add(rec)
                except IntegrityError:  # the same request id, at the same moment
                    seen = self.seen(kind, request_id, request)
                    if seen is None:
                        raise
                    return seen
            return self._schedule_locked(rec, fn)

    def seen(self, kind: JobKind, request_id: str, request: Mapping[str, object] | None = None) -> JobSnapshot | None:
        """The job a request with ``request_id`` started before (None: none, or no id or no
        operation log to remember it by).

        Raises:
            InvalidArgumentError: that job was started by a different request (both recorded
                with the job: ``request``).
        """
        if not request_id or self.oplog is None:
            return None
        rec = self.oplog.by_request(kind, request_id)
        if rec is None:
            return None
        first = rec.params.get("request")
        if request is not None and isinstance(first, Mapping):
            now = _json(request)
            differ = sorted(k for k in set(first) | set(now) if first.get(k) != now.get(k))
            if differ:
                why = f"already used by a different request (operation {rec.id}; it differs in {', '.join(differ)})"
                raise InvalidArgumentError.field("request_id", why)
        return self._snapshot(rec)

    def adopt(self, op_id: str, fn: JobFn) -> JobSnapshot:
        """Queue ``fn`` for a job already recorded in the operation log (by a caller's
        transaction); a job this manager runs already is left as it is."""
        with self._cond:
            if op_id in self._jobs:
                return self._jobs[op_id]
            rec = self.oplog.get(op_id) if self.oplog is not None else None
            if rec is None:
                raise OperationNotFoundError(op_id)
            return self._schedule_locked(rec, fn) if not rec.state.done else self._snapshot(rec)

    def _schedule_locked(self, rec: OperationRecord, fn: JobFn) -> JobSnapshot:
        seq = rec.seq or next(self._seq)
        snap = JobSnapshot(rec.id, rec.kind, JobState.PENDING, 0.0, rec.message, rec.subject, rec.created_at, None, None, None, None, 0, seq, rec.request_id)
        ctx = JobContext(self, rec.id)
        self._jobs[rec.id] = snap
        self._contexts[rec.id] = ctx
        self._futures[rec.id] = self._pool.submit(self._run, rec.id, fn, ctx)
        self._cond.notify_all()
        log.info("operation queued", extra={"operation": rec.id, "kind": rec.kind.value, "subject": rec.subject})
        return snap

    def _run(self, job_id: str, fn: JobFn, ctx: JobContext) -> None:
        with self._cond:
            snap = self._jobs[job_id]
            if snap.state is not JobState.PENDING:  # cancelled while queued
                return
            if self._closed and self.oplog is not None:  # stays queued for the next start
                return
            if ctx.cancelled:
                self._finish_locked(job_id, JobState.CANCELLED, error=OperationCancelledError("cancelled before it started"))
                return
            self._set_locked(job_id, state=JobState.RUNNING, started_at=_now(), message="running")
        t0 = time.perf_counter()
        try:
            result = fn(ctx)
        except _Interrupted:
            with self._cond:
                self._set_locked(job_id, state=JobState.PENDING, started_at=None, message="interrupted by a shutdown; resumes at the next start")
                self._contexts.pop(job_id, None)
                self._futures.pop(job_id, None)
        except OperationCancelledError as exc:
            with self._cond:
                self._finish_locked(job_id, JobState.CANCELLED, error=exc, message="cancelled")
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded on the operation
            error = as_domain_error(exc)
            log.warning("operation failed", extra={"operation": job_id, "error": public_message(error)})
            with self._cond:
                self._finish_locked(job_id, JobState.FAILED, error=error, message="failed")
        else:
            with self._cond:
                self._finish_locked(job_id, JobState.SUCCEEDED, result=result, message="done", progress=1.0)
        log.info("operation finished", extra={"operation": job_id, "state": self._jobs[job_id].state.value, "seconds": round(time.perf_counter() - t0, 3)})

    # -- state changes (caller holds the lock) ------------------------------------------------

    def _set_locked(self, job_id: str, **changes: object) -> JobSnapshot:
        old = self._jobs[job_id]
        new = replace(old, revision=old.revision + 1, **changes)  # type: ignore[arg-type]
        self._jobs[job_id] = new
        self._persist(new)
        self._cond.notify_all()
        return new

    def _persist(self, snap: JobSnapshot) -> None:
        """Write a snapshot's changing fields to the operation log (when there is one)."""
        if self.oplog is None:
            return
        jt = self._types.get(snap.kind)
        result = None
        if snap.state is JobState.SUCCEEDED and snap.result is not None and jt is not None:
            result = dict(jt.encode(snap.result))
        try:
            self.oplog.update(
                snap.id,
                state=snap.state,
                progress=snap.progress,
                message=snap.message,
                started_at=snap.started_at,
                finished_at=snap.finished_at,
                result=result,
                error=None if snap.error is None else encode_error(snap.error),
            )
        except SQLAlchemyError as exc:  # the job goes on; its row catches up at the next change
            log.warning("operation not recorded", extra={"operation": snap.id, "error": type(exc).__name__})

    def _finish_locked(self, job_id: str, state: JobState, **changes: object) -> None:
        self._set_locked(job_id, state=state, finished_at=_now(), **changes)
        self._contexts.pop(job_id, None)
        self._futures.pop(job_id, None)
        finished = [k for k, s in self._jobs.items() if s.state.done]
        for k in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[k]

    def _update(self, job_id: str, progress: float, message: str) -> None:
        with self._cond:
            if job_id in self._jobs and not self._jobs[job_id].state.done:
                self._set_locked(job_id, progress=progress, message=message or self._jobs[job_id].message)

    def _snapshot(self, rec: OperationRecord) -> JobSnapshot:
        """The snapshot of a stored job (this process's own, when it has it)."""
        live = self._jobs.get(rec.id)
        if live is not None:
            return live
        jt = self._types.get(rec.kind)
        result = None
        if rec.state is JobState.SUCCEEDED and rec.result is not None and jt is not None:
            try:
                result = jt.decode(rec.result)
            except Exception as exc:  # noqa: BLE001 - a result that cannot be read back is left out
                log.warning("stored operation result unreadable", extra={"operation": rec.id, "error": type(exc).__name__})
        error = None if rec.error is None else decode_error(rec.error)
        return JobSnapshot(
            rec.id, rec.kind, rec.state, rec.progress, rec.message, rec.subject, rec.created_at, rec.started_at, rec.finished_at, result, error, 0, rec.seq, rec.request_id
        )

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobSnapshot:
        """The job's current snapshot.

        Raises:
            OperationNotFoundError: no such job (or it expired).
        """
        with self._cond:
            snap = self._jobs.get(job_id)
        if snap is None and self.oplog is not None and len(job_id) <= 32:
            rec = self.oplog.get(job_id)
            snap = None if rec is None else self._snapshot(rec)
        if snap is None:
            raise OperationNotFoundError(job_id)
        return snap

    def list(self, kind: JobKind | None = None, state: JobState | None = None, subject: str | None = None) -> list[JobSnapshot]:
        """Jobs matching every given filter, newest first."""
        if self.oplog is not None:
            with self._cond:
                out = [self._snapshot(r) for r in self.oplog.list(kind, state, subject)]
        else:
            with self._cond:
                snaps = list(self._jobs.values())
            out = [s for s in snaps if (kind is None or s.kind is kind) and (state is None or s.state is state) and (not subject or s.subject == subject)]
        return sorted(out, key=lambda s: -s.seq)

    def cancel(self, job_id: str) -> JobSnapshot:
        """Request cancellation: a pending job is cancelled at once, a running one at its next
        checkpoint; a finished one is left as it is. Returns the snapshot after the request.

        Raises:
            OperationNotFoundError: no such job.
        """
        with self._cond:
            snap = self._jobs.get(job_id)
            if snap is None:
                snap = self.get(job_id)  # stored only: not run by this process
                if not snap.state.done and self.oplog is not None:
                    self.oplog.update(job_id, state=JobState.CANCELLED, finished_at=_now(), message="cancelled", error=encode_error(OperationCancelledError("cancelled on request")))
                    snap = self._snapshot(self.oplog.get(job_id))  # type: ignore[arg-type]
                return snap
            if snap.state.done:
                return snap
            ctx = self._contexts.get(job_id)
            if ctx is not None:
                ctx._cancel.set()
            fut = self._futures.get(job_id)
            if snap.state is JobState.PENDING and fut is not None and fut.cancel():
                self._finish_locked(job_id, JobState.CANCELLED, error=OperationCancelledError("cancelled before it started"), message="cancelled")
            else:
                self._set_locked(job_id, message="cancellation requested")
            return self._jobs[job_id]

    def watch(self, job_id: str, is_active: Callable[[], bool] = lambda: True, poll_s: float = 0.5) -> Iterator[JobSnapshot]:
        """Yield the job's snapshot now and after every change, until it is done or
        ``is_active()`` turns false (the client went away, say).

        Raises:
            OperationNotFoundError: no such job.
        """
        snap = self.get(job_id)
        yield snap
        last = snap.revision
        while not snap.state.done and is_active():
            with self._cond:
                cur = self._jobs.get(job_id)
                if cur is not None and cur.revision == last:
                    self._cond.wait(timeout=poll_s)
                    cur = self._jobs.get(job_id)
            if cur is None:
                cur = self.get(job_id)  # finished and expired from memory: read it back
                if cur.state.done:
                    yield cur
                    return
            if cur.revision != last:
                snap, last = cur, cur.revision
                yield snap

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        """Block until the job is done (or ``timeout`` seconds pass); return its snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                snap = self._jobs.get(job_id) or self.get(job_id)
                if snap.state.done:
                    return snap
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return snap
                self._cond.wait(timeout=left if left is not None else 1.0)

    # -- restarting and shutting down ----------------------------------------------------------

    def recover(self) -> tuple[list[str], list[str]]:
        """Take over the unfinished jobs of a previous process over the same store: resume
        those whose kind registered a resume function, mark the others failed.

        Returns:
            The ids resumed and the ids marked failed.
        """
        resumed: list[str] = []
        failed: list[str] = []
        if self.oplog is None:
            return resumed, failed
        rank = {k: t.resume_rank for k, t in self._types.items()}
        for rec in sorted(self.oplog.unfinished(), key=lambda r: (rank.get(r.kind, 0), r.seq)):
            if rec.id in self._jobs:
                continue
            jt = self._types.get(rec.kind)
            fn = None
            if jt is not None and jt.resume is not None:
                try:
                    fn = jt.resume(rec)
                except Exception as exc:  # noqa: BLE001 - an unreadable job is marked failed
                    log.warning("operation not resumable", extra={"operation": rec.id, "error": type(exc).__name__})
            if fn is None:
                why = UnavailableError("interrupted by a server restart; start it again")
                self.oplog.update(rec.id, state=JobState.FAILED, finished_at=_now(), message="failed", error=encode_error(why))
                failed.append(rec.id)
                continue
            self.oplog.update(rec.id, state=JobState.PENDING, started_at=None, message="resumed after a restart")
            with self._cond:
                self._schedule_locked(replace(rec, state=JobState.PENDING, message="resumed after a restart"), fn)
            resumed.append(rec.id)
        if resumed or failed:
            log.info("operations recovered", extra={"resumed": len(resumed), "failed": len(failed)})
        return resumed, failed

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Refuse new jobs and give the running ones ``grace_s`` seconds to finish.

        With an operation log, queued jobs stay queued and running jobs that outlast the grace
        period are stopped at their next checkpoint and queued again: the next start resumes
        them. Without one, queued jobs are cancelled and running ones asked to cancel.
        """
        with self._cond:
            self._closed = True
            pending = [k for k, s in self._jobs.items() if s.state is JobState.PENDING]
            if self.oplog is not None:
                for k in pending:
                    fut = self._futures.pop(k, None)
                    if fut is not None:
                        fut.cancel()
                    self._contexts.pop(k, None)
                pending = []
        for k in pending:
            self.cancel(k)
        deadline = time.monotonic() + grace_s
        with self._cond:
            while any(s.state is JobState.RUNNING for s in self._jobs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    for ctx in self._contexts.values():
                        (ctx._interrupt if self.oplog is not None else ctx._cancel).set()
                    break
                self._cond.wait(timeout=left)
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["JobContext", "JobFn", "JobKind", "JobManager", "JobSnapshot", "JobState", "JobType"]
