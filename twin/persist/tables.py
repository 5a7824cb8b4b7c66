"""The store's database tables and the helpers its writers share (version races, file names,
checksums); :mod:`twin.persist.store` and :mod:`twin.persist.sessions` build on them."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import time
from pathlib import Path
from typing import Callable, TypeVar

from sqlalchemy import JSON, DateTime, Float, ForeignKeyConstraint, Integer, String, UniqueConstraint
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from twin.errors import TwinError

_T = TypeVar("_T")

_VERSION_ATTEMPTS = 30
"""Tries to take the next version number before a writer gives up. Each round of a race has one
winner, so ``n`` simultaneous writers need up to ``n`` tries; the jittered backoff spreads them."""


def _backoff(attempt: int) -> None:
    """Sleep a random, growing while (up to ~0.3 s) after losing a race for a version number."""
    time.sleep(random.uniform(0.0, 0.005 * 2 ** min(attempt, 6)))


def retry_version_race(attempt: Callable[[], _T], what: str) -> _T:
    """Run ``attempt`` until it wins the race for the next version (or session) number.

    ``attempt`` reads the last number and inserts the next one in one transaction; a concurrent
    writer that took the same number makes the insert fail on the unique constraint
    (:class:`IntegrityError`), and ``attempt`` runs again after a jittered backoff. It must undo
    its own side effects (files) before letting the error out.

    Raises:
        TwinError: still losing after ``_VERSION_ATTEMPTS`` tries; ``what`` names the number.
    """
    for i in range(_VERSION_ATTEMPTS):
        try:
            return attempt()
        except IntegrityError:
            _backoff(i)
    raise TwinError(f"could not allocate {what} (too many concurrent writers)")


class _Base(DeclarativeBase):
    pass


class _TwinRow(_Base):
    __tablename__ = "twin_versions"
    __table_args__ = (UniqueConstraint("subject", "version", name="uq_subject_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict] = mapped_column(JSON)
    hyperparameters: Mapped[dict] = mapped_column(JSON)
    trained_through_session: Mapped[int] = mapped_column(Integer)
    data_hash: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(100))
    metrics: Mapped[dict] = mapped_column(JSON)
    weights_file: Mapped[str] = mapped_column(String(500))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class _RuleRow(_Base):
    __tablename__ = "twin_rules"

    ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(100))
    file: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class _AliasRow(_Base):
    __tablename__ = "twin_aliases"
    __table_args__ = (ForeignKeyConstraint(["subject", "version"], ["twin_versions.subject", "twin_versions.version"]),)

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class _ResultRow(_Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("kind", "name", "version", name="uq_result_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class _OperationRow(_Base):
    """A long-running operation (twin update, cohort fit, curriculum search), kept so that it
    survives a restart: resumed, or marked failed, by the next server over the store."""

    __tablename__ = "operations"
    __table_args__ = (UniqueConstraint("kind", "request_id", name="uq_operation_request"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    params: Mapped[dict] = mapped_column(JSON)
    progress: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class _UploadRow(_Base):
    """A client's upload request id and the session (and twin update) it produced, written in
    the same transaction as the session's row: a retried upload finds it instead of storing the
    session twice."""

    __tablename__ = "upload_requests"

    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    session: Mapped[int] = mapped_column(Integer)
    operation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers keep reading while a writer writes
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _safe_name(subject: str) -> str:
    """A folder name for a subject: keeps letters, digits, '-', '_', '.'; hashes the rest."""
    clean = "".join(c if c.isalnum() or c in "-_." else "_" for c in subject).strip(".") or "subject"
    if clean != subject:
        clean += "-" + hashlib.sha1(subject.encode()).hexdigest()[:8]
    return clean[:120]
