"""validate_trials and friends on canonical tables (no file readers involved)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from twin.errors import TrialDataError
from twin.data.trials import (
    REQUIRED_COLUMNS,
    IngestReport,
    TrialColumns,
    check_nonempty_sessions,
    session_starts,
    subjects,
    validate_columns,
    validate_trials,
)
from trial_tables import random_trials_table

SOURCE = "table.csv"


def canonical(n_subjects: int = 2, n_sessions: int = 2, n_trials: int = 6, seed: int = 0) -> pd.DataFrame:
    """A valid canonical table: every subject has sessions 1..n, trials 1..n, consistent feedback."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_subjects):
        for sess in range(1, n_sessions + 1):
            side = rng.integers(0, 2, n_trials)
            contrast = rng.choice([0.0, 0.0625, 0.25, 1.0], n_trials)
            correct = rng.random(n_trials) < 0.8
            choice = np.where(correct, side, 1 - side)
            parts.append(
                pd.DataFrame(
                    {
                        "subject": f"m{s}",
                        "session": sess,
                        "trial": np.arange(1, n_trials + 1),
                        "contrast_left": np.where(side == 0, contrast, 0.0),
                        "contrast_right": np.where(side == 1, contrast, 0.0),
                        "choice": choice,
                        "feedback": np.where(correct, 1, -1),
                        "correct_side": side,
                        "prob_left": 0.5,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def assert_located(exc: TrialDataError, source: str, row: int | None, column: str | None) -> None:
    assert exc.source == source
    assert exc.row == row
    assert exc.column == column
    assert exc.field == column
    msg = str(exc)
    assert msg.startswith(source)
    if row is not None:
        assert f"row {row}" in msg
    if column is not None:
        assert f"column '{column}'" in msg


def test_valid_table_passes_with_canonical_dtypes():
    df = canonical()
    df["choice"] = df["choice"].astype(float)  # normalised back to int
    df["session_label"] = "x"
    df["reaction_time"] = 0.3
    df["extra"] = 1
    out = validate_trials(df, source=SOURCE)
    assert list(out.columns) == [*REQUIRED_COLUMNS, "session_label", "reaction_time"]
    assert out["choice"].dtype == np.int64
    assert out["session"].dtype == np.int64
    assert out["contrast_left"].dtype == np.float64
    assert len(out) == len(df)
    assert df["choice"].dtype == float  # input untouched


def test_zero_contrast_side_is_carried_not_derived():
    df = canonical(seed=1)
    zero = (df["contrast_left"] == 0) & (df["contrast_right"] == 0)
    assert zero.any()
    out = validate_trials(df)
    np.testing.assert_array_equal(out["correct_side"][zero], df["correct_side"][zero])


def _set(i: int, **values: object) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        for k, v in values.items():
            df[k] = df[k].astype(object)  # so any value fits (pandas 3 refuses lossy setitem)
            df.loc[i, k] = v

    return mutate


def _make_consistent(i: int) -> Callable[[pd.DataFrame], None]:
    """Trial i: stimulus right at 0.5, choice right, rewarded (a clean base to break)."""

    def mutate(df: pd.DataFrame) -> None:
        df.loc[i, ["contrast_left", "contrast_right", "choice", "feedback", "correct_side"]] = [0.0, 0.5, 1, 1, 1]

    return mutate


def _then(*fs: Callable[[pd.DataFrame], None]) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        for f in fs:
            f(df)

    return mutate


# (mutation, row, column, text in message); rows are 1-based, index i -> row i + 1
BAD_TABLES = {
    "contrast_above_one": (_then(_make_consistent(3), _set(3, contrast_right=1.5)), 4, "contrast_right", "outside [0, 1]"),
    "contrast_negative": (_set(2, contrast_left=-0.1), 3, "contrast_left", "outside [0, 1]"),
    "contrast_nan": (_set(5, contrast_left=np.nan), 6, "contrast_left", "not a number"),
    "contrast_text": (_set(5, contrast_right="high"), 6, "contrast_right", "not a number"),
    "contrast_both_sides": (_then(_make_consistent(4), _set(4, contrast_left=0.25)), 5, "contrast_right", "both sides"),
    "prob_left_out_of_range": (_set(7, prob_left=1.2), 8, "prob_left", "outside [0, 1]"),
    "choice_unknown_code": (_set(6, choice=2), 7, "choice", "unknown code"),
    "choice_no_go_left_in": (_set(6, choice=-1), 7, "choice", "unknown code"),
    "feedback_unknown_code": (_set(1, feedback=0), 2, "feedback", "unknown code"),
    "correct_side_unknown_code": (_set(1, correct_side=0.5), 2, "correct_side", "unknown code"),
    "side_contradicts_stimulus": (
        _then(_make_consistent(8), _set(8, correct_side=0, choice=0)),
        9,
        "correct_side",
        "stimulus on the right",
    ),
    "feedback_inconsistent": (_then(_make_consistent(9), _set(9, feedback=-1)), 10, "feedback", "does not match"),
    "duplicated_trial": (_set(3, trial=3), 4, "trial", "duplicated"),
    "unordered_trials": (_set(2, trial=5), 4, "trial", "out of order"),
    "trial_zero": (_set(0, trial=0), 1, "trial", "positive integer"),
    "trial_fraction": (_set(0, trial=0.5), 1, "trial", "positive integer"),
    "session_infinite": (_set(0, session=np.inf), 1, "session", "positive integer"),
    "sessions_unordered": (_set(0, session=2), 2, "session", "out of order"),
    "subject_missing": (_set(4, subject=None), 5, "subject", "missing subject"),
    "subject_not_contiguous": (_set(0, subject="m1"), 13, "subject", "not contiguous"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES), ids=list(BAD_TABLES))
def test_bad_tables_are_located(case):
    mutate, row, column, text = BAD_TABLES[case]
    df = canonical(seed=3)
    mutate(df)
    with pytest.raises(TrialDataError) as info:
        validate_trials(df, source=SOURCE)
    assert_located(info.value, SOURCE, row, column)
    assert text in str(info.value)


def test_missing_columns_listed():
    df = canonical().drop(columns=["feedback", "prob_left"])
    with pytest.raises(TrialDataError) as info:
        validate_trials(df, source=SOURCE)
    assert_located(info.value, SOURCE, None, None)
    assert "'feedback'" in str(info.value) and "'prob_left'" in str(info.value)


def test_empty_table():
    with pytest.raises(TrialDataError, match="no trials"):
        validate_trials(canonical().iloc[:0], source=SOURCE)


def test_errors_cite_given_rows_by_position():
    df = canonical(seed=4)
    df.loc[3, "feedback"] = 0
    rows = pd.Series(np.arange(len(df)) * 10 + 7, index=np.arange(len(df))[::-1])  # labels reversed
    with pytest.raises(TrialDataError) as info:
        validate_trials(df, source=SOURCE, rows=rows)
    assert_located(info.value, SOURCE, 37, "feedback")


def test_rows_of_wrong_length_is_a_programming_error():
    df = canonical()
    with pytest.raises(ValueError, match="rows has shape"):
        validate_trials(df, rows=np.arange(3))


def test_first_problem_in_table_order_is_reported():
    df = canonical(n_subjects=1, n_sessions=1, n_trials=8, seed=5)
    df["trial"] = [1, 2, 4, 3, 5, 6, 6, 7]  # unordered at row 4 before the duplicate at row 7
    with pytest.raises(TrialDataError) as info:
        validate_trials(df, source=SOURCE)
    assert_located(info.value, SOURCE, 4, "trial")
    assert "out of order" in str(info.value)


def test_many_bad_rows_are_counted():
    df = canonical(seed=6)
    df.loc[[2, 5, 9], "prob_left"] = 2.0
    with pytest.raises(TrialDataError, match=r"2 more row\(s\)") as info:
        validate_trials(df, source=SOURCE)
    assert info.value.row == 3


def test_check_nonempty_sessions():
    check_nonempty_sessions({("m0", "a"): 3, ("m0", "b"): 1}, SOURCE)
    with pytest.raises(TrialDataError) as info:
        check_nonempty_sessions({("m0", "a"): 3, ("m0", "b"): 0, ("m1", "c"): 0}, SOURCE)
    assert_located(info.value, SOURCE, None, "session")
    assert "'b'" in str(info.value) and "1 more" in str(info.value)
    with pytest.raises(TrialDataError) as info:
        check_nonempty_sessions({("m0", "a"): 0}, SOURCE, rows={("m0", "a"): 12}, column="eid")
    assert_located(info.value, SOURCE, 12, "eid")


def test_report_and_helpers():
    rep = IngestReport(source=SOURCE, n_rows=10, n_nogo_dropped={"a": 2, "b": 0, "c": 1})
    assert rep.total_nogo_dropped == 3
    assert rep.summary() == f"{SOURCE}: 10 rows read, 3 no-go trials dropped"
    df = validate_trials(canonical(n_subjects=2, n_sessions=2, n_trials=3))
    assert subjects(df) == ["m0", "m1"]
    np.testing.assert_array_equal(np.flatnonzero(session_starts(df)), [0, 3, 6, 9])


# -- the same checks on columns (the serving path) ----------------------------------------------


def _columns(df: pd.DataFrame) -> TrialColumns:
    return TrialColumns(**{c: df[c].to_numpy() for c in REQUIRED_COLUMNS[1:]})


_CORRUPTIONS = [
    ("contrast_left", 3, np.nan),
    ("contrast_right", 5, 1.5),
    ("prob_left", 2, -0.1),
    ("contrast_right", 0, 0.5),  # both sides (row 0 has its stimulus on one side or none)
    ("choice", 4, 2),
    ("feedback", 1, 0),
    ("correct_side", 7, 3),
    ("session", 6, 0),
    ("trial", 6, 0),
    ("trial", 9, 3),  # out of order or duplicated
    ("session", 10, 1),  # back to an earlier session
    ("feedback", 8, None),  # flipped: no longer matches choice and side
]


@pytest.mark.parametrize("column,row,value", _CORRUPTIONS)
def test_columns_fail_with_the_tables_message(column, row, value):
    df = random_trials_table({"m": [8, 7]}, seed=3)
    df[column] = df[column].astype(float)
    df.loc[row, column] = -df.loc[row, column] if value is None else value
    if column == "contrast_right" and value == 0.5:
        df.loc[row, "contrast_left"] = 0.5
    with pytest.raises(TrialDataError) as from_table:
        validate_trials(df, source="req")
    with pytest.raises(TrialDataError) as from_columns:
        validate_columns(_columns(df), source="req")
    assert str(from_columns.value) == str(from_table.value)


def test_valid_columns_come_back_as_the_table_would():
    df = random_trials_table({"m": [5, 6]}, seed=4)
    table = validate_trials(df)
    cols = validate_columns(_columns(df))
    for c in REQUIRED_COLUMNS[1:]:
        got = getattr(cols, c)
        assert got.dtype == table[c].to_numpy().dtype and np.array_equal(got, table[c].to_numpy()), c
    pd.testing.assert_frame_equal(validate_trials(cols.frame("m")), table)
    pd.testing.assert_frame_equal(cols.frame("m"), table)  # already canonical: Predict's fallback runs it unvalidated
