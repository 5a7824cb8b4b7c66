"""The operation log: long-running operations recorded in the twin store's database.

Each operation (a twin update, a cohort fit, a curriculum search) is one row of the
``operations`` table, written when it is queued and on every change, so its id, state and
result survive a restart of the server: the next server over the store resumes the unfinished
ones or marks them failed. A client-supplied request id is unique per kind (a retried request
finds its operation), and an upload's request id is recorded with the session it stored
(``upload_requests``), in the session's own transaction.

Every write may join a caller's transaction (``s``): a twin update marks itself succeeded in the
transaction that inserts its twin version, so an update is stored exactly once even when the
process is killed between the two.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from twin.persist.store import TwinStore
from twin.persist.tables import _OperationRow, _UploadRow


class OperationKind(enum.Enum):
    """What an operation does."""

    TWIN_UPDATE = "twin_update"
    FIT_COHORT = "fit_cohort"
    CURRICULUM_SEARCH = "curriculum_search"


class OperationState(enum.Enum):
    """Where an operation is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True once the operation can no longer change."""
        return self in (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED)


@dataclass(frozen=True)
class OperationRecord:
    """One stored operation.

    Attributes:
        id: unique id.
        kind: what it does.
        state: where it is.
        subject: the subject concerned ("" for several).
        request_id: the client's request id ("" when none was given).
        params: what resuming it needs (JSON).
        progress: fraction done in [0, 1].
        message: note on the current step.
        created_at: when it was queued (UTC).
        started_at: when it last started, if it did.
        finished_at: when it finished, once done.
        result: its result (JSON), once succeeded.
        error: its error (JSON: ``type``, ``message``, optional ``fields``), once failed.
        seq: queueing order (newest has the largest).
    """

    id: str
    kind: OperationKind
    state: OperationState
    subject: str
    request_id: str
    params: Mapping[str, object] = field(default_factory=dict)
    progress: float = 0.0
    message: str = ""
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: Mapping[str, object] | None = None
    error: Mapping[str, object] | None = None
    seq: int = 0


@dataclass(frozen=True)
class UploadRequest:
    """An upload's request id and what it stored.

    Attributes:
        request_id: the client's id.
        subject: the animal.
        session: the session number it was stored as.
        operation_id: the twin update it joined ("" when none).
    """

    request_id: str
    subject: str
    session: int
    operation_id: str


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    return None if t is None or t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _record(r: _OperationRow) -> OperationRecord:
    return OperationRecord(
        id=r.id,
        kind=OperationKind(r.kind),
        state=OperationState(r.state),
        subject=r.subject,
        request_id=r.request_id or "",
        params=dict(r.params or {}),
        progress=float(r.progress),
        message=r.message,
        created_at=_utc(r.created_at) or r.created_at,
        started_at=_utc(r.started_at),
        finished_at=_utc(r.finished_at),
        result=None if r.result is None else dict(r.result),
        error=None if r.error is None else dict(r.error),
        seq=int(r.seq),
    )


#: The columns :meth:`OperationLog.update` may change.
_MUTABLE = frozenset({"state", "progress", "message", "started_at", "finished_at", "result", "error", "params"})


class OperationLog:
    """The operations of a twin store, in its database.

    Args:
        store: the twin store whose database keeps the operations.
    """

    def __init__(self, store: TwinStore) -> None:
        self.store = store
        for table in (_OperationRow.__table__, _UploadRow.__table__):  # type: ignore[attr-defined]
            table.create(store.engine, checkfirst=True)

    @contextmanager
    def _session(self, s: Session | None) -> Iterator[Session]:
        if s is not None:
            yield s
            return
        with Session(self.store.engine) as own, own.begin():
            yield own

    # -- writing ---------------------------------------------------------------------------

    def add(self, rec: OperationRecord, s: Session | None = None) -> OperationRecord:
        """Insert a new operation (in ``s`` when given); returns it with its ``seq``.

        Raises:
            sqlalchemy.exc.IntegrityError: its id, or its kind and request id, exist already.
        """
        with self._session(s) as ses:
            row = _OperationRow(
                id=rec.id,
                kind=rec.kind.value,
                state=rec.state.value,
                subject=rec.subject,
                request_id=rec.request_id or None,
                params=dict(rec.params),
                progress=rec.progress,
                message=rec.message[:500],
                created_at=rec.created_at,
                started_at=rec.started_at,
                finished_at=rec.finished_at,
                result=None if rec.result is None else dict(rec.result),
                error=None if rec.error is None else dict(rec.error),
            )
            ses.add(row)
            ses.flush()
            return _record(row)

    def update(self, op_id: str, s: Session | None = None, **changes: object) -> None:
        """Change the columns ``changes`` names (state as :class:`OperationState`)."""
        unknown = set(changes) - _MUTABLE
        if unknown:
            raise ValueError(f"not an updatable operation column: {sorted(unknown)}")
        with self._session(s) as ses:
            row = ses.scalar(select(_OperationRow).where(_OperationRow.id == op_id))
            if row is None:
                return
            for k, v in changes.items():
                if isinstance(v, OperationState):
                    v = v.value
                if k == "message":
                    v = str(v)[:500]
                setattr(row, k, v)

    def record_upload(self, s: Session, request_id: str, subject: str, session: int, operation_id: str) -> None:
        """Record an upload's request id in the session's transaction ``s``."""
        s.add(_UploadRow(request_id=request_id, subject=subject, session=session, operation_id=operation_id or None, created_at=dt.datetime.now(dt.timezone.utc)))

    # -- reading ---------------------------------------------------------------------------

    def get(self, op_id: str, s: Session | None = None) -> OperationRecord | None:
        """One operation (None when there is no such id)."""
        with self._session(s) as ses:
            row = ses.scalar(select(_OperationRow).where(_OperationRow.id == op_id))
            return None if row is None else _record(row)

    def by_request(self, kind: OperationKind, request_id: str, s: Session | None = None) -> OperationRecord | None:
        """The operation of kind ``kind`` a client started with ``request_id`` (None: none)."""
        with self._session(s) as ses:
            row = ses.scalar(select(_OperationRow).where(_OperationRow.kind == kind.value, _OperationRow.request_id == request_id))
            return None if row is None else _record(row)

    def pending(self, kind: OperationKind, subject: str, s: Session | None = None) -> OperationRecord | None:
        """The subject's queued (not yet started) operation of kind ``kind``, if any."""
        with self._session(s) as ses:
            q = select(_OperationRow).where(
                _OperationRow.kind == kind.value, _OperationRow.subject == subject, _OperationRow.state == OperationState.PENDING.value
            )
            row = ses.scalar(q.order_by(_OperationRow.seq).limit(1))
            return None if row is None else _record(row)

    def list(self, kind: OperationKind | None = None, state: OperationState | None = None, subject: str | None = None) -> list[OperationRecord]:
        """Operations matching every given filter, oldest first."""
        with Session(self.store.engine) as s:
            q = select(_OperationRow).order_by(_OperationRow.seq)
            if kind is not None:
                q = q.where(_OperationRow.kind == kind.value)
            if state is not None:
                q = q.where(_OperationRow.state == state.value)
            if subject:
                q = q.where(_OperationRow.subject == subject)
            return [_record(r) for r in s.scalars(q)]

    def unfinished(self) -> list[OperationRecord]:
        """Operations that are queued or were running, oldest first."""
        return [r for r in self.list() if not r.state.done]

    def upload(self, request_id: str, s: Session | None = None) -> UploadRequest | None:
        """What the upload with ``request_id`` stored (None: no such upload)."""
        with self._session(s) as ses:
            row = ses.get(_UploadRow, request_id)
            return None if row is None else UploadRequest(row.request_id, row.subject, row.session, row.operation_id or "")

    def uploads(self) -> list[UploadRequest]:
        """Every recorded upload request."""
        with Session(self.store.engine) as s:
            return [UploadRequest(r.request_id, r.subject, r.session, r.operation_id or "") for r in s.scalars(select(_UploadRow))]


__all__ = ["OperationKind", "OperationLog", "OperationRecord", "OperationState", "UploadRequest"]
