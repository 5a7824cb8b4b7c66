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
report, never silently. A session left with no trials is an error. The checks and the final
normalise/validate step are those every reader shares (:mod:`twin.data.convert`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError
from twin.data.alf_sessions import DATE_RE, SESSION_NUMBER_RE
from twin.data.convert import (
    check_sign_convention,
    check_trial_order,
    finish_trials,
    key_column,
    missing_columns_error,
    numeric_column,
    positive_int,
    raise_first,
    read_table,
)
from twin.data.paths import shared_data_dir
from twin.data.trials import IngestReport

#: raw ALF columns a trials table must have.
ALF_REQUIRED: tuple[str, ...] = ("contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft")
#: columns accepted as the session key of an ALF table, first match wins (a ``date`` with a
#: session number column makes the key ``<date>/<NNN>``, as labs and ONE name sessions).
ALF_SESSION_KEYS: tuple[str, ...] = ("session", "eid", "session_id", "session_start_time", "date", "session_number", "number")
#: columns holding the session number (within a day, or overall; ALF counts from 0).
ALF_NUMBER_COLUMNS: tuple[str, ...] = ("session_number", "number")
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

_STRING_COLUMNS = ("subject", "phase", "session_label", *ALF_SESSION_KEYS)


# --------------------------------------------------------------------------------------------
# locating the shared copy


def default_export_path() -> Path:
    """Path of the 53-mouse IBL export in the shared data folder.

    Raises:
        FileNotFoundError: when the shared data folder cannot be found.
    """
    return shared_data_dir() / "ibl" / EXPORT_FILENAME



def _alf_path_keys(path: Path) -> tuple[str | None, str | None]:
    """Subject and session from an ALF path ``.../<subject>/<YYYY-MM-DD>/<NNN>/[alf/]<file>``."""
    parts = path.parts
    for i in range(len(parts) - 2, 0, -1):
        if DATE_RE.fullmatch(parts[i]) and i + 1 < len(parts) - 1 and SESSION_NUMBER_RE.fullmatch(parts[i + 1]):
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
    raise_first(np.isnan(out), rows, source, column, "not a date/time: {v}", s.to_numpy(dtype=object))
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
    ``session_id``, ``session_start_time``, ``date``, ``session_number``, ``number``; a ``date``
    with a ``session_number``/``number`` column is keyed ``<date>/<NNN>``, as labs name sessions).
    When the table has such a column and the matching argument is given too, only the rows with
    that key are read. Session numbers may count from 0 (ALF does); they stay the session's label.

    Sessions are numbered 1..n per subject in time order when a ``session_start_time`` or
    ``date`` column exists (ties and sessions without one: order of first appearance), else in
    order of first appearance (sessions of one day, or undated ones, by session number when there
    is one); the original key is kept in ``session_label`` (``0`` for ALF's first session), and
    session arguments of the ``twin`` commands name sessions by that label. Trials are numbered
    1..n within a session in file order, after no-go trials are dropped; a raw ``trial`` or
    ``trial_num`` column (0-based, as IBL's, or 1-based), when present, is only used to reject
    duplicated or unordered trials.

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
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file")
    raw = read_table(path, source, _STRING_COLUMNS)
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
        raise missing_columns_error(missing, list(map(str, raw.columns)), source)

    # keys, and selection of one subject/session when asked for one that has a column
    if "subject" in raw.columns:
        subj = key_column(raw, "subject", rows, source)
        if subject is not None:
            sel = subj == str(subject)
            if not sel.any():
                raise TrialDataError(f"no rows for subject {subject!r}", source=source, column="subject")
            raw, rows, subj = raw[sel], rows[sel], subj[sel]
    else:
        subj = np.full(len(raw), str(subject), dtype=object)
    number_col = next((c for c in ALF_NUMBER_COLUMNS if c in raw.columns), None)
    session_number: np.ndarray | None = None
    if key_col in ALF_NUMBER_COLUMNS or (key_col == "date" and number_col is not None):
        assert number_col is not None
        session_number = positive_int(numeric_column(raw, number_col, rows, source), rows, source, number_col, first=0)
    if key_col is not None and session_number is not None:
        if key_col == "date":
            dates = key_column(raw, "date", rows, source)
            labels = np.array([f"{d}/{n:03d}" for d, n in zip(dates.tolist(), session_number.tolist())], dtype=object)
        else:
            labels = session_number.astype(str).astype(object)
        if session is not None:
            sel = labels == str(session)
            if not sel.any():
                raise TrialDataError(f"no rows for session {session!r}", source=source, column=key_col)
            raw, rows, subj, labels, session_number = raw[sel], rows[sel], subj[sel], labels[sel], session_number[sel]
    elif key_col is not None:
        labels = key_column(raw, key_col, rows, source)
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
    choice_raw = numeric_column(raw, "choice", rows, source)
    bad = ~np.isin(choice_raw, (-1, 0, 1))
    reason = "unknown choice code {v}; expected -1 (right), +1 (left) or 0 (no-go)"
    raise_first(bad, rows, source, "choice", reason, choice_raw)
    cl = numeric_column(raw, "contrastLeft", rows, source)
    cr = numeric_column(raw, "contrastRight", rows, source)
    fb = numeric_column(raw, "feedbackType", rows, source)
    pl = numeric_column(raw, "probabilityLeft", rows, source)
    trial_col = next((c for c in ALF_TRIAL_COLUMNS if c in raw.columns), None)
    raw_trial = numeric_column(raw, trial_col, rows, source) if trial_col else None
    columns: dict[str, np.ndarray] = {}
    if "reaction_time" in raw.columns:
        columns["reaction_time"] = numeric_column(raw, "reaction_time", rows, source)
    elif "firstMovement_times" in raw.columns and "stimOn_times" in raw.columns:
        columns["reaction_time"] = numeric_column(raw, "firstMovement_times", rows, source) - numeric_column(
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
    else:
        sess_date = np.zeros(len(rows))
    # sessions of one date (or undated ones) in session-number order when there is a number
    number_key = session_number if session_number is not None else np.zeros(len(rows), np.int64)
    order = np.lexsort((rows, sess_code, number_key, sess_date, subj_code))
    subj, labels, rows, subj_code, sess_code = (a[order] for a in (subj, labels, rows, subj_code, sess_code))
    choice_raw, cl, cr, fb, pl = (a[order] for a in (choice_raw, cl, cr, fb, pl))
    columns = {k: v[order] for k, v in columns.items()}
    new_sess = np.r_[True, sess_code[1:] != sess_code[:-1]]

    if raw_trial is not None:
        raw_trial = positive_int(raw_trial[order], rows, source, trial_col, first=0)  # IBL counts trials from 0
        check_trial_order(new_sess, raw_trial, rows, source, trial_col)

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
    check_sign_convention(
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
    return finish_trials(
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
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file")
    raw = read_table(path, source, _STRING_COLUMNS)
    missing = [c for c in EXPORT_REQUIRED if c not in raw.columns]
    if missing:
        raise missing_columns_error(missing, list(map(str, raw.columns)), source)
    if len(raw) == 0:
        raise TrialDataError("no trials", source=source)
    rows = np.arange(1, len(raw) + 1)

    subj = key_column(raw, "subject", rows, source)
    phase = raw["phase"].to_numpy(dtype=object)
    phase_code = np.full(len(raw), -1, dtype=np.int64)
    for k, name in enumerate(EXPORT_PHASES):
        phase_code[phase == name] = k
    reason = f"unknown phase {{v}}; expected one of {list(EXPORT_PHASES)}"
    raise_first(phase_code < 0, rows, source, "phase", reason, phase)
    sess_num = positive_int(numeric_column(raw, "session_num", rows, source), rows, source, "session_num")
    trial_num = positive_int(numeric_column(raw, "trial_num", rows, source), rows, source, "trial_num")
    response = numeric_column(raw, "response_choice", rows, source)
    bad = ~np.isin(response, (-1, 0, 1))
    reason = "unknown choice code {v}; expected -1 (left), +1 (right) or 0 (no-go)"
    raise_first(bad, rows, source, "response_choice", reason, response)
    correct = numeric_column(raw, "trial_correct", rows, source)
    raise_first(~np.isin(correct, (0, 1)), rows, source, "trial_correct", "unknown code {v}; expected 1 or 0", correct)
    contrast = numeric_column(raw, "contrast", rows, source)
    position = numeric_column(raw, "position", rows, source)
    raise_first(np.isnan(position), rows, source, "position", "missing stimulus position")
    reason = "position 0 (side unknown) on a trial with contrast > 0"
    raise_first((position == 0) & (contrast > 0), rows, source, "position", reason)
    prob_left = numeric_column(raw, "stim_probability_left", rows, source)
    columns: dict[str, np.ndarray] = {}
    if "reaction_time" in raw.columns:
        columns["reaction_time"] = numeric_column(raw, "reaction_time", rows, source)

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
    check_trial_order(new_sess, trial_num, rows, source, "trial_num")

    go = response != 0
    choice = (response == 1).astype(np.int64)
    feedback = np.where(correct == 1, 1, -1)
    side = np.where(position > 0, 1, np.where(position < 0, 0, np.where(correct == 1, choice, 1 - choice)))
    convention = "response_choice +1 = right response, -1 = left"
    check_sign_convention(choice, side, feedback, (position != 0) & go, rows, source, "response_choice", convention)
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
    return finish_trials(
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
