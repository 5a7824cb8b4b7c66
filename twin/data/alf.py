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

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import OptionalDependencyError, TrialDataError
from twin.data.alf_datasets import (
    RawSession,
    choose_collection,
    convert_session,
    is_trials_collection,
    merge_datasets,
    read_session_folder,
    trials_digest,
)
from twin.data.alf_sessions import (
    DATE_RE,
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


def _in_dates(session: AlfSession, date_range: tuple[str, str] | None) -> bool:
    if date_range is None:
        return True
    return session.date is not None and date_range[0] <= session.date <= date_range[1]


def _check_dates(date_range: tuple[str, str] | None, source: str) -> None:
    if date_range is None:
        return
    bad = [d for d in date_range if not DATE_RE.fullmatch(d)]
    if bad or date_range[0] > date_range[1]:
        raise TrialDataError(f"date range {list(date_range)} is not two YYYY-MM-DD dates, first <= last", source=source)


def read_alf_dir(
    root: str | Path,
    subject: str | None = None,
    *,
    date_range: tuple[str, str] | None = None,
    collection: str | None = None,
    revision: str | None = None,
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    skip_invalid: bool = False,
) -> tuple[pd.DataFrame, AlfIngestReport]:
    """Read every session under ``root`` (an ALF folder tree, a ONE cache, or one session folder).

    Args:
        root: the folder (see :mod:`twin.data.alf_sessions` for the layouts).
        subject: read only this subject (required for a bare session folder outside the layout).
        date_range: read only sessions dated from the first to the last ``YYYY-MM-DD``, inclusive.
        collection: the trials collection (``alf``, ``alf/task_00``); default ``alf`` when it
            holds trials, else the session's single ``alf/task_NN``.
        revision: read this revision (``YYYY-MM-DD``, or the latest before it), not the newest.
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
    _check_dates(date_range, str(root))
    sessions = tuple(s for s in find_sessions(root, subject) if _in_dates(s, date_range))
    if not sessions:
        raise TrialDataError(f"no sessions dated {date_range[0]}..{date_range[1]}" if date_range else "no sessions", source=str(root))
    loaded: list[RawSession] = []
    skipped: list[SkippedSession] = []
    for s in sessions:
        try:
            loaded.append(read_session_folder(s, collection, revision))
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
    date_range: tuple[str, str] | None = None,
    collection: str | None = None,
    revision: str | None = None,
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    skip_invalid: bool = False,
) -> tuple[pd.DataFrame, AlfIngestReport]:
    """Read the trials of a ONE local cache through ONE (``one-api``, an optional extra).

    Sessions come from ``ONE(mode="local", cache_dir=...).search()`` (so from the cache tables),
    their trials from ``load_object(eid, "trials", collection=..., revision=...)``: the collection
    is ``alf`` when it holds trials, else the session's single task collection ``alf/task_NN``
    (what current iblrig writes), unless one is named; ONE picks the default (else newest)
    revision unless one is named, and merges the table with the separate datasets. The same conversion, ordering,
    duplicate and gap reporting as :func:`read_alf_dir` apply. Without ``one-api``,
    :func:`read_alf_dir` reads the same cache from its folder tree.

    Args:
        cache_dir: the ONE cache (the folder holding ``sessions.pqt`` and ``<lab>/Subjects/``).
        subject: read only this subject.
        date_range: read only sessions dated from the first to the last ``YYYY-MM-DD``, inclusive.
        collection: the trials collection (``alf``, ``alf/task_00``), as in :func:`read_alf_dir`.
        revision: the dataset revision to load (ONE's ``revision=``: that or the latest before it).
        duplicates: as in :func:`read_alf_dir`.
        skip_invalid: as in :func:`read_alf_dir`.

    Returns:
        The validated canonical table and the report (layout :attr:`AlfLayout.ONE`).

    Raises:
        OptionalDependencyError: ``one-api`` is not installed.
        TrialDataError: ONE finds no session, or as :func:`read_alf_dir`.
    """
    try:
        from one.alf.exceptions import ALFError, ALFWarning
        from one.api import ONE
    except ImportError as exc:
        raise OptionalDependencyError(
            f"reading a ONE cache through ONE needs the one-api package: pip install '{ONE_EXTRA}' "
            f"(or read the cache's folder tree without it: twin.data.alf.read_alf_dir({str(cache_dir)!r}))"
        ) from exc
    _check_dates(date_range, str(cache_dir))
    source = str(cache_dir)
    if not Path(source, "sessions.pqt").is_file():
        raise TrialDataError(
            "not a ONE cache (no sessions.pqt; one.alf.cache.make_parquet_db builds the tables, or read the folder "
            "tree without ONE)",
            source=source,
        )
    one = ONE(mode="local", cache_dir=source)
    query: dict[str, object] = {} if subject is None else {"subject": subject}
    if date_range is not None:
        query["date_range"] = list(date_range)
    eids = list(one.search(**query))
    found: list[tuple[object, AlfSession]] = []
    for eid in eids:
        path = Path(str(one.eid2path(eid)))
        sess = session_from_path(path)
        if sess is None:
            raise TrialDataError(f"ONE session {eid} is not in a <subject>/<YYYY-MM-DD>/<NNN> folder", source=str(path))
        if (subject is None or sess.subject == subject) and _in_dates(sess, date_range):  # ONE's search matches parts of names
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
            with_trials = sorted(c for c in one.list_collections(eid, filename="*trials.*") if is_trials_collection(c))
            chosen = choose_collection(with_trials, collection, str(where))
            where = sess.path / chosen
            try:
                with warnings.catch_warnings():  # "no default revision ... using most recent": what is meant
                    warnings.simplefilter("ignore", ALFWarning)
                    bunch = one.load_object(eid, "trials", collection=chosen, revision=revision)
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
