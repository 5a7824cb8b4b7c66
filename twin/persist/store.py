"""The versioned twin store: metadata in a SQL database, weights in safetensors files.

One row per twin version (subject, version) with what produced it: rule and hyperparameters,
the last session it was trained through, a hash of the trials it saw, the code version,
validation metrics and creation time. Aliases (``serving``, say) point a subject's name at one
version; the server follows them.

The embedded default is SQLite (a file next to the weights folder); the same code runs on
PostgreSQL given a ``postgresql+psycopg://`` URL. Writes are ordered so that a process killed at
any point leaves the store consistent: the weights file is written atomically first, then the
row is inserted in one transaction; a row therefore never names a missing file (an orphan file
may remain, and is ignored). Loading verifies the file's SHA-256 and never unpickles.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, TypeVar

import pandas as pd
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from twin.errors import ModelFileError, TwinError
from twin.models.learner import LearnerModel
from twin.models.state import TwinState
from twin.persist.model_files import load_model, save_model

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


class TwinNotFoundError(TwinError, LookupError):
    """No such subject, version or alias in the store."""


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


class ResultKind(enum.Enum):
    """What a stored result is."""

    HYPERPARAMETER_SEARCH = "hyperparameter_search"
    CURRICULUM_SEARCH = "curriculum_search"
    CURRICULUM = "curriculum"


@dataclass(frozen=True)
class StoredResult:
    """A versioned JSON result kept beside the twins (a search's outcome, a curriculum...).

    Attributes:
        kind: what it is.
        name: its name (versions count per kind and name).
        version: 1, 2, ...
        payload: the JSON content.
        created_at: when it was stored (UTC).
    """

    kind: ResultKind
    name: str
    version: int
    payload: dict[str, object]
    created_at: dt.datetime


@dataclass(frozen=True)
class TwinVersion:
    """Metadata of one stored twin version."""

    subject: str
    version: int
    rule: str
    spec: dict[str, object]
    hyperparameters: dict[str, object]
    trained_through_session: int
    data_hash: str
    code_version: str
    metrics: dict[str, float]
    weights_file: str
    weights_sha256: str
    created_at: dt.datetime
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Twin:
    """One loaded twin version.

    Attributes:
        model: the animal's learner model (eval mode, no gradients).
        meta: its stored metadata.
        state: where it continues from (end of its last trained session), if stored.
    """

    model: LearnerModel
    meta: TwinVersion
    state: TwinState | None


def code_version() -> str:
    """The installed package version."""
    try:
        return importlib_metadata.version("learning-twins")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def hash_trials(df: pd.DataFrame) -> str:
    """SHA-256 of a trials table's contents (row order and values), for provenance."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


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


class TwinStore:
    """Versioned storage of twins.

    Args:
        root: folder holding the weights (and, by default, the SQLite database ``twins.db``).
        url: SQLAlchemy database URL; default ``sqlite:///<root>/twins.db``.
    """

    def __init__(self, root: str | Path, url: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = url or f"sqlite:///{(self.root / 'twins.db').resolve()}"
        self.engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------------------

    def put(
        self,
        subject: str,
        model: LearnerModel,
        *,
        trained_through_session: int,
        data_hash: str,
        metrics: dict[str, float] | None = None,
        hyperparameters: dict[str, object] | None = None,
        alias: str | None = None,
        state: TwinState | None = None,
    ) -> TwinVersion:
        """Store a new version of ``subject``'s twin (version = previous + 1).

        The weights file is written (atomically) before the row, so a crash leaves no row
        pointing at a missing or partial file. ``state`` (the twin's end-of-session state) is
        stored in the same file.
        """
        if not subject:
            raise ValueError("subject must be a non-empty string")
        rel = Path("weights") / _safe_name(subject) / f"{uuid.uuid4().hex}.safetensors"
        path = save_model(model, self.root / rel, {"subject": subject}, state=state)
        digest = _sha256(path)

        def insert() -> int:
            with Session(self.engine) as s, s.begin():
                last = s.scalar(select(func.max(_TwinRow.version)).where(_TwinRow.subject == subject))
                row = _TwinRow(
                    subject=subject,
                    version=(last or 0) + 1,
                    rule=model.spec.rule,
                    spec=model.spec.to_dict(),
                    hyperparameters=dict(hyperparameters or {}),
                    trained_through_session=int(trained_through_session),
                    data_hash=data_hash,
                    code_version=code_version(),
                    metrics={k: float(v) for k, v in (metrics or {}).items()},
                    weights_file=rel.as_posix(),
                    weights_sha256=digest,
                    created_at=dt.datetime.now(dt.timezone.utc),
                )
                s.add(row)
                s.flush()
                if alias:
                    self._set_alias(s, subject, alias, row.version)
                return row.version

        return self.get(subject, retry_version_race(insert, f"a new version for subject {subject!r}"))

    def set_alias(self, subject: str, name: str, version: int) -> None:
        """Point alias ``name`` of ``subject`` at ``version``."""
        with Session(self.engine) as s, s.begin():
            self._set_alias(s, subject, name, version)

    def _set_alias(self, s: Session, subject: str, name: str, version: int) -> None:
        exists = s.scalar(select(_TwinRow.id).where(_TwinRow.subject == subject, _TwinRow.version == version))
        if exists is None:
            raise TwinNotFoundError(f"subject {subject!r} has no twin version {version}")
        row = s.get(_AliasRow, (subject, name))
        now = dt.datetime.now(dt.timezone.utc)
        if row is None:
            s.add(_AliasRow(subject=subject, name=name, version=version, updated_at=now))
        else:
            row.version, row.updated_at = version, now

    # -- reading ---------------------------------------------------------------------------

    def subjects(self) -> list[str]:
        """Subjects with at least one twin, sorted."""
        with Session(self.engine) as s:
            return list(s.scalars(select(_TwinRow.subject).distinct().order_by(_TwinRow.subject)))

    def versions(self, subject: str) -> list[TwinVersion]:
        """All versions of a subject's twin, oldest first."""
        with Session(self.engine) as s:
            rows = list(s.scalars(select(_TwinRow).where(_TwinRow.subject == subject).order_by(_TwinRow.version)))
            aliases = self._aliases(s, subject)
            return [_to_version(r, aliases) for r in rows]

    def resolve(self, subject: str, version: int | None = None, alias: str | None = None) -> int:
        """The version number named by ``version``, ``alias`` or (neither) the latest."""
        with Session(self.engine) as s:
            if alias is not None:
                row = s.get(_AliasRow, (subject, alias))
                if row is None:
                    raise TwinNotFoundError(f"subject {subject!r} has no alias {alias!r}")
                return row.version
            if version is not None:
                return version
            last = s.scalar(select(func.max(_TwinRow.version)).where(_TwinRow.subject == subject))
            if last is None:
                raise TwinNotFoundError(f"no twin stored for subject {subject!r}")
            return int(last)

    def get(self, subject: str, version: int | None = None, alias: str | None = None) -> TwinVersion:
        """Metadata of one version (default: the latest)."""
        v = self.resolve(subject, version, alias)
        with Session(self.engine) as s:
            row = s.scalar(select(_TwinRow).where(_TwinRow.subject == subject, _TwinRow.version == v))
            if row is None:
                raise TwinNotFoundError(f"subject {subject!r} has no twin version {v}")
            return _to_version(row, self._aliases(s, subject))

    def load(self, subject: str, version: int | None = None, alias: str | None = None) -> tuple[LearnerModel, TwinVersion]:
        """The twin's model and metadata; the weights file's checksum is verified first."""
        twin = self.load_twin(subject, version, alias)
        return twin.model, twin.meta

    def load_twin(self, subject: str, version: int | None = None, alias: str | None = None) -> Twin:
        """The twin's model, metadata and end-of-session state (checksum verified first)."""
        meta = self.get(subject, version, alias)
        path = self.root / meta.weights_file
        if not path.is_file():
            raise ModelFileError(f"{path}: weights of {subject!r} v{meta.version} are missing")
        if _sha256(path) != meta.weights_sha256:
            raise ModelFileError(f"{path}: checksum mismatch for {subject!r} v{meta.version}")
        stored = load_model(path)
        return Twin(model=stored.model, meta=meta, state=stored.state)

    # -- results ---------------------------------------------------------------------------

    def put_result(self, kind: ResultKind, name: str, payload: dict[str, object]) -> StoredResult:
        """Store ``payload`` (JSON-serialisable) as the next version of result ``kind``/``name``."""
        if not name:
            raise ValueError("name must be a non-empty string")
        payload = json.loads(json.dumps(payload, default=str))

        def insert() -> StoredResult:
            with Session(self.engine) as s, s.begin():
                last = s.scalar(select(func.max(_ResultRow.version)).where(_ResultRow.kind == kind.value, _ResultRow.name == name))
                row = _ResultRow(kind=kind.value, name=name, version=(last or 0) + 1, payload=payload, created_at=dt.datetime.now(dt.timezone.utc))
                s.add(row)
                s.flush()
                return _to_result(row)

        return retry_version_race(insert, f"a version for result {kind.value}/{name}")

    def get_result(self, kind: ResultKind, name: str, version: int | None = None) -> StoredResult:
        """One stored result (default: its latest version)."""
        with Session(self.engine) as s:
            q = select(_ResultRow).where(_ResultRow.kind == kind.value, _ResultRow.name == name)
            q = q.where(_ResultRow.version == version) if version is not None else q.order_by(_ResultRow.version.desc()).limit(1)
            row = s.scalar(q)
            if row is None:
                raise TwinNotFoundError(f"no stored {kind.value} named {name!r}" + (f" with version {version}" if version is not None else ""))
            return _to_result(row)

    def results(self, kind: ResultKind | None = None) -> list[StoredResult]:
        """Stored results (of one kind), oldest first."""
        with Session(self.engine) as s:
            q = select(_ResultRow).order_by(_ResultRow.id)
            if kind is not None:
                q = q.where(_ResultRow.kind == kind.value)
            return [_to_result(r) for r in s.scalars(q)]

    @staticmethod
    def _aliases(s: Session, subject: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for a in s.scalars(select(_AliasRow).where(_AliasRow.subject == subject)):
            out.setdefault(a.version, []).append(a.name)
        return out


def _to_result(r: _ResultRow) -> StoredResult:
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)
    return StoredResult(ResultKind(r.kind), r.name, r.version, dict(r.payload), created)


def _to_version(r: _TwinRow, aliases: dict[int, list[str]]) -> TwinVersion:
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)
    return TwinVersion(
        subject=r.subject,
        version=r.version,
        rule=r.rule,
        spec=dict(r.spec),
        hyperparameters=dict(r.hyperparameters),
        trained_through_session=r.trained_through_session,
        data_hash=r.data_hash,
        code_version=r.code_version,
        metrics=dict(r.metrics),
        weights_file=r.weights_file,
        weights_sha256=r.weights_sha256,
        created_at=created,
        aliases=tuple(sorted(aliases.get(r.version, []))),
    )


def _safe_name(subject: str) -> str:
    """A folder name for a subject: keeps letters, digits, '-', '_', '.'; hashes the rest."""
    clean = "".join(c if c.isalnum() or c in "-_." else "_" for c in subject).strip(".") or "subject"
    if clean != subject:
        clean += "-" + hashlib.sha1(subject.encode()).hexdigest()[:8]
    return clean[:120]


__all__ = ["ResultKind", "StoredResult", "Twin", "TwinStore", "TwinVersion", "TwinNotFoundError", "hash_trials", "code_version"]
