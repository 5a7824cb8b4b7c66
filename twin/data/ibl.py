"""Readers for IBL mouse behaviour: ALF trials tables and the 53-mouse export.

Both readers return the canonical trials table of :mod:`twin.data.trials` plus an
:class:`~twin.data.trials.IngestReport`, and both locate every problem they reject: a
:class:`~twin.errors.TrialDataError` names the file, the 1-based data row of that file (header
not counted) and the file's own column (``contrastLeft``, ``response_choice``...), not the
canonical column it was mapped to.

Sign conventions (the part that is easy to get backwards):

* IBL ALF ``choice``: ``-1`` = right response (the wheel turned so that the stimulus on the
  right moves to the centre), ``+1`` = left response, ``0`` = no-go (timeout).
  Canonical ``choice`` is ``1`` = right, so ALF ``-1 -> 1`` and ``+1 -> 0``.
* The 53-mouse export's ``response_choice`` has the opposite sign: ``+1`` = right,
  ``-1`` = left, ``0`` = no-go.

No-go trials are dropped (the canonical table has no no-go code) and counted per subject in the
report, never silently. A session left with no trials is an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError
from twin.data.trials import REQUIRED_COLUMNS, IngestReport, check_nonempty_sessions, validate_trials

#: raw ALF columns a trials table must have.
ALF_REQUIRED: tuple[str, ...] = ("contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft")
#: columns accepted as the session key of an ALF table, first match wins.
ALF_SESSION_KEYS: tuple[str, ...] = ("session", "eid", "session_id", "session_start_time", "date")
#: columns that order sessions in time, first match wins.
ALF_DATE_COLUMNS: tuple[str, ...] = ("session_start_time", "date")
#: raw trial-number columns used to detect duplicated or unordered trials.
ALF_TRIAL_COLUMNS: tuple[str, ...] = ("trial", "trial_num")

#: file name of the 53-mouse export under ``<shared data>/ibl``.
EXPORT_FILENAME = "ibl_may2020_53mice_trained.csv.gz"
#: columns the export must have (``reaction_time`` is kept when present).
EXPORT_REQUIRED: tuple[str, ...] = (
    "subject",
    "phase",
    "trial_num",
    "session_num",
    "stim_probability_left",
    "contrast",
    "position",
    "response_choice",
    "trial_correct",
)
#: phases of the export, in training order.
EXPORT_PHASES: tuple[str, ...] = ("endtrain", "biased")

#: above this fraction of inconsistent trials the choice sign is taken to be flipped.
FLIPPED_FRACTION = 0.5

_PARQUET_SUFFIXES = (".pqt", ".parquet")
_STRING_COLUMNS = ("subject", "phase", "session_label", *ALF_SESSION_KEYS)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_RE = re.compile(r"\d{1,3}")


# --------------------------------------------------------------------------------------------
# locating the shared data


def shared_data_dir() -> Path:
    """Find the shared ``data`` folder.

    Looks at the environment variable ``TWIN_SHARED_DATA`` first, then at
    ``<repo>/../shared/data`` (the repository being the folder that holds the ``twin`` package).

    Returns:
        The first candidate folder that exists.

    Raises:
        FileNotFoundError: when no candidate exists; the message lists those tried.
    """
    candidates: list[Path] = []
    env = os.environ.get("TWIN_SHARED_DATA")
    if env:
        candidates.append(Path(env).expanduser())
    repo = Path(__file__).resolve().parent.parent
    candidates.append(repo.parent / "shared" / "data")
    for cand in candidates:
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no shared data folder; tried {[str(c) for c in candidates]} (set TWIN_SHARED_DATA)")


def default_export_path() -> Path:
    """Path of the 53-mouse IBL export in the shared data folder.

    Raises:
        FileNotFoundError: when the shared data folder cannot be found.
    """
    return shared_data_dir() / "ibl" / EXPORT_FILENAME


# --------------------------------------------------------------------------------------------
# small helpers


def _read_table(path: Path, source: str) -> pd.DataFrame:
    """Read a parquet (``.pqt``/``.parquet``) or CSV (optionally compressed) table.

    Key columns (subject, phase, session keys) are read as strings, so ``"001"`` stays ``"001"``.
    """
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file")
    try:
        if path.suffix.lower() in _PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        dtype = dict.fromkeys(_STRING_COLUMNS, str)
        try:
            return pd.read_csv(path, engine="pyarrow", dtype=dtype)
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            return pd.read_csv(path, dtype=dtype)
    except (ValueError, OSError) as exc:  # pandas/pyarrow parse errors are ValueErrors
        if isinstance(exc, FileNotFoundError):
            raise
        raise TrialDataError(f"cannot read the table: {exc}", source=source) from exc


def _missing_columns_error(missing: list[str], present: list[str], source: str) -> TrialDataError:
    return TrialDataError(
        f"missing required column(s) {missing}; present: {present}", source=source, column=missing[0]
    )


def _raise_first(
    mask: np.ndarray, rows: np.ndarray, source: str, column: str, reason: str, values: np.ndarray | None = None
) -> None:
    """Raise at the earliest source row where ``mask`` holds (no-op when it holds nowhere).

    Args:
        mask: ``[n]`` bool, the offending entries.
        rows: ``[n]`` 1-based source rows.
        source: file name.
        column: raw column at fault.
        reason: message; ``{v}`` in it is replaced by the repr of ``values`` at the cited row.
        values: ``[n]`` values to quote.
    """
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return
    i = int(idx[np.argmin(rows[idx])])
    if values is not None:
        v = values[i]
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # codes read as floats: quote 2, not 2.0
        reason = reason.replace("{v}", repr(v))
    more = f" ({idx.size - 1} more row(s) like it)" if idx.size > 1 else ""
    raise TrialDataError(reason + more, source=source, row=int(rows[i]), column=column)


def _numeric(raw: pd.DataFrame, column: str, rows: np.ndarray, source: str) -> np.ndarray:
    """Column as float, NaN where empty; a value that is present but not a number is an error."""
    s = raw[column]
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = np.isnan(vals) & s.notna().to_numpy()
    if bad.any():
        _raise_first(bad, rows, source, column, "not a number: {v}", s.to_numpy(dtype=object))
    return vals


def _keys(raw: pd.DataFrame, column: str, rows: np.ndarray, source: str) -> np.ndarray:
    """Key column (subject, session) as an object array of strings; empty values are errors."""
    s = raw[column]
    text = s.astype(str)
    missing = s.isna().to_numpy() | (text.str.strip() == "").to_numpy()
    _raise_first(missing, rows, source, column, "missing value")
    return text.to_numpy(dtype=object)


def _positive_int(vals: np.ndarray, rows: np.ndarray, source: str, column: str) -> np.ndarray:
    bad = ~np.isfinite(vals) | (vals < 1) | (vals != np.round(vals))
    _raise_first(bad, rows, source, column, "must be a positive integer, got {v}", vals)
    return vals.astype(np.int64)


def _check_raw_trials(new_sess: np.ndarray, trial: np.ndarray, rows: np.ndarray, source: str, column: str) -> None:
    """Within each session (rows already grouped, file order kept) trial numbers must increase."""
    dup = np.zeros(len(trial), bool)
    uno = np.zeros(len(trial), bool)
    same = ~new_sess[1:]
    dup[1:] = same & (trial[1:] == trial[:-1])
    uno[1:] = same & (trial[1:] < trial[:-1])
    bad = dup | uno
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return
    i = int(idx[np.argmin(rows[idx])])
    more = f" ({idx.size - 1} more row(s) like it)" if idx.size > 1 else ""
    if dup[i]:
        reason = f"duplicated trial number {int(trial[i])} within a session"
    else:
        reason = f"trials out of order within a session: trial {int(trial[i])} after trial {int(trial[i - 1])}"
    raise TrialDataError(reason + more, source=source, row=int(rows[i]), column=column)


def _check_sign_convention(
    choice: np.ndarray,
    side: np.ndarray,
    feedback: np.ndarray,
    informative: np.ndarray,
    rows: np.ndarray,
    source: str,
    column: str,
    convention: str,
) -> None:
    """Raise when feedback contradicts choice and stimulus side on most informative trials.

    Args:
        choice: canonical choice (1 right, 0 left).
        side: rewarded side (1 right, 0 left).
        feedback: +1/-1 (other values are ignored here).
        informative: trials whose side comes from the stimulus (not from the feedback) and
            that are not no-go.
        rows: 1-based source rows.
        source: file name.
        column: the raw choice column.
        convention: the convention assumed, quoted in the message.
    """
    mask = informative & np.isin(feedback, (-1, 1))
    n = int(mask.sum())
    if n == 0:
        return
    wrong = mask & ((choice == side) != (feedback == 1))
    k = int(wrong.sum())
    if k > FLIPPED_FRACTION * n:
        idx = np.flatnonzero(wrong)
        i = int(idx[np.argmin(rows[idx])])
        raise TrialDataError(
            f"feedback contradicts choice and stimulus side on {k} of {n} trials ({k / n:.0%}); "
            f"the choice sign convention looks flipped (expected {convention})",
            source=source,
            row=int(rows[i]),
            column=column,
        )


def _finish(
    *,
    source: str,
    n_rows: int,
    subj: np.ndarray,
    subj_code: np.ndarray,
    new_sess: np.ndarray,
    rows: np.ndarray,
    go: np.ndarray,
    columns: Mapping[str, np.ndarray],
    colmap: Mapping[str, str],
    session_column: str,
    labels: np.ndarray | None = None,
    run_labels: np.ndarray | None = None,
) -> tuple[pd.DataFrame, IngestReport]:
    """Number sessions and trials, drop no-go trials, build and validate the canonical table.

    All arrays are in final order (subjects contiguous, sessions contiguous and in training order,
    trials in file order). Session labels come per row (``labels``) or per session (``run_labels``).
    """
    n = len(rows)
    run_id = np.cumsum(new_sess) - 1
    starts = np.flatnonzero(new_sess)
    if run_labels is None:
        assert labels is not None
        run_labels = labels[starts]
    run_subj = subj[starts]

    # empty sessions and no-go counts, before anything is dropped
    go_per_run = np.bincount(run_id, weights=go.astype(float), minlength=len(starts)).astype(np.int64)
    keys = list(zip(run_subj.tolist(), run_labels.tolist()))
    check_nonempty_sessions(
        dict(zip(keys, go_per_run.tolist())),
        source,
        rows=dict(zip(keys, rows[starts].tolist())),
        column=session_column,
    )
    subj_first = np.flatnonzero(np.r_[True, subj_code[1:] != subj_code[:-1]])
    nogo_per_subj = np.add.reduceat((~go).astype(np.int64), subj_first) if n else np.zeros(0, np.int64)
    n_nogo = {str(subj[s]): int(c) for s, c in zip(subj_first, nogo_per_subj)}

    # session index 1..n per subject
    subj_run = np.cumsum(np.r_[True, subj_code[1:] != subj_code[:-1]]) - 1
    session = run_id - run_id[subj_first][subj_run] + 1

    keep = np.flatnonzero(go)
    run_k = run_id[keep]
    new_k = np.r_[True, run_k[1:] != run_k[:-1]]
    starts_k = np.flatnonzero(new_k)
    trial = np.arange(len(keep)) - starts_k[np.cumsum(new_k) - 1] + 1

    df = pd.DataFrame(
        {
            "subject": subj[keep],
            "session": session[keep],
            "trial": trial,
            **{c: np.asarray(columns[c])[keep] for c in REQUIRED_COLUMNS[3:]},
            "session_label": run_labels[run_k],
        }
    )
    if "reaction_time" in columns:
        df["reaction_time"] = np.asarray(columns["reaction_time"], dtype=float)[keep]
    out_rows = rows[keep]
    try:
        out = validate_trials(df, source=source, rows=out_rows)
    except TrialDataError as exc:
        raw_col = colmap.get(exc.column, exc.column) if exc.column is not None else None
        if raw_col == exc.column:
            raise
        raise TrialDataError(exc.reason, source=exc.source, row=exc.row, column=raw_col) from exc
    return out, IngestReport(source=source, n_rows=n_rows, n_nogo_dropped=n_nogo)


def _alf_path_keys(path: Path) -> tuple[str | None, str | None]:
    """Subject and session from an ALF path ``.../<subject>/<YYYY-MM-DD>/<NNN>/[alf/]<file>``."""
    parts = path.parts
    for i in range(len(parts) - 2, 0, -1):
        if _DATE_RE.fullmatch(parts[i]) and i + 1 < len(parts) - 1 and _NUMBER_RE.fullmatch(parts[i + 1]):
            return parts[i - 1], f"{parts[i]}/{parts[i + 1]}"
    return None, None


def _session_dates(raw: pd.DataFrame, column: str, rows: np.ndarray, source: str) -> np.ndarray:
    """Date/time column as float nanoseconds since the epoch (UTC); unparseable or empty values are errors.

    Each distinct value is parsed on its own (``format="mixed"``), so ``2020-01-15`` and
    ``2020-01-15T10:22:33`` can share a column.
    """
    s = raw[column]
    codes, uniques = pd.factorize(s.astype(object), use_na_sentinel=True)
    try:
        parsed = pd.to_datetime(pd.Series(uniques, dtype=object), errors="coerce", utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise TrialDataError(f"cannot read dates: {exc}", source=source, column=column) from exc
    ns = np.append(parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(float), np.nan)
    ns[:-1][parsed.isna().to_numpy()] = np.nan
    out = ns[codes]  # code -1 (missing) picks the trailing NaN
    _raise_first(np.isnan(out), rows, source, column, "not a date/time: {v}", s.to_numpy(dtype=object))
    return out


# --------------------------------------------------------------------------------------------
# ALF trials tables


def read_alf_trials(
    path: str | Path, subject: str | None = None, session: str | None = None
) -> tuple[pd.DataFrame, IngestReport]:
    """Read an IBL ALF trials table (parquet or CSV) into the canonical trials table.

    The table is either one session (subject and session then come from columns when present,
    else from ``subject``/``session``, else from an ALF path
    ``<subject>/<YYYY-MM-DD>/<NNN>/alf/<file>``) or an aggregated subject or cohort table with
    a ``subject`` column and a session key column (the first of ``session``, ``eid``,
    ``session_id``, ``session_start_time``, ``date``). When the table has such a column and
    the matching argument is given too, only the rows with that key are read.

    Sessions are numbered 1..n per subject in time order when a ``session_start_time`` or
    ``date`` column exists (ties and sessions without one: order of first appearance), else in
    order of first appearance; the original key is kept in ``session_label``. Trials are numbered
    1..n within a session in file order, after no-go trials are dropped; a raw ``trial`` or
    ``trial_num`` column, when present, is only used to reject duplicated or unordered trials.

    Mapping: ALF ``choice`` -1 (right response) -> 1, +1 (left) -> 0, 0 (no-go) -> dropped and
    counted; ``correct_side`` from the side whose contrast is not NaN (this holds at zero contrast
    too); when both contrasts are NaN, or both are zero, the rewarded side is taken from feedback
    and choice; NaN contrast -> 0; ``probabilityLeft`` -> ``prob_left``; ``reaction_time`` is kept,
    or computed as ``firstMovement_times - stimOn_times`` when both are present.

    Args:
        path: ``.pqt``/``.parquet`` or CSV (``.csv``, ``.csv.gz``...) file.
        subject: subject name when the table has no ``subject`` column, else a subject to select.
        session: session key when the table has no session key column, else a session to select.

    Returns:
        The validated canonical table and an ingest report (no-go trials dropped per subject).

    Raises:
        FileNotFoundError: the file does not exist.
        TrialDataError: naming the file, the 1-based data row and the raw column of the first
            problem: missing columns, an unknown choice code (checked before anything is dropped),
            duplicated or unordered trials, a session with only no-go trials, a flipped choice
            sign convention (feedback inconsistent with choice and stimulus on more than half the
            trials), or anything :func:`twin.data.trials.validate_trials` rejects.
    """
    path = Path(path)
    source = str(path)
    raw = _read_table(path, source)
    path_subject, path_session = _alf_path_keys(path)
    if "subject" not in raw.columns and subject is None:
        subject = path_subject
    if not any(c in raw.columns for c in ALF_SESSION_KEYS) and session is None:
        session = path_session
    return alf_frame_to_trials(raw, source, subject=subject, session=session)


def alf_frame_to_trials(
    raw: pd.DataFrame, source: str, subject: str | None = None, session: str | None = None
) -> tuple[pd.DataFrame, IngestReport]:
    """Convert an ALF trials table already in memory; the conversion of :func:`read_alf_trials`.

    Args:
        raw: the raw ALF table (columns ``contrastLeft``, ``choice``...), one row per trial.
        source: name used in errors (file or folder); rows are cited 1-based in ``raw``'s order.
        subject: as in :func:`read_alf_trials` (no path fallback here).
        session: as in :func:`read_alf_trials` (no path fallback here).

    Returns:
        The validated canonical table and an ingest report.

    Raises:
        TrialDataError: as :func:`read_alf_trials`.
    """
    rows = np.arange(1, len(raw) + 1)

    key_col = next((c for c in ALF_SESSION_KEYS if c in raw.columns), None)
    missing = [c for c in ALF_REQUIRED if c not in raw.columns]
    if "subject" not in raw.columns and subject is None:
        missing.append("subject")
    if key_col is None and session is None:
        missing.append("session (or " + ", ".join(ALF_SESSION_KEYS[1:]) + ")")
    if missing:
        raise _missing_columns_error(missing, list(map(str, raw.columns)), source)

    # keys, and selection of one subject/session when asked for one that has a column
    if "subject" in raw.columns:
        subj = _keys(raw, "subject", rows, source)
        if subject is not None:
            sel = subj == str(subject)
            if not sel.any():
                raise TrialDataError(f"no rows for subject {subject!r}", source=source, column="subject")
            raw, rows, subj = raw[sel], rows[sel], subj[sel]
    else:
        subj = np.full(len(raw), str(subject), dtype=object)
    if key_col is not None:
        labels = _keys(raw, key_col, rows, source)
        if session is not None:
            sel = labels == str(session)
            if not sel.any():
                raise TrialDataError(f"no rows for session {session!r}", source=source, column=key_col)
            raw, rows, subj, labels = raw[sel], rows[sel], subj[sel], labels[sel]
    else:
        labels = np.full(len(raw), str(session), dtype=object)
    if len(raw) == 0:
        raise TrialDataError("no trials", source=source)
    session_column = key_col or "session"

    # choice codes first, before anything is dropped
    choice_raw = _numeric(raw, "choice", rows, source)
    bad = ~np.isin(choice_raw, (-1, 0, 1))
    reason = "unknown choice code {v}; expected -1 (right), +1 (left) or 0 (no-go)"
    _raise_first(bad, rows, source, "choice", reason, choice_raw)
    cl = _numeric(raw, "contrastLeft", rows, source)
    cr = _numeric(raw, "contrastRight", rows, source)
    fb = _numeric(raw, "feedbackType", rows, source)
    pl = _numeric(raw, "probabilityLeft", rows, source)
    trial_col = next((c for c in ALF_TRIAL_COLUMNS if c in raw.columns), None)
    raw_trial = _numeric(raw, trial_col, rows, source) if trial_col else None
    columns: dict[str, np.ndarray] = {}
    if "reaction_time" in raw.columns:
        columns["reaction_time"] = _numeric(raw, "reaction_time", rows, source)
    elif "firstMovement_times" in raw.columns and "stimOn_times" in raw.columns:
        columns["reaction_time"] = _numeric(raw, "firstMovement_times", rows, source) - _numeric(
            raw, "stimOn_times", rows, source
        )

    # order: subjects by first appearance, sessions by date (if any) then first appearance,
    # trials in file order
    subj_code = pd.factorize(subj)[0]
    sess_code = pd.DataFrame({"s": subj, "k": labels}).groupby(["s", "k"], sort=False).ngroup().to_numpy()
    date_col = next((c for c in ALF_DATE_COLUMNS if c in raw.columns), None)
    if date_col is not None:
        dates = _session_dates(raw, date_col, rows, source)
        sess_date = pd.Series(dates).groupby(sess_code).transform("min").to_numpy()
        order = np.lexsort((rows, sess_code, sess_date, subj_code))
    else:
        order = np.lexsort((rows, sess_code, subj_code))
    subj, labels, rows, subj_code, sess_code = (a[order] for a in (subj, labels, rows, subj_code, sess_code))
    choice_raw, cl, cr, fb, pl = (a[order] for a in (choice_raw, cl, cr, fb, pl))
    columns = {k: v[order] for k, v in columns.items()}
    new_sess = np.r_[True, sess_code[1:] != sess_code[:-1]]

    if raw_trial is not None:
        raw_trial = _positive_int(raw_trial[order], rows, source, trial_col)
        _check_raw_trials(new_sess, raw_trial, rows, source, trial_col)

    # rewarded side: from the contrast that is present; else from feedback and choice
    has_l, has_r = ~np.isnan(cl), ~np.isnan(cr)
    side = np.full(len(rows), -1, dtype=np.int64)
    side[has_r & ~has_l] = 1
    side[has_l & ~has_r] = 0
    both = has_l & has_r
    side[both & (cr > 0) & (cl == 0)] = 1
    side[both & (cl > 0) & (cr == 0)] = 0
    from_stimulus = side >= 0
    go = choice_raw != 0
    choice = (choice_raw == -1).astype(np.int64)
    side = np.where(from_stimulus, side, np.where(fb == 1, choice, 1 - choice))
    _check_sign_convention(
        choice, side, fb, from_stimulus & go, rows, source, "choice", "ALF choice -1 = right response, +1 = left"
    )

    columns.update(
        contrast_left=np.where(has_l, cl, 0.0),
        contrast_right=np.where(has_r, cr, 0.0),
        choice=choice,
        feedback=fb,
        correct_side=side,
        prob_left=pl,
    )
    colmap = {
        "subject": "subject",
        "session": session_column,
        "trial": trial_col or "trial",
        "contrast_left": "contrastLeft",
        "contrast_right": "contrastRight",
        "choice": "choice",
        "feedback": "feedbackType",
        "prob_left": "probabilityLeft",
    }
    return _finish(
        source=source,
        n_rows=len(rows),
        subj=subj,
        subj_code=subj_code,
        new_sess=new_sess,
        rows=rows,
        go=go,
        columns=columns,
        colmap=colmap,
        session_column=session_column,
        labels=labels,
    )


# --------------------------------------------------------------------------------------------
# the 53-mouse export


def read_ibl_export(path: str | Path | None = None) -> tuple[pd.DataFrame, IngestReport]:
    """Read the 53-mouse IBL export (``ibl_may2020_53mice_trained.csv.gz``) as canonical trials.

    Columns of the export (see the shared data README): ``subject``, ``phase``
    (``endtrain``/``biased``), ``trial_num``, ``session_num``, ``stim_probability_left``,
    ``contrast`` (unsigned), ``position`` (-35 left, +35 right, 0 = side lost on a zero-contrast
    trial), ``response_choice`` (-1 left, +1 right, 0 no-go), ``trial_correct`` (1/0) and
    ``reaction_time``.

    Sessions are ordered per subject ``endtrain`` first, then ``biased``, each by ``session_num``,
    numbered 1..n, and labelled ``"<phase>-<session_num>"``. Trials keep file order within a
    session and are numbered 1..n after no-go trials are dropped (``trial_num`` must increase
    within a session). ``contrast`` goes to the side of ``position``; ``correct_side`` is the sign
    of ``position`` and, where that is 0, the rewarded side implied by ``trial_correct`` and the
    choice; ``feedback`` is +1 when ``trial_correct`` else -1.

    Args:
        path: the export (CSV, optionally gzip-compressed); defaults to the shared copy
            (:func:`default_export_path`).

    Returns:
        The validated canonical table and an ingest report (no-go trials dropped per subject).

    Raises:
        FileNotFoundError: the file, or the shared data folder, does not exist.
        TrialDataError: naming the file, the 1-based data row and the export's column of the
            first problem.
    """
    path = default_export_path() if path is None else Path(path)
    source = str(path)
    raw = _read_table(path, source)
    missing = [c for c in EXPORT_REQUIRED if c not in raw.columns]
    if missing:
        raise _missing_columns_error(missing, list(map(str, raw.columns)), source)
    if len(raw) == 0:
        raise TrialDataError("no trials", source=source)
    rows = np.arange(1, len(raw) + 1)

    subj = _keys(raw, "subject", rows, source)
    phase = raw["phase"].to_numpy(dtype=object)
    phase_code = np.full(len(raw), -1, dtype=np.int64)
    for k, name in enumerate(EXPORT_PHASES):
        phase_code[phase == name] = k
    reason = f"unknown phase {{v}}; expected one of {list(EXPORT_PHASES)}"
    _raise_first(phase_code < 0, rows, source, "phase", reason, phase)
    sess_num = _positive_int(_numeric(raw, "session_num", rows, source), rows, source, "session_num")
    trial_num = _positive_int(_numeric(raw, "trial_num", rows, source), rows, source, "trial_num")
    response = _numeric(raw, "response_choice", rows, source)
    bad = ~np.isin(response, (-1, 0, 1))
    reason = "unknown choice code {v}; expected -1 (left), +1 (right) or 0 (no-go)"
    _raise_first(bad, rows, source, "response_choice", reason, response)
    correct = _numeric(raw, "trial_correct", rows, source)
    _raise_first(~np.isin(correct, (0, 1)), rows, source, "trial_correct", "unknown code {v}; expected 1 or 0", correct)
    contrast = _numeric(raw, "contrast", rows, source)
    position = _numeric(raw, "position", rows, source)
    _raise_first(np.isnan(position), rows, source, "position", "missing stimulus position")
    reason = "position 0 (side unknown) on a trial with contrast > 0"
    _raise_first((position == 0) & (contrast > 0), rows, source, "position", reason)
    prob_left = _numeric(raw, "stim_probability_left", rows, source)
    columns: dict[str, np.ndarray] = {}
    if "reaction_time" in raw.columns:
        columns["reaction_time"] = _numeric(raw, "reaction_time", rows, source)

    subj_code = pd.factorize(subj)[0]
    order = np.lexsort((rows, sess_num, phase_code, subj_code))
    subj, subj_code, phase_code, sess_num, trial_num = (
        a[order] for a in (subj, subj_code, phase_code, sess_num, trial_num)
    )
    rows, response, correct, contrast, position, prob_left = (
        a[order] for a in (rows, response, correct, contrast, position, prob_left)
    )
    columns = {k: v[order] for k, v in columns.items()}
    new_sess = np.r_[
        True,
        (subj_code[1:] != subj_code[:-1]) | (phase_code[1:] != phase_code[:-1]) | (sess_num[1:] != sess_num[:-1]),
    ]
    _check_raw_trials(new_sess, trial_num, rows, source, "trial_num")

    go = response != 0
    choice = (response == 1).astype(np.int64)
    feedback = np.where(correct == 1, 1, -1)
    side = np.where(position > 0, 1, np.where(position < 0, 0, np.where(correct == 1, choice, 1 - choice)))
    convention = "response_choice +1 = right response, -1 = left"
    _check_sign_convention(choice, side, feedback, (position != 0) & go, rows, source, "response_choice", convention)
    starts = np.flatnonzero(new_sess)
    run_labels = np.array(
        [f"{EXPORT_PHASES[p]}-{s}" for p, s in zip(phase_code[starts].tolist(), sess_num[starts].tolist())],
        dtype=object,
    )
    columns.update(
        contrast_left=np.where(position < 0, contrast, 0.0),
        contrast_right=np.where(position > 0, contrast, 0.0),
        choice=choice,
        feedback=feedback,
        correct_side=side,
        prob_left=prob_left,
    )
    colmap = {
        "subject": "subject",
        "session": "session_num",
        "trial": "trial_num",
        "contrast_left": "contrast",
        "contrast_right": "contrast",
        "choice": "response_choice",
        "feedback": "trial_correct",
        "correct_side": "position",
        "prob_left": "stim_probability_left",
    }
    return _finish(
        source=source,
        n_rows=len(rows),
        subj=subj,
        subj_code=subj_code,
        new_sess=new_sess,
        rows=rows,
        go=go,
        columns=columns,
        colmap=colmap,
        session_column="session_num",
        run_labels=run_labels,
    )
