"""Read IBL trials from a tree of ALF session folders (a lab's data folder or a ONE local cache).

Finding the session folders is :mod:`twin.data.alf_sessions`, reading one session's trials
datasets :mod:`twin.data.alf_datasets`; this module reads every session found and assembles them.

Sessions are ordered per subject by date, then session number, and numbered 1..n; the label
``<YYYY-MM-DD>/<NNN>`` is kept in ``session_label``. Subjects come in name order. Duplicated
sessions (the same subject, date and number found twice, e.g. under two labs or through a
symbolic link; or identical trials in two folders, e.g. a copied folder) and gaps (session
numbers missing within a day) are listed in the :class:`~twin.data.alf_sessions.AlfIngestReport`,
never merged silently; what is done with duplicates is the caller's choice
(:class:`~twin.data.alf_sessions.DuplicatePolicy`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError, TwinError
from twin.data.alf_datasets import RawSession, convert_session, merge_datasets, read_session_folder, trials_digest
from twin.data.alf_sessions import (
    AlfIngestReport,
    AlfLayout,
    AlfSession,
    DuplicatePolicy,
    DuplicateSessions,
    SessionRecord,
    SkippedSession,
    find_gaps,
    find_sessions,
    session_from_path,
)
from twin.data.trials import validate_trials

#: name of the extra to install for :func:`read_one_cache`.
ONE_EXTRA = "learning-twins[one]"


class OptionalDependencyError(TwinError, ImportError):
    """An optional package that a feature needs is not installed."""


# --------------------------------------------------------------------------------------------
# assembling many sessions


def _dedupe(loaded: list[RawSession], policy: DuplicatePolicy) -> tuple[list[RawSession], list[DuplicateSessions]]:
    records: list[DuplicateSessions] = []
    by_key: dict[tuple[object, ...], list[RawSession]] = {}
    for rs in loaded:
        by_key.setdefault(rs.session.key, []).append(rs)
    kept: list[RawSession] = []
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
    by_content: dict[tuple[str, str], list[RawSession]] = {}
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
    loaded: list[RawSession],
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
            df, rep = convert_session(rs)
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
        root: the folder (see :mod:`twin.data.alf_sessions` for the layouts).
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
    loaded: list[RawSession] = []
    skipped: list[SkippedSession] = []
    for s in sessions:
        try:
            loaded.append(read_session_folder(s))
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
        sess = session_from_path(path)
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
    loaded: list[RawSession] = []
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
            raw, where_from = merge_datasets(where, None, None, arrays, origin)
            loaded.append(
                RawSession(
                    session=sess,
                    where=where,
                    raw=raw,
                    origin=where_from,
                    layout=AlfLayout.ONE,
                    files=(sess.path,),
                    digest=trials_digest(raw),
                )
            )
        except TrialDataError as exc:
            if not skip_invalid:
                raise
            skipped.append(SkippedSession(path=sess.path, reason=str(exc)))
    return _assemble(source, tuple(s for _, s in found), loaded, skipped, duplicates, skip_invalid)
