"""ALF session folders on disk: finding them, and the records of what was found and read.

Folder layouts found (``<root>`` is the folder passed in):

* ``<root>/<lab>/Subjects/<subject>/<YYYY-MM-DD>/<NNN>/alf/`` (IBL / ONE cache layout; any
  depth above ``<subject>`` works, so a root holding several labs is fine);
* ``<root>/<subject>/<YYYY-MM-DD>/<NNN>/alf/``;
* a single session folder (``.../<subject>/<YYYY-MM-DD>/<NNN>``, its ``alf`` folder, or any folder
  holding ``alf/`` when ``subject`` is given).

Sessions are ordered per subject by date, then session number (:meth:`AlfSession.sort_key`).
Duplicated sessions and gaps (session numbers missing within a day) are recorded in an
:class:`AlfIngestReport` (:mod:`twin.data.alf` assembles it), never merged silently; what is
done with duplicates is the caller's choice (:class:`DuplicatePolicy`).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from twin.errors import TrialDataError
from twin.data.trials import IngestReport

#: a session date folder, ``YYYY-MM-DD``.
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: a session number folder within a day, ``NNN``.
SESSION_NUMBER_RE = re.compile(r"\d{1,3}")


class AlfLayout(enum.Enum):
    """Where a session's trials came from."""

    TABLE = "table"
    """``_ibl_trials.table.pqt`` only."""
    TABLE_AND_NPY = "table+npy"
    """The table merged with separate ``_ibl_trials.<attribute>.npy`` files."""
    NPY = "npy"
    """Separate ``_ibl_trials.<attribute>.npy`` files only."""
    ONE = "one"
    """Loaded by ONE (``ONE.load_object(eid, "trials")``)."""


class DuplicatePolicy(enum.Enum):
    """What to do with duplicated sessions (always listed in the report)."""

    KEEP_FIRST = "keep_first"
    """Read the first copy (in path order; for identical trials in two folders, the earlier
    session) and drop the others. Two copies of one session key with *different* trials are an
    error, since neither can be preferred."""
    KEEP_ALL = "keep_all"
    """Read every copy as a session of its own."""
    ERROR = "error"
    """Raise :class:`~twin.errors.TrialDataError` naming the copies."""


@dataclass(frozen=True)
class AlfSession:
    """One session folder found on disk.

    Attributes:
        subject: the animal.
        date: ``YYYY-MM-DD``, or None for a bare folder outside the ALF layout.
        number: the session number within the day (``001`` -> 1), or None for a bare folder.
        path: the session folder (the one holding ``alf/``).
        lab: the lab when the path is ``<lab>/Subjects/<subject>/...``.
    """

    subject: str
    date: str | None
    number: int | None
    path: Path
    lab: str | None = None

    @property
    def label(self) -> str:
        """``<YYYY-MM-DD>/<NNN>`` (as :func:`twin.data.ibl.read_alf_trials` labels sessions), or the
        folder name for a bare folder."""
        if self.date is None or self.number is None:
            return self.path.name
        return f"{self.date}/{self.number:03d}"

    @property
    def key(self) -> tuple[str, str, int] | tuple[str, str]:
        """What identifies the session: subject, date and number (subject and path when bare)."""
        if self.date is None or self.number is None:
            return (self.subject, str(self.path))
        return (self.subject, self.date, self.number)

    def sort_key(self) -> tuple[str, str, int, str]:
        """Order: subject, date, number, path."""
        return (self.subject, self.date or "", -1 if self.number is None else self.number, str(self.path))


@dataclass(frozen=True)
class SessionRecord:
    """A session that was read.

    Attributes:
        session: where it was found.
        layout: which datasets it came from.
        files: the files read (the session folder for sessions loaded by ONE).
        n_rows: trials read, no-go trials included.
        n_nogo: no-go trials dropped.
        index: its session number in the returned table (1-based, per subject).
    """

    session: AlfSession
    layout: AlfLayout
    files: tuple[Path, ...]
    n_rows: int
    n_nogo: int
    index: int


@dataclass(frozen=True)
class DuplicateSessions:
    """Copies of one session.

    Attributes:
        subject: the animal.
        paths: the session folders of the copies, in reading order.
        kept: those that were read (per the :class:`DuplicatePolicy`).
        same_key: True when the copies share date and number; False when different sessions
            hold identical trials (a copied folder).
        identical: whether all copies hold the same trials.
    """

    subject: str
    paths: tuple[Path, ...]
    kept: tuple[Path, ...]
    same_key: bool
    identical: bool

    def describe(self) -> str:
        """One line for logs."""
        what = "same date and number" if self.same_key else "identical trials in different sessions"
        same = "identical trials" if self.identical else "DIFFERENT trials"
        paths = ", ".join(map(str, self.paths))
        return f"duplicate session of {self.subject} ({what}, {same}): {paths}; read {len(self.kept)} of them"


@dataclass(frozen=True)
class SessionGap:
    """Session numbers missing within one day of one subject (days without sessions are fine).

    Attributes:
        subject: the animal.
        date: the day.
        missing: the missing session numbers.
    """

    subject: str
    date: str
    missing: tuple[int, ...]

    def describe(self) -> str:
        """One line for logs."""
        nums = ", ".join(f"{n:03d}" for n in self.missing)
        return f"gap: {self.subject} {self.date} has no session {nums}"


@dataclass(frozen=True)
class SkippedSession:
    """A session folder that could not be read (only with ``skip_invalid=True``).

    Attributes:
        path: the session folder.
        reason: the error, with the file at fault.
    """

    path: Path
    reason: str

    def describe(self) -> str:
        """One line for logs."""
        return f"skipped {self.path}: {self.reason}"


@dataclass(frozen=True)
class AlfIngestReport(IngestReport):
    """An :class:`~twin.data.trials.IngestReport` with what was found in the folder tree.

    Attributes:
        sessions: the sessions read, in table order.
        duplicates: duplicated sessions found (whatever the policy).
        gaps: session numbers missing within a day.
        skipped: session folders that could not be read (``skip_invalid=True`` only).
    """

    sessions: tuple[SessionRecord, ...] = ()
    duplicates: tuple[DuplicateSessions, ...] = ()
    gaps: tuple[SessionGap, ...] = ()
    skipped: tuple[SkippedSession, ...] = ()

    def summary(self) -> str:
        """One line: rows, no-go trials, sessions, and counts of duplicates, gaps, skips."""
        n_subj = len({r.session.subject for r in self.sessions})
        return (
            f"{super().summary()}; {len(self.sessions)} session(s) of {n_subj} subject(s); "
            f"{len(self.duplicates)} duplicate(s), {len(self.gaps)} gap(s), {len(self.skipped)} skipped"
        )

    def problems(self) -> tuple[str, ...]:
        """One line per duplicate, gap and skipped folder."""
        return tuple(x.describe() for x in (*self.duplicates, *self.gaps, *self.skipped))


# --------------------------------------------------------------------------------------------
# discovery


def session_from_path(path: Path) -> AlfSession | None:
    """The session of a ``.../<subject>/<YYYY-MM-DD>/<NNN>`` folder, None if it is not one."""
    if len(path.parts) < 3 or not SESSION_NUMBER_RE.fullmatch(path.name) or not DATE_RE.fullmatch(path.parent.name):
        return None
    subj_dir = path.parent.parent
    if not subj_dir.name:
        return None
    lab = subj_dir.parent.parent.name if subj_dir.parent.name == "Subjects" and subj_dir.parent.parent.name else None
    return AlfSession(subject=subj_dir.name, date=path.parent.name, number=int(path.name), path=path, lab=lab)


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def find_sessions(root: str | Path, subject: str | None = None) -> tuple[AlfSession, ...]:
    """Find the session folders under ``root`` (see the module doc for the layouts).

    Args:
        root: a folder tree, or one session folder (or its ``alf`` folder).
        subject: keep only this subject's sessions; for a bare session folder outside the ALF
            layout, the subject it belongs to.

    Returns:
        The sessions ordered by subject, date, number (then path, for copies).

    Raises:
        TrialDataError: ``root`` is not a folder, holds no session folder, or none of
            ``subject``; a bare session folder without ``subject``.
    """
    root = Path(root)
    source = str(root)
    if not root.is_dir():
        raise TrialDataError("no such folder", source=source)
    single = root.parent if root.name == "alf" else root
    found = session_from_path(single)
    if found is not None:
        if subject is not None and found.subject != subject:
            raise TrialDataError(f"this session folder belongs to subject {found.subject!r}, not {subject!r}", source=source)
        return (found,)
    if (single / "alf").is_dir():
        if subject is None:
            raise TrialDataError(
                "a session folder outside the <subject>/<YYYY-MM-DD>/<NNN> layout: pass subject= to name its animal",
                source=source,
            )
        return (AlfSession(subject=subject, date=None, number=None, path=single),)

    sessions: list[AlfSession] = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        here = Path(dirpath)
        sess = session_from_path(here) if here != root else None
        if sess is not None:
            sessions.append(sess)
            dirnames[:] = []
            continue
        real_here = os.path.realpath(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d == "alf":
                continue
            # a symbolic link back up the tree would loop forever
            if _inside(real_here, os.path.realpath(os.path.join(dirpath, d))):
                continue
            keep.append(d)
        dirnames[:] = keep
    if not sessions:
        raise TrialDataError(
            "no ALF session folders (<subject>/<YYYY-MM-DD>/<NNN>/alf/, optionally under <lab>/Subjects/) found",
            source=source,
        )
    if subject is not None:
        mine = [s for s in sessions if s.subject == subject]
        if not mine:
            names = sorted({s.subject for s in sessions})
            raise TrialDataError(f"no sessions of subject {subject!r}; subjects found: {names}", source=source)
        sessions = mine
    return tuple(sorted(sessions, key=AlfSession.sort_key))


def find_gaps(sessions: Iterable[AlfSession]) -> tuple[SessionGap, ...]:
    """Session numbers missing within a day (numbers run from 1, or from 0 when a 000 exists)."""
    per_day: dict[tuple[str, str], set[int]] = {}
    for s in sessions:
        if s.date is not None and s.number is not None:
            per_day.setdefault((s.subject, s.date), set()).add(s.number)
    gaps = []
    for (subj, date), nums in sorted(per_day.items()):
        missing = sorted(set(range(min(1, min(nums)), max(nums) + 1)) - nums)
        if missing:
            gaps.append(SessionGap(subject=subj, date=date, missing=tuple(missing)))
    return tuple(gaps)
