"""Long-running operations: a thread-pool job manager with progress, cancellation and watching.

A job is a callable taking a :class:`JobContext`; it reports progress through it and checks
for cancellation at its checkpoints. The manager keeps every job's state (and the last
``keep_finished`` finished ones), lets callers get, list, cancel and watch them, and notifies
watchers on every change.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from service.errors import DomainError, OperationCancelledError, OperationNotFoundError, UnavailableError, as_domain_error, public_message

log = logging.getLogger("service.jobs")


class JobKind(enum.Enum):
    """What a job does."""

    TWIN_UPDATE = "twin_update"
    FIT_COHORT = "fit_cohort"
    CURRICULUM_SEARCH = "curriculum_search"


class JobState(enum.Enum):
    """Where a job is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


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


class JobContext:
    """What a running job sees of its manager: progress reports and cancellation."""

    def __init__(self, manager: "JobManager", job_id: str) -> None:
        self._manager = manager
        self.job_id = job_id
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """A checkpoint: raise if cancellation was requested.

        Raises:
            OperationCancelledError: cancellation was requested.
        """
        if self._cancel.is_set():
            raise OperationCancelledError("cancelled on request")

    def report(self, progress: float, message: str = "") -> None:
        """Record progress (clipped to [0, 1]) and a note, then check for cancellation."""
        self._manager._update(self.job_id, progress=min(max(float(progress), 0.0), 1.0), message=message)
        self.check_cancelled()


JobFn = Callable[[JobContext], object]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class JobManager:
    """Runs jobs on a thread pool and keeps their state.

    Args:
        max_workers: jobs running at once (fits are CPU-bound: 1 on a small machine).
        keep_finished: finished jobs kept for Get/List (oldest dropped first).
    """

    def __init__(self, max_workers: int = 1, keep_finished: int = 1000) -> None:
        if max_workers < 1 or keep_finished < 1:
            raise ValueError("max_workers and keep_finished must be >= 1")
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="twin-job")
        self._keep = keep_finished
        self._cond = threading.Condition()
        self._jobs: OrderedDict[str, JobSnapshot] = OrderedDict()
        self._contexts: dict[str, JobContext] = {}
        self._futures: dict[str, Future[None]] = {}
        self._seq = itertools.count(1)
        self._closed = False

    # -- submitting --------------------------------------------------------------------------

    def submit(self, kind: JobKind, fn: JobFn, subject: str = "", message: str = "queued") -> JobSnapshot:
        """Queue ``fn`` as a new job and return its first snapshot.

        Raises:
            UnavailableError: the manager is shutting down.
        """
        job_id = uuid.uuid4().hex
        snap = JobSnapshot(job_id, kind, JobState.PENDING, 0.0, message, subject, _now(), None, None, None, None, 0, next(self._seq))
        ctx = JobContext(self, job_id)
        with self._cond:
            if self._closed:
                raise UnavailableError("the server is shutting down; no new operations are accepted")
            self._jobs[job_id] = snap
            self._contexts[job_id] = ctx
            self._futures[job_id] = self._pool.submit(self._run, job_id, fn, ctx)
            self._cond.notify_all()
        log.info("operation queued", extra={"operation": job_id, "kind": kind.value, "subject": subject})
        return snap

    def _run(self, job_id: str, fn: JobFn, ctx: JobContext) -> None:
        with self._cond:
            snap = self._jobs[job_id]
            if snap.state is not JobState.PENDING:  # cancelled while queued
                return
            if ctx.cancelled:
                self._finish_locked(job_id, JobState.CANCELLED, error=OperationCancelledError("cancelled before it started"))
                return
            self._set_locked(job_id, state=JobState.RUNNING, started_at=_now(), message="running")
        t0 = time.perf_counter()
        try:
            result = fn(ctx)
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
        self._cond.notify_all()
        return new

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

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobSnapshot:
        """The job's current snapshot.

        Raises:
            OperationNotFoundError: no such job (or it expired).
        """
        with self._cond:
            snap = self._jobs.get(job_id)
        if snap is None:
            raise OperationNotFoundError(job_id)
        return snap

    def list(self, kind: JobKind | None = None, state: JobState | None = None, subject: str | None = None) -> list[JobSnapshot]:
        """Jobs matching every given filter, newest first."""
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
                raise OperationNotFoundError(job_id)
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
                raise OperationNotFoundError(job_id)
            if cur.revision != last:
                snap, last = cur, cur.revision
                yield snap

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        """Block until the job is done (or ``timeout`` seconds pass); return its snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                snap = self._jobs.get(job_id)
                if snap is None:
                    raise OperationNotFoundError(job_id)
                if snap.state.done:
                    return snap
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return snap
                self._cond.wait(timeout=left if left is not None else 1.0)

    # -- shutting down -------------------------------------------------------------------------

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Refuse new jobs, cancel the pending ones, give the running ones ``grace_s`` seconds
        to finish, then request their cancellation and wait for them."""
        with self._cond:
            self._closed = True
            pending = [k for k, s in self._jobs.items() if s.state is JobState.PENDING]
        for k in pending:
            self.cancel(k)
        deadline = time.monotonic() + grace_s
        with self._cond:
            while any(s.state is JobState.RUNNING for s in self._jobs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    for ctx in self._contexts.values():
                        ctx._cancel.set()
                    break
                self._cond.wait(timeout=left)
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["JobContext", "JobFn", "JobKind", "JobManager", "JobSnapshot", "JobState"]
