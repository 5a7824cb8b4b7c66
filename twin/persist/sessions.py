"""Stored sessions: each animal's trials, one validated session at a time.

Rigs upload a finished session; it is validated (errors name the row and column), given the
subject's next session number and written as one parquet file (atomically: temp file, fsync,
rename) before its row is inserted into the twin store's database, so a crash never leaves a row
pointing at a missing file. The sessions of a subject read back as one canonical trials table,
which is what twins are fitted and updated on.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyarrow import ArrowException
from sqlalchemy import DateTime, Integer, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from twin.persist.atomic import atomic_write
from twin.errors import StoredDataError, TrialDataError
from twin.persist.store import TwinNotFoundError, TwinStore, hash_trials
from twin.persist.tables import _Base, _safe_name, retry_version_race
from twin.data.trials import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, validate_trials

#: columns a rig supplies for one session (subject, session and trial numbers are assigned).
SESSION_COLUMNS: tuple[str, ...] = tuple(c for c in REQUIRED_COLUMNS if c not in ("subject", "session", "trial"))


class _SessionRow(_Base):
    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("subject", "session", name="uq_subject_session"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    session: Mapped[int] = mapped_column(Integer)
    n_trials: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data_hash: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class SessionRecord:
    """One stored session.

    Attributes:
        subject: the animal.
        session: 1-based session number in training order.
        n_trials: trials in the session.
        label: the source's session key or date, if given.
        data_hash: SHA-256 of the stored trials.
        created_at: when it was stored (UTC).
    """

    subject: str
    session: int
    n_trials: int
    label: str | None
    data_hash: str
    created_at: dt.datetime


def _record(r: _SessionRow) -> SessionRecord:
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)
    return SessionRecord(r.subject, r.session, r.n_trials, r.label, r.data_hash, created)


class SessionStore:
    """The sessions of every animal, kept beside its twins (same database and root folder).

    Args:
        store: the twin store whose database and folder hold the sessions.
    """

    def __init__(self, store: TwinStore) -> None:
        self.store = store
        _SessionRow.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]

    # -- writing ---------------------------------------------------------------------------

    def add_session(
        self, subject: str, trials: pd.DataFrame, label: str | None = None, source: str = "<upload>", in_transaction: Callable[[Session, SessionRecord], None] | None = None
    ) -> SessionRecord:
        """Validate one session's trials and store it as the subject's next session.

        Args:
            subject: the animal.
            trials: the session's trials in order, with :data:`SESSION_COLUMNS` (``trial``
                optional, ``subject``/``session`` ignored and assigned).
            label: the source's session key or date.
            source: name used in error messages; rows in errors are 1-based rows of ``trials``.
            in_transaction: joins the transaction that inserts the session's row (called with
                the session and the new record before it commits).

        Raises:
            TrialDataError: bad trials (names the row and column), no trials, or no subject.
        """
        if not subject:
            raise TrialDataError("subject must be a non-empty string", source=source, column="subject")
        missing = [c for c in SESSION_COLUMNS if c not in trials.columns]
        if missing:
            raise TrialDataError(f"missing required column(s) {missing}; present: {list(trials.columns)}", source=source)
        if len(trials) == 0:
            raise TrialDataError("the session has no trials", source=source)
        keep = [c for c in (*SESSION_COLUMNS, *OPTIONAL_COLUMNS) if c in trials.columns and c != "session_label"]
        df = trials[keep].reset_index(drop=True).copy()
        df.insert(0, "trial", trials["trial"].to_numpy() if "trial" in trials.columns else range(1, len(df) + 1))
        df.insert(0, "session", 1)
        df.insert(0, "subject", subject)
        df = validate_trials(df, source=source)
        if label is not None:
            df["session_label"] = str(label)

        def insert() -> SessionRecord:
            with Session(self.store.engine) as s:
                number = (s.scalar(select(func.max(_SessionRow.session)).where(_SessionRow.subject == subject)) or 0) + 1
            df["session"] = number
            rel = Path("sessions") / _safe_name(subject) / f"{number:05d}-{uuid.uuid4().hex[:12]}.parquet"
            atomic_write(self.store.root / rel, lambda tmp: df.to_parquet(tmp, index=False))
            try:
                with Session(self.store.engine) as s, s.begin():
                    row = _SessionRow(
                        subject=subject,
                        session=number,
                        n_trials=len(df),
                        label=None if label is None else str(label)[:200],
                        data_hash=hash_trials(df),
                        file=rel.as_posix(),
                        created_at=dt.datetime.now(dt.timezone.utc),
                    )
                    s.add(row)
                    s.flush()
                    if in_transaction is not None:
                        in_transaction(s, _record(row))
                    return _record(row)
            except BaseException:
                (self.store.root / rel).unlink(missing_ok=True)  # another upload took this number, or the transaction failed
                raise

        # concurrent uploads for one subject race for the next session number
        return retry_version_race(insert, f"a session number for subject {subject!r}")

    def add_table(self, df: pd.DataFrame, source: str = "<table>") -> list[SessionRecord]:
        """Store every session of a canonical trials table (validated first, as a whole), each
        as its subject's next session, in table order."""
        df = validate_trials(df, source=source)
        out = []
        for (subject, _), part in df.groupby(["subject", "session"], sort=False):
            label = str(part["session_label"].iloc[0]) if "session_label" in part.columns else None
            out.append(self.add_session(str(subject), part, label=label, source=source))
        return out

    # -- reading ---------------------------------------------------------------------------

    def subjects(self) -> list[str]:
        """Subjects with at least one stored session, sorted."""
        with Session(self.store.engine) as s:
            return list(s.scalars(select(_SessionRow.subject).distinct().order_by(_SessionRow.subject)))

    def sessions(self, subject: str) -> list[SessionRecord]:
        """The subject's stored sessions, in order (empty when it has none)."""
        with Session(self.store.engine) as s:
            rows = s.scalars(select(_SessionRow).where(_SessionRow.subject == subject).order_by(_SessionRow.session))
            return [_record(r) for r in rows]

    def trials(self, subject: str, through_session: int | None = None) -> pd.DataFrame:
        """The subject's sessions ``1..through_session`` (default all) as one canonical table;
        every session file is checked against the row count and ``data_hash`` recorded when it
        was stored.

        Raises:
            TwinNotFoundError: the subject has no stored sessions.
            StoredDataError: a session file is missing, unreadable or changed since it was stored.
        """
        with Session(self.store.engine) as s:
            q = select(_SessionRow).where(_SessionRow.subject == subject).order_by(_SessionRow.session)
            if through_session is not None:
                q = q.where(_SessionRow.session <= through_session)
            rows = [(r.session, r.file, r.n_trials, r.data_hash) for r in s.scalars(q)]
        if not rows:
            raise TwinNotFoundError(f"no stored sessions for subject {subject!r}")
        return pd.concat([self._read(subject, *row) for row in rows], ignore_index=True)

    def _read(self, subject: str, session: int, rel: str, n_trials: int, data_hash: str) -> pd.DataFrame:
        """One stored session's trials, verified (see :meth:`trials`)."""
        what = f"stored session {session} of subject {subject!r} ({rel})"
        path = self.store.root / rel
        if not path.is_file():
            raise StoredDataError(f"{what} is missing")
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError, ArrowException) as exc:
            raise StoredDataError(f"{what} is unreadable ({type(exc).__name__})") from None
        if len(df) != n_trials or hash_trials(df) != data_hash:
            raise StoredDataError(f"{what} does not match the checksum recorded when it was stored")
        return df


__all__ = ["SESSION_COLUMNS", "SessionRecord", "SessionStore"]
