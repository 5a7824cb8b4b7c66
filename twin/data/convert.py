"""The steps every trials reader shares: reading a table, locating bad values, and the one
normalise/validate step that turns a reader's arrays into the canonical trials table.

A reader (:mod:`twin.data.ibl`, :mod:`twin.data.generic`, :mod:`twin.data.alf`) maps its source's
columns onto canonical arrays, in final order (subjects contiguous, sessions contiguous and in
training order, trials in source order), and hands them to :func:`finish_trials`, which numbers
sessions and trials, drops no-go trials (counted per subject, never silently), builds the table
and validates it with :func:`twin.data.trials.validate_trials`. Every problem found on the way is
a :class:`~twin.errors.TrialDataError` naming the source, its 1-based data row and the source's own
column (``contrastLeft``, ``response_choice``...), not the canonical column it was mapped to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError
from twin.data.trials import REQUIRED_COLUMNS, IngestReport, check_nonempty_sessions, plain, validate_trials

#: file suffixes read as parquet (any other table is read as CSV, optionally compressed).
PARQUET_SUFFIXES: tuple[str, ...] = (".pqt", ".parquet")
#: above this fraction of inconsistent trials the choice sign is taken to be flipped.
FLIPPED_FRACTION = 0.5


def is_parquet(path: Path) -> bool:
    """Whether ``path`` is read as parquet (by its suffix)."""
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_table(path: Path, source: str, text_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a parquet (``.pqt``/``.parquet``) or CSV (optionally compressed) table.

    Args:
        path: the file (its existence is the caller's to check).
        source: name used in errors.
        text_columns: CSV columns read as strings (so a key ``"001"`` stays ``"001"``); when
            given, the CSV is parsed with pyarrow.

    Raises:
        TrialDataError: the file cannot be parsed.
    """
    try:
        if is_parquet(path):
            return pd.read_parquet(path)
        if text_columns is None:
            return pd.read_csv(path)
        dtype = dict.fromkeys(text_columns, str)
        try:
            return pd.read_csv(path, engine="pyarrow", dtype=dtype)
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            return pd.read_csv(path, dtype=dtype)
    except (ValueError, OSError) as exc:  # pandas/pyarrow parse errors are ValueErrors
        raise TrialDataError(f"cannot read the table: {exc}", source=source) from None


def table_columns(path: Path) -> list[str]:
    """The column names of a parquet or CSV table, without reading its rows."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def missing_columns_error(missing: list[str], present: list[str], source: str) -> TrialDataError:
    """The error for a table lacking required columns (it names the first one missing)."""
    return TrialDataError(
        f"missing required column(s) {missing}; present: {present}", source=source, column=missing[0]
    )


def raise_first(
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
        reason = reason.replace("{v}", plain(values[i]))
    more = f" ({idx.size - 1} more row(s) like it)" if idx.size > 1 else ""
    raise TrialDataError(reason + more, source=source, row=int(rows[i]), column=column)


def numeric_column(raw: pd.DataFrame, column: str, rows: np.ndarray, source: str) -> np.ndarray:
    """Column as float, NaN where empty; a value that is present but not a number is an error."""
    s = raw[column]
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = np.isnan(vals) & s.notna().to_numpy()
    if bad.any():
        raise_first(bad, rows, source, column, "not a number: {v}", s.to_numpy(dtype=object))
    return vals


def key_column(raw: pd.DataFrame, column: str, rows: np.ndarray, source: str) -> np.ndarray:
    """Key column (subject, session) as an object array of strings; empty values are errors."""
    s = raw[column]
    text = s.astype(str)
    missing = s.isna().to_numpy() | (text.str.strip() == "").to_numpy()
    raise_first(missing, rows, source, column, "missing value")
    return text.to_numpy(dtype=object)


def positive_int(vals: np.ndarray, rows: np.ndarray, source: str, column: str, first: int = 1) -> np.ndarray:
    """``[n]`` floats as int64, each an integer ``>= first`` (else an error at the first bad row).

    Args:
        vals: the values.
        rows: 1-based source rows, for the error.
        source: file name.
        column: raw column, for the error.
        first: the smallest allowed value (0 for indices that count from 0, as IBL's trials do).
    """
    bad = ~np.isfinite(vals) | (vals < first) | (vals != np.round(vals))
    what = "a positive integer" if first == 1 else f"an integer >= {first}"
    raise_first(bad, rows, source, column, f"must be {what}, got {{v}}", vals)
    return vals.astype(np.int64)


def check_trial_order(new_sess: np.ndarray, trial: np.ndarray, rows: np.ndarray, source: str, column: str) -> None:
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


def check_sign_convention(
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


def finish_trials(
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
    extra: Mapping[str, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, IngestReport]:
    """Number sessions and trials, drop no-go trials, build and validate the canonical table.

    All arrays are ``[n]``, one entry per source trial, in final order (subjects contiguous,
    sessions contiguous and in training order, trials in file order).

    Args:
        source: name used in errors and in the report.
        n_rows: trials read (no-go trials included), for the report.
        subj: subject per trial.
        subj_code: integer code of the subject per trial.
        new_sess: True on the first trial of each session.
        rows: 1-based source row per trial; errors cite these.
        go: False on no-go trials (dropped and counted per subject).
        columns: the canonical columns after ``trial`` (``contrast_left`` ... ``prob_left``),
            optionally ``reaction_time``.
        colmap: canonical column -> the source column it came from, for errors.
        session_column: the source column of the session key, for an empty session's error.
        labels: session label per trial (or give ``run_labels``).
        run_labels: session label per session.
        extra: columns added as they are (for the kept trials) after validation, e.g. the
            ``stim_<name>`` columns of :mod:`twin.data.generic`.

    Returns:
        The validated canonical table and the ingest report.

    Raises:
        TrialDataError: an empty session, or what :func:`twin.data.trials.validate_trials`
            rejects, at the source row and column.
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
    for col, values in (extra or {}).items():
        out[col] = np.asarray(values)[keep]
    return out, IngestReport(source=source, n_rows=n_rows, n_nogo_dropped=n_nogo)


