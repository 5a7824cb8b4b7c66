"""The canonical trials table and its validation.

Every reader (IBL ALF tables, the 53-mouse export, simulations) produces one pandas
DataFrame with these columns, one row per trial, ordered by subject, session and trial:

=================  ======  ===================================================================
column             dtype   meaning
=================  ======  ===================================================================
subject            str     animal name
session            int     1-based session index in training order (per subject)
trial              int     1-based trial index within the session
contrast_left      float   contrast on the left in [0, 1]; 0 when the stimulus is on the right
contrast_right     float   contrast on the right in [0, 1]
choice             int     1 = right, 0 = left (no-go trials are dropped before this table)
feedback           int     +1 rewarded, -1 error
correct_side       int     rewarded side, 1 = right, 0 = left (carried from the data: at zero
                           contrast it cannot be derived from the stimulus)
prob_left          float   block prior P(stimulus on the left) in [0, 1]
=================  ======  ===================================================================

Optional columns kept when present: ``session_label`` (source session key or date),
``reaction_time``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twin.data.screen import screen
from twin.errors import TrialDataError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "subject",
    "session",
    "trial",
    "contrast_left",
    "contrast_right",
    "choice",
    "feedback",
    "correct_side",
    "prob_left",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("session_label", "reaction_time")


@dataclass(frozen=True)
class IngestReport:
    """What a reader did besides returning rows.

    Attributes:
        source: the file or table read.
        n_rows: rows read.
        n_nogo_dropped: no-go (timeout) trials removed, per subject.
    """

    source: str
    n_rows: int
    n_nogo_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def total_nogo_dropped(self) -> int:
        return int(sum(self.n_nogo_dropped.values()))

    def summary(self) -> str:
        return f"{self.source}: {self.n_rows} rows read, {self.total_nogo_dropped} no-go trials dropped"


def plain(value: object) -> str:
    """A value as an error message quotes it: NumPy scalars as plain Python numbers (``2``, not
    ``np.float64(2.0)``), whole floats without ``.0``, strings quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # codes read as floats: quote 2, not 2.0
    return repr(value)


def _first_bad(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def validate_trials(df: pd.DataFrame, source: str = "<table>", rows: np.ndarray | None = None) -> pd.DataFrame:
    """Check a canonical trials table; return it with normalised dtypes.

    Args:
        df: table with :data:`REQUIRED_COLUMNS`.
        source: name used in error messages (file path, say).
        rows: ``[n]`` 1-based row numbers in the source for each row of ``df`` (defaults to
            1..n); errors cite these, so readers that drop rows still point at the right line.

    Returns:
        The validated table (copy) with canonical dtypes.

    Raises:
        TrialDataError: naming the source, row and column of the first problem found.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise TrialDataError(f"missing required column(s) {missing}; present: {list(df.columns)}", source=source)
    rows = _rows(rows, len(df), source)
    out = df.copy()
    numeric = {col: pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float) for col in _NUMERIC}
    checked = _check_values(numeric, lambda col, i: out[col].to_numpy()[i], out["subject"], rows, source)
    for col, vals in checked.items():
        out[col] = vals
    out["subject"] = out["subject"].astype(str)
    subj = out["subject"].to_numpy()
    # a subject whose rows are split into two runs means the table is unordered
    starts = np.flatnonzero(np.r_[True, subj[1:] != subj[:-1]])
    seen: set[str] = set()
    for s in starts:
        if subj[s] in seen:
            raise TrialDataError(f"rows of subject {plain(subj[s])} are not contiguous", source=source, row=int(rows[s]), column="subject")
        seen.add(subj[s])
    keep = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in out.columns]
    return out[keep].reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class TrialColumns:
    """One subject's trials as NumPy columns: the canonical table without its ``subject`` column
    (and without pandas), for the paths where a table costs more than the work (a served
    Predict). Columns as in the table (``[n]`` each); :func:`validate_columns` checks them.

    Attributes:
        session: int64 session numbers.
        trial: int64 trial numbers within the session.
        contrast_left: float64.
        contrast_right: float64.
        choice: int64, 1 = right.
        feedback: int64, +1 rewarded, -1 error.
        correct_side: int64, 1 = right.
        prob_left: float64.
        reaction_time: float64 (NaN: not measured), or None when no trial has one.
    """

    session: np.ndarray
    trial: np.ndarray
    contrast_left: np.ndarray
    contrast_right: np.ndarray
    choice: np.ndarray
    feedback: np.ndarray
    correct_side: np.ndarray
    prob_left: np.ndarray
    reaction_time: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.choice.shape[0])

    def frame(self, subject: str) -> pd.DataFrame:
        """The canonical table of these trials for ``subject``."""
        df = pd.DataFrame({"subject": subject, **{c: getattr(self, c) for c in REQUIRED_COLUMNS[1:]}})
        if self.reaction_time is not None:
            df["reaction_time"] = self.reaction_time
        return df


def validate_columns(cols: TrialColumns, source: str = "<table>") -> TrialColumns:
    """:func:`validate_trials` for one subject's :class:`TrialColumns`: the same checks in the
    same order, the same messages (row ``i + 1`` for entry ``i``).

    Raises:
        TrialDataError: naming the source, row and column of the first problem found.
    """
    rows = _rows(None, len(cols), source)
    numeric = {col: np.asarray(getattr(cols, col), dtype=float) for col in _NUMERIC}
    if screen(*(numeric[c] for c in _SCREENED)):  # the compiled one-pass shortcut to "valid" (servers)
        return TrialColumns(**{c: v if c in _FLOAT_COLUMNS else v.astype(np.int64) for c, v in numeric.items()}, reaction_time=cols.reaction_time)  # type: ignore[arg-type]
    checked = _check_values(numeric, lambda col, i: getattr(cols, col)[i], None, rows, source)
    return TrialColumns(**checked, reaction_time=cols.reaction_time)  # type: ignore[arg-type]


#: The numeric columns :func:`_check_values` checks (all but ``subject``).
_NUMERIC = REQUIRED_COLUMNS[1:]
#: Session and trial numbers are below this (they travel as 32-bit integers).
MAX_NUMBER = 2**31
#: The columns :func:`_check_values` returns as float64 (the others as int64).
_FLOAT_COLUMNS = ("contrast_left", "contrast_right", "prob_left")
#: The arguments of :func:`twin.data.screen.screen`, in order.
_SCREENED = ("session", "trial", "contrast_left", "contrast_right", "choice", "feedback", "correct_side", "prob_left")


def _rows(rows: np.ndarray | None, n: int, source: str) -> np.ndarray:
    """The source row numbers, checked (a Series would be indexed by label: positions are meant)."""
    rows = np.arange(1, n + 1) if rows is None else np.asarray(rows)
    if rows.shape != (n,):
        raise ValueError(f"rows has shape {rows.shape}; expected ({n},)")
    if n == 0:
        raise TrialDataError("no trials", source=source)
    return rows


def _check_values(
    num: dict[str, np.ndarray], original: Callable[[str, int], object], subject: pd.Series | None, rows: np.ndarray, source: str
) -> dict[str, np.ndarray]:
    """The checks of :func:`validate_trials` after numeric coercion, in its order.

    Args:
        num: ``[n]`` float64 of every :data:`_NUMERIC` column (NaN where not a number).
        original: ``(column, i)`` → the value as given (quoted in messages).
        subject: the subject column (None: one subject, not checked).
        rows: ``[n]`` 1-based source rows.
        source: name in error messages.

    Returns:
        The columns with canonical dtypes (float64 contrasts and prior, int64 codes and numbers).
    """

    def fail(mask: np.ndarray, column: str, reason: str | Callable[[int], str]) -> None:
        """Raise on the first row of ``mask``; ``reason`` may quote that row (built only then)."""
        if not mask.any():
            return
        i = int(np.argmax(mask))
        n = int(mask.sum())
        more = f" ({n - 1} more row(s) like it)" if n > 1 else ""
        raise TrialDataError(f"{reason if isinstance(reason, str) else reason(i)}{more}", source=source, row=int(rows[i]), column=column)

    out: dict[str, np.ndarray] = {}
    for col in ("contrast_left", "contrast_right", "prob_left"):
        vals = num[col]
        fail(np.isnan(vals), col, lambda i: f"not a number: {plain(original(col, i))}")
        out[col] = vals
    for col in ("contrast_left", "contrast_right"):
        v = out[col]
        fail((v < 0) | (v > 1), col, lambda i: f"contrast {plain(v[i])} outside [0, 1]")
    p = out["prob_left"]
    fail((p < 0) | (p > 1), "prob_left", "block prior outside [0, 1]")
    cl, cr = out["contrast_left"], out["contrast_right"]
    fail((cl > 0) & (cr > 0), "contrast_right", "contrast on both sides in one trial")

    for col, allowed in (("choice", (0, 1)), ("feedback", (-1, 1)), ("correct_side", (0, 1))):
        vals = num[col]
        bad = (vals != allowed[0]) & (vals != allowed[1])
        fail(bad, col, lambda i: f"unknown code {plain(original(col, i))}; expected one of {allowed}")
        out[col] = vals.astype(np.int64)
    for col in ("session", "trial"):
        vals = num[col]
        bad = ~np.isfinite(vals) | (vals < 1) | (vals >= MAX_NUMBER) | (vals != np.round(vals))
        fail(bad, col, lambda i: f"must be a positive integer{' below 2**31' if num[col][i] >= MAX_NUMBER else ''}, got {plain(original(col, i))}")
        out[col] = vals.astype(np.int64)
    if subject is not None:
        fail((subject.isna() | (subject.astype(str).str.strip() == "")).to_numpy(), "subject", "missing subject name")

    side = out["correct_side"]
    fail((cr > 0) & (side != 1), "correct_side", "stimulus on the right but the rewarded side is left")
    fail((cl > 0) & (side != 0), "correct_side", "stimulus on the left but the rewarded side is right")
    correct = out["choice"] == side
    fb = out["feedback"]
    fail(correct != (fb == 1), "feedback", "feedback does not match choice and rewarded side")

    sess, trial = out["session"], out["trial"]
    same_subject = np.ones(len(sess) - 1, bool) if subject is None else _same_as_previous(subject.astype(str).to_numpy())
    same_block = same_subject & (sess[1:] == sess[:-1])
    dup = np.zeros(len(sess), bool)
    dup[1:] = same_block & (trial[1:] == trial[:-1])
    unordered = np.zeros(len(sess), bool)
    unordered[1:] = same_block & (trial[1:] < trial[:-1])
    # report whichever problem comes first in the table
    i_dup, i_uno = _first_bad(dup), _first_bad(unordered)
    if i_dup is not None and (i_uno is None or i_dup < i_uno):
        fail(dup, "trial", "duplicated trial number within a session")
    fail(unordered, "trial", "trials out of order within a session")
    back = np.zeros(len(sess), bool)
    back[1:] = same_subject & (sess[1:] < sess[:-1])
    fail(back, "session", "sessions out of order (rows must be sorted by session)")
    return {col: out[col] for col in _NUMERIC}


def _same_as_previous(values: np.ndarray) -> np.ndarray:
    """``[n - 1]`` bool: entry ``i + 1`` equals entry ``i``."""
    return values[1:] == values[:-1]


def check_nonempty_sessions(
    sessions: dict[tuple[str, object], int],
    source: str,
    rows: dict[tuple[str, object], int] | None = None,
    column: str = "session",
) -> None:
    """Raise if any (subject, session) key has no usable trials.

    Args:
        sessions: ``{(subject, session_key): n_trials_after_dropping_nogo}``.
        source: name for the error message.
        rows: optional ``{(subject, session_key): 1-based source row of the session's first
            trial}``; when given, the error cites that row.
        column: the source column holding the session key, for the error.
    """
    empty = [k for k, n in sessions.items() if n == 0]
    if empty:
        subj, key = empty[0]
        more = f" ({len(empty) - 1} more)" if len(empty) > 1 else ""
        row = None if rows is None or empty[0] not in rows else int(rows[empty[0]])
        raise TrialDataError(
            f"session {plain(key)} of subject {plain(subj)} has no usable trials{more}",
            source=source,
            row=row,
            column=column,
        )


def session_starts(df: pd.DataFrame) -> np.ndarray:
    """``[n]`` bool: True on the first trial of each session (and of each subject)."""
    subj = df["subject"].to_numpy()
    sess = df["session"].to_numpy()
    out = np.ones(len(df), bool)
    out[1:] = ~_same_as_previous(subj) | ~_same_as_previous(sess)
    return out


def subjects(df: pd.DataFrame) -> list[str]:
    """Subjects in table order."""
    return list(dict.fromkeys(df["subject"].tolist()))
