"""Read IBL trials from a tree of ALF session folders (a lab's data folder or a ONE local cache).

Folder layouts found (``<root>`` is the folder passed in):

* ``<root>/<lab>/Subjects/<subject>/<YYYY-MM-DD>/<NNN>/alf/`` (IBL / ONE cache layout; any
  depth above ``<subject>`` works, so a root holding several labs is fine);
* ``<root>/<subject>/<YYYY-MM-DD>/<NNN>/alf/``;
* a single session folder (``.../<subject>/<YYYY-MM-DD>/<NNN>``, its ``alf`` folder, or any folder
  holding ``alf/`` when ``subject`` is given).

Trials datasets of one session (files in ``alf/``):

* ``_ibl_trials.table.pqt``: one parquet table, one row per trial. Real IBL tables lack some
  attributes that live in separate files (``_ibl_trials.stimOn_times.npy``...): every separate
  trials dataset present is merged with the table (a column present in both must agree);
* or only separate datasets ``_ibl_trials.<attribute>.npy`` (``contrastLeft``, ``contrastRight``,
  ``choice``, ``feedbackType``, ``probabilityLeft``, ...), arrays with one entry per trial.

File names follow ALF: ``[_<namespace>_]trials.<attribute>[.<extra>...].npy`` -- the namespace
(``_ibl_``) is optional, extra parts (e.g. a dataset UUID) are ignored. A revision sub-folder
``alf/#<revision>#/`` overrides, attribute by attribute, the files of older revisions and of
``alf/`` itself (the newest revision, in name order, wins, as ONE does by default). When ``alf/``
holds no trials datasets but exactly one task collection ``alf/task_NN/`` does, that collection is
read. Two-dimensional datasets (``intervals``) are length-checked but not used. Arrays are loaded
with ``allow_pickle=False``: a file that would need unpickling is refused, never unpickled.

Each session is converted by :func:`twin.data.ibl.alf_frame_to_trials` (the conversion of
:func:`twin.data.ibl.read_alf_trials`: ALF ``choice`` -1 = right response, no-go trials dropped and
counted, rewarded side from the stimulus side, reaction time ``firstMovement_times -
stimOn_times``). Errors name the file at fault (or the session folder) and, for values, the
1-based trial and the attribute.

Sessions are ordered per subject by date, then session number, and numbered 1..n; the label
``<YYYY-MM-DD>/<NNN>`` is kept in ``session_label``. Subjects come in name order. Duplicated
sessions (the same subject, date and number found twice, e.g. under two labs or through a
symbolic link; or identical trials in two folders, e.g. a copied folder) and gaps (session
numbers missing within a day) are listed in the :class:`AlfIngestReport`, never merged
silently; what is done with duplicates is the caller's choice (:class:`DuplicatePolicy`).
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError, TwinError
from twin.data.ibl import ALF_REQUIRED, alf_frame_to_trials
from twin.data.trials import IngestReport, validate_trials

#: ALF attributes handed to the conversion besides :data:`twin.data.ibl.ALF_REQUIRED`.
ALF_OPTIONAL: tuple[str, ...] = ("stimOn_times", "firstMovement_times")
#: name of the extra to install for :func:`read_one_cache`.
ONE_EXTRA = "learning-twins[one]"

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_RE = re.compile(r"\d{1,3}")
_REVISION_RE = re.compile(r"#[^#/]+#")
_TASK_RE = re.compile(r"task_\d+")
_TRIALS_FILE_RE = re.compile(
    r"(?:_(?P<namespace>[A-Za-z0-9]+)_)?trials\.(?P<attribute>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*)"
    r"(?P<extra>(?:\.[A-Za-z0-9-]+)*)\.(?P<ext>npy|pqt|parquet)"
)
_TABLE = "table"


class OptionalDependencyError(TwinError, ImportError):
    """An optional package that a feature needs is not installed."""


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


def _session_from_path(path: Path) -> AlfSession | None:
    """The session of a ``.../<subject>/<YYYY-MM-DD>/<NNN>`` folder, None if it is not one."""
    if len(path.parts) < 3 or not _NUMBER_RE.fullmatch(path.name) or not _DATE_RE.fullmatch(path.parent.name):
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
    found = _session_from_path(single)
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
        sess = _session_from_path(here) if here != root else None
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


# --------------------------------------------------------------------------------------------
# one session's datasets


@dataclass(frozen=True)
class _RawSession:
    """A session's raw ALF columns before conversion (internal)."""

    session: AlfSession
    where: Path
    raw: pd.DataFrame = field(repr=False)
    origin: Mapping[str, Path] = field(repr=False)
    layout: AlfLayout
    files: tuple[Path, ...]
    digest: str


def _trials_files(folder: Path) -> dict[str, tuple[str, Path]]:
    """``{attribute: (revision, file)}`` of the trials datasets directly in ``folder`` and its
    revision sub-folders, the newest revision of each attribute winning."""
    layers = [("", folder)] + [
        (d.name.strip("#"), d) for d in sorted(folder.iterdir()) if d.is_dir() and _REVISION_RE.fullmatch(d.name)
    ]
    chosen: dict[str, tuple[str, Path]] = {}
    for rev, layer in layers:  # in increasing revision order
        found: dict[str, list[Path]] = {}
        for f in sorted(layer.iterdir()):
            m = _TRIALS_FILE_RE.fullmatch(f.name)
            if m is None or not f.is_file():
                continue
            attr, is_table = m["attribute"], m["ext"] != "npy"
            if is_table != (attr == _TABLE):
                continue  # a non-table parquet or a table.npy: not a trials dataset we know
            found.setdefault(attr, []).append(f)
        for attr, files in found.items():
            if len(files) > 1:
                names = ", ".join(f.name for f in files)
                raise TrialDataError(
                    f"several files hold trials attribute {attr!r} ({names}); keep one", source=str(layer)
                )
            chosen[attr] = (rev, files[0])
    return chosen


def _load_npy(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise TrialDataError(f"cannot read the array: {exc}", source=str(path)) from None
    if magic != b"\x93NUMPY":
        raise TrialDataError("cannot read the array: not an .npy file (no NumPy header)", source=str(path))
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TrialDataError(
                "the array holds Python objects and could only be read by unpickling it, which is refused "
                "(save it as a plain numeric array)",
                source=str(path),
            ) from None
        raise TrialDataError(f"cannot read the array: {exc}", source=str(path)) from None
    except (OSError, EOFError) as exc:
        raise TrialDataError(f"cannot read the array: {exc}", source=str(path)) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive saved under .npy
        raise TrialDataError("not a single .npy array", source=str(path))
    if arr.ndim == 0:
        raise TrialDataError("a scalar, not one value per trial", source=str(path))
    return arr


def _load_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # pyarrow errors derive from these
        raise TrialDataError(f"cannot read the table: {exc}", source=str(path)) from None


def _merge(
    where: Path,
    table: pd.DataFrame | None,
    table_path: Path | None,
    arrays: Mapping[str, np.ndarray],
    origin: Mapping[str, Path],
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """One raw table from the trials table and the separate attribute arrays.

    Checks: every dataset has one entry per trial, a column present in the table and as an
    array agrees, and the required attributes are there.
    """
    lengths = {a: len(v) for a, v in arrays.items()}
    if table is not None:
        n = len(table)
        ref = f"{table_path.name if table_path is not None else 'the table'} has"
    else:
        counts = pd.Series(list(lengths.values())).value_counts()
        top = counts[counts == counts.max()].index.tolist()
        n = lengths["choice"] if "choice" in lengths and lengths["choice"] in top else int(top[0])
        ref = "the other trials datasets have"
    for attr in sorted(arrays, key=lambda a: str(origin[a])):
        if lengths[attr] != n:
            raise TrialDataError(
                f"trials attribute {attr!r} has {lengths[attr]} entries but {ref} {n}: arrays of unequal length",
                source=str(origin[attr]),
                column=attr,
            )
    raw = pd.DataFrame(index=pd.RangeIndex(n)) if table is None else table.reset_index(drop=True).copy()
    where_from: dict[str, Path] = {}
    if table is not None and table_path is not None:
        where_from.update(dict.fromkeys(map(str, raw.columns), table_path))
    for attr, arr in arrays.items():
        if arr.ndim != 1:
            continue
        if attr in raw.columns:
            col = raw[attr].to_numpy()
            same = col.shape == arr.shape and (
                np.array_equal(col.astype(float), arr.astype(float), equal_nan=True)
                if np.issubdtype(arr.dtype, np.number) and pd.api.types.is_numeric_dtype(raw[attr].dtype)
                else bool((col == arr).all())
            )
            if not same:
                other = table_path.name if table_path is not None else "the table"
                raise TrialDataError(
                    f"trials attribute {attr!r} disagrees with column {attr!r} of {other}", source=str(origin[attr]), column=attr
                )
            continue
        raw[attr] = arr
        where_from[attr] = origin[attr]
    missing = [a for a in ALF_REQUIRED if a not in raw.columns]
    if missing:
        present = sorted(map(str, raw.columns))
        raise TrialDataError(
            f"missing required trials attribute(s) {missing}: no _ibl_trials.<attribute>.npy file and no such "
            f"column in a trials table; present: {present}",
            source=str(where),
            column=missing[0],
        )
    return raw, where_from


def _digest(raw: pd.DataFrame) -> str:
    h = hashlib.sha1(str(len(raw)).encode())
    for c in ALF_REQUIRED:
        h.update(np.ascontiguousarray(pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)).tobytes())
    return h.hexdigest()


def _alf_folder(session: AlfSession) -> Path:
    """The collection holding the session's trials: ``alf/`` or its single ``task_NN`` folder."""
    alf = session.path / "alf"
    if not alf.is_dir():
        raise TrialDataError("no alf folder, so no trials datasets", source=str(session.path))
    if _trials_files(alf):
        return alf
    tasks = [d for d in sorted(alf.iterdir()) if d.is_dir() and _TASK_RE.fullmatch(d.name) and _trials_files(d)]
    if len(tasks) == 1:
        return tasks[0]
    if len(tasks) > 1:
        names = [d.name for d in tasks]
        raise TrialDataError(f"trials in several task collections {names}; choosing one is not supported", source=str(alf))
    raise TrialDataError(
        "no trials datasets (_ibl_trials.table.pqt or _ibl_trials.<attribute>.npy) in this folder", source=str(alf)
    )


def _read_session_folder(session: AlfSession) -> _RawSession:
    where = _alf_folder(session)
    files = _trials_files(where)
    table_path = files.pop(_TABLE)[1] if _TABLE in files else None
    table = _load_table(table_path) if table_path is not None else None
    arrays = {attr: _load_npy(path) for attr, (_, path) in files.items()}
    origin = {attr: path for attr, (_, path) in files.items()}
    raw, where_from = _merge(where, table, table_path, arrays, origin)
    if table is None:
        layout = AlfLayout.NPY
    else:
        layout = AlfLayout.TABLE_AND_NPY if arrays else AlfLayout.TABLE
    read = ([table_path] if table_path is not None else []) + sorted(origin.values())
    return _RawSession(
        session=session, where=where, raw=raw, origin=where_from, layout=layout, files=tuple(read), digest=_digest(raw)
    )


def _convert(rs: _RawSession) -> tuple[pd.DataFrame, IngestReport]:
    """Canonical trials of one session; errors moved to the file that holds the bad value."""
    cols = [c for c in (*ALF_REQUIRED, *ALF_OPTIONAL) if c in rs.raw.columns]
    try:
        return alf_frame_to_trials(rs.raw[cols], str(rs.where), subject=rs.session.subject, session=rs.session.label)
    except TrialDataError as exc:
        path = rs.origin.get(exc.column) if exc.column is not None else None
        if path is None:
            raise
        raise TrialDataError(exc.reason, source=str(path), row=exc.row, column=exc.column) from exc


# --------------------------------------------------------------------------------------------
# assembling many sessions


def _dedupe(loaded: list[_RawSession], policy: DuplicatePolicy) -> tuple[list[_RawSession], list[DuplicateSessions]]:
    records: list[DuplicateSessions] = []
    by_key: dict[tuple[object, ...], list[_RawSession]] = {}
    for rs in loaded:
        by_key.setdefault(rs.session.key, []).append(rs)
    kept: list[_RawSession] = []
    for group in by_key.values():
        if len(group) == 1:
            kept.append(group[0])
            continue
        identical = len({rs.digest for rs in group}) == 1
        paths = tuple(rs.session.path for rs in group)
        s0 = group[0].session
        listing = ", ".join(map(str, paths))
        if policy is DuplicatePolicy.ERROR or (policy is DuplicatePolicy.KEEP_FIRST and not identical):
            what = "identical" if identical else "different"
            hint = "" if identical else "; pass duplicates=DuplicatePolicy.KEEP_ALL to read every copy, or remove the stale one"
            raise TrialDataError(
                f"session {s0.label} of subject {s0.subject!r} found {len(group)} times with {what} trials: {listing}{hint}",
                source=str(paths[1]),
            )
        chosen = group if policy is DuplicatePolicy.KEEP_ALL else group[:1]
        kept.extend(chosen)
        records.append(
            DuplicateSessions(
                subject=s0.subject,
                paths=paths,
                kept=tuple(rs.session.path for rs in chosen),
                same_key=True,
                identical=identical,
            )
        )
    kept.sort(key=lambda rs: rs.session.sort_key())
    # identical trials under different keys (a copied folder)
    by_content: dict[tuple[str, str], list[_RawSession]] = {}
    for rs in kept:
        by_content.setdefault((rs.session.subject, rs.digest), []).append(rs)
    drop: set[int] = set()
    for group in by_content.values():
        keys = {rs.session.key for rs in group}
        if len(keys) < 2:
            continue  # copies of one key, kept on purpose above
        paths = tuple(rs.session.path for rs in group)
        if policy is DuplicatePolicy.ERROR:
            listing = ", ".join(map(str, paths))
            raise TrialDataError(
                f"{len(group)} sessions of subject {group[0].session.subject!r} hold identical trials: {listing}",
                source=str(paths[1]),
            )
        chosen = group if policy is DuplicatePolicy.KEEP_ALL else group[:1]
        drop.update(id(rs) for rs in group if not any(rs is c for c in chosen))
        records.append(
            DuplicateSessions(
                subject=group[0].session.subject,
                paths=paths,
                kept=tuple(rs.session.path for rs in chosen),
                same_key=False,
                identical=True,
            )
        )
    return [rs for rs in kept if id(rs) not in drop], records


def _assemble(
    source: str,
    sessions: tuple[AlfSession, ...],
    loaded: list[_RawSession],
    skipped: list[SkippedSession],
    duplicates: DuplicatePolicy,
    skip_invalid: bool,
) -> tuple[pd.DataFrame, AlfIngestReport]:
    kept, dup_records = _dedupe(loaded, duplicates)
    parts: list[pd.DataFrame] = []
    records: list[SessionRecord] = []
    nogo: dict[str, int] = {}
    n_rows = 0
    index: dict[str, int] = {}
    for rs in kept:
        try:
            df, rep = _convert(rs)
        except TrialDataError as exc:
            if not skip_invalid:
                raise
            skipped.append(SkippedSession(path=rs.session.path, reason=str(exc)))
            continue
        subj = rs.session.subject
        index[subj] = index.get(subj, 0) + 1
        df["session"] = index[subj]
        parts.append(df)
        n_nogo = rep.total_nogo_dropped
        nogo[subj] = nogo.get(subj, 0) + n_nogo
        n_rows += rep.n_rows
        records.append(
            SessionRecord(
                session=rs.session, layout=rs.layout, files=rs.files, n_rows=rep.n_rows, n_nogo=n_nogo, index=index[subj]
            )
        )
    if not parts:
        raise TrialDataError(f"no readable sessions ({len(skipped)} skipped: {skipped[0].reason if skipped else ''})", source=source)
    out = validate_trials(pd.concat(parts, ignore_index=True), source=source)
    report = AlfIngestReport(
        source=source,
        n_rows=n_rows,
        n_nogo_dropped=nogo,
        sessions=tuple(records),
        duplicates=tuple(dup_records),
        gaps=find_gaps(sessions),
        skipped=tuple(skipped),
    )
    return out, report


def read_alf_dir(
    root: str | Path,
    subject: str | None = None,
    *,
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    skip_invalid: bool = False,
) -> tuple[pd.DataFrame, AlfIngestReport]:
    """Read every session under ``root`` (an ALF folder tree, a ONE cache, or one session folder).

    Args:
        root: the folder (see the module doc for the layouts).
        subject: read only this subject (required for a bare session folder outside the layout).
        duplicates: what to do with duplicated sessions; they are listed in the report anyway.
        skip_invalid: list unreadable sessions in the report instead of raising.

    Returns:
        The validated canonical trials table (subjects in name order, sessions by date then
        number, numbered 1..n with ``session_label`` ``YYYY-MM-DD/NNN``) and the report.

    Raises:
        TrialDataError: naming the folder or file and the problem: no session folders, a folder
            without trials datasets, arrays of unequal length, a missing required attribute, an
            unreadable (or pickled) array, duplicates under :attr:`DuplicatePolicy.ERROR`, or a bad
            value (then also the 1-based trial and the attribute).
    """
    sessions = find_sessions(root, subject)
    loaded: list[_RawSession] = []
    skipped: list[SkippedSession] = []
    for s in sessions:
        try:
            loaded.append(_read_session_folder(s))
        except TrialDataError as exc:
            if not skip_invalid:
                raise
            skipped.append(SkippedSession(path=s.path, reason=str(exc)))
    return _assemble(str(root), sessions, loaded, skipped, duplicates, skip_invalid)


# --------------------------------------------------------------------------------------------
# ONE


def read_one_cache(
    cache_dir: str | Path,
    subject: str | None = None,
    *,
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    skip_invalid: bool = False,
) -> tuple[pd.DataFrame, AlfIngestReport]:
    """Read the trials of a ONE local cache through ONE (``one-api``, an optional extra).

    Sessions come from ``ONE(mode="local", cache_dir=...).search()`` (so from the cache tables),
    their trials from ``load_object(eid, "trials", collection="alf")`` (ONE picks the default
    revision and merges the table with the separate datasets). The same conversion, ordering,
    duplicate and gap reporting as :func:`read_alf_dir` apply. Without ``one-api``,
    :func:`read_alf_dir` reads the same cache from its folder tree.

    Args:
        cache_dir: the ONE cache (the folder holding ``sessions.pqt`` and ``<lab>/Subjects/``).
        subject: read only this subject.
        duplicates: as in :func:`read_alf_dir`.
        skip_invalid: as in :func:`read_alf_dir`.

    Returns:
        The validated canonical table and the report (layout :attr:`AlfLayout.ONE`).

    Raises:
        OptionalDependencyError: ``one-api`` is not installed.
        TrialDataError: ONE finds no session, or as :func:`read_alf_dir`.
    """
    try:
        from one.alf.exceptions import ALFError
        from one.api import ONE
    except ImportError as exc:
        raise OptionalDependencyError(
            f"reading a ONE cache through ONE needs the one-api package: pip install '{ONE_EXTRA}' "
            f"(or read the cache's folder tree without it: twin.data.alf.read_alf_dir({str(cache_dir)!r}))"
        ) from exc
    source = str(cache_dir)
    one = ONE(mode="local", cache_dir=source)
    eids = list(one.search(subject=subject) if subject is not None else one.search())
    found: list[tuple[object, AlfSession]] = []
    for eid in eids:
        path = Path(str(one.eid2path(eid)))
        sess = _session_from_path(path)
        if sess is None:
            raise TrialDataError(f"ONE session {eid} is not in a <subject>/<YYYY-MM-DD>/<NNN> folder", source=str(path))
        if subject is None or sess.subject == subject:  # ONE's subject search matches parts of names
            found.append((eid, sess))
    if not found:
        who = "" if subject is None else f" of subject {subject!r}"
        raise TrialDataError(
            f"ONE found no sessions{who} in this cache (no cache tables? read_alf_dir reads the folders directly)",
            source=source,
        )
    found.sort(key=lambda es: es[1].sort_key())
    loaded: list[_RawSession] = []
    skipped: list[SkippedSession] = []
    for eid, sess in found:
        where = sess.path / "alf"
        try:
            try:
                bunch = one.load_object(eid, "trials", collection="alf")
            except ALFError as exc:
                raise TrialDataError(f"ONE could not load the trials object: {exc}", source=str(where)) from None
            arrays: dict[str, np.ndarray] = {}
            for attr, value in dict(bunch).items():
                arr = np.asarray(value)
                if arr.dtype == object:
                    raise TrialDataError(f"trials attribute {attr!r} holds Python objects", source=str(where), column=attr)
                if arr.ndim >= 1:
                    arrays[str(attr)] = arr
            if not arrays:
                raise TrialDataError("no trials datasets", source=str(where))
            origin = dict.fromkeys(arrays, where)
            raw, where_from = _merge(where, None, None, arrays, origin)
            loaded.append(
                _RawSession(
                    session=sess,
                    where=where,
                    raw=raw,
                    origin=where_from,
                    layout=AlfLayout.ONE,
                    files=(sess.path,),
                    digest=_digest(raw),
                )
            )
        except TrialDataError as exc:
            if not skip_invalid:
                raise
            skipped.append(SkippedSession(path=sess.path, reason=str(exc)))
    return _assemble(source, tuple(s for _, s in found), loaded, skipped, duplicates, skip_invalid)
