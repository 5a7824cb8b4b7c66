"""IBL readers: ALF trials tables (parquet/CSV, per session and aggregated) and the 53-mouse export."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.errors import TrialDataError
from twin.data.ibl import EXPORT_FILENAME, default_export_path, read_alf_trials, read_ibl_export
from twin.data.paths import shared_data_dir
from twin.data.trials import REQUIRED_COLUMNS

FORMATS = ("csv", "pqt")


# --------------------------------------------------------------------------------------------
# helpers


def alf_table(n: int = 20, nogo: tuple[int, ...] = (0, 3), seed: int = 0, p_correct: float = 0.8) -> pd.DataFrame:
    """A consistent ALF trials table: NaN on the unused side, IBL choice -1 = right."""
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)  # 1 = right
    contrast = rng.choice([0.0, 0.0625, 0.125, 0.25, 1.0], n)
    correct = rng.random(n) < p_correct
    correct[:] = correct | (np.arange(n) % 5 == 1)  # enough rewarded trials whatever the seed
    choice01 = np.where(correct, side, 1 - side)
    choice = np.where(choice01 == 1, -1, 1)
    feedback = np.where(correct, 1, -1)
    choice[list(nogo)] = 0
    feedback[list(nogo)] = -1
    return pd.DataFrame(
        {
            "contrastLeft": np.where(side == 0, contrast, np.nan),
            "contrastRight": np.where(side == 1, contrast, np.nan),
            "choice": choice,
            "feedbackType": feedback,
            "probabilityLeft": rng.choice([0.2, 0.5, 0.8], n),
        }
    )


def write(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    path = path.with_suffix("." + fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def aggregated(seed: int = 0) -> pd.DataFrame:
    """Two subjects; sessions appear in the file out of date order."""
    parts = []
    spec = [  # subject, eid, start time, n trials, no-go indices
        ("KS014", "eid-c", "2019-12-05T10:00:00", 12, (2,)),
        ("KS014", "eid-a", "2019-12-03T09:30:00", 10, ()),
        ("CSHL_002", "eid-x", "2020-02-01T11:00:00", 8, (0, 1)),
        ("KS014", "eid-b", "2019-12-04T15:45:00", 9, (8,)),
        ("CSHL_002", "eid-w", "2020-01-31T11:00:00", 7, ()),
    ]
    for k, (subj, eid, start, n, nogo) in enumerate(spec):
        t = alf_table(n, nogo, seed=seed + k)
        t.insert(0, "session_start_time", start)
        t.insert(0, "eid", eid)
        t.insert(0, "subject", subj)
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def assert_located(exc: TrialDataError, source: Path | str, row: int | None, column: str | None) -> None:
    source = str(source)
    assert exc.source == source
    assert exc.row == row
    assert exc.column == column
    msg = str(exc)
    assert source in msg
    if row is not None:
        assert f"row {row}" in msg
    if column is not None:
        assert f"column '{column}'" in msg


# --------------------------------------------------------------------------------------------
# ALF: mapping


@pytest.mark.parametrize("fmt", FORMATS)
def test_alf_hand_made_mapping(tmp_path, fmt):
    nan = np.nan
    raw = pd.DataFrame(
        {  # right 0.25 | left 0.5 | right 0 | left 0 | no-go | right 1 | both NaN | both zero
            "contrastLeft": [nan, 0.5, nan, 0.0, nan, nan, nan, 0.0],
            "contrastRight": [0.25, nan, 0.0, nan, 1.0, 1.0, nan, 0.0],
            "choice": [-1, -1, -1, 1, 0, 1, -1, 1],
            "feedbackType": [1, -1, 1, 1, -1, -1, -1, 1],
            "probabilityLeft": [0.5, 0.5, 0.8, 0.8, 0.8, 0.2, 0.2, 0.2],
        }
    )
    df, rep = read_alf_trials(write(raw, tmp_path / "trials", fmt), subject="KS014", session="2019-12-03/001")
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert df["choice"].tolist() == [1, 1, 1, 0, 0, 1, 0]  # IBL -1 = right -> 1
    assert df["correct_side"].tolist() == [1, 0, 1, 0, 1, 0, 0]  # NaN pattern gives the side at zero contrast
    assert df["feedback"].tolist() == [1, -1, 1, 1, -1, -1, 1]
    assert df["contrast_left"].tolist() == [0, 0.5, 0, 0, 0, 0, 0]
    assert df["contrast_right"].tolist() == [0.25, 0, 0, 0, 1, 0, 0]
    assert df["prob_left"].tolist() == [0.5, 0.5, 0.8, 0.8, 0.2, 0.2, 0.2]
    assert df["trial"].tolist() == list(range(1, 8))
    assert set(df["session"]) == {1}
    assert set(df["subject"]) == {"KS014"}
    assert set(df["session_label"]) == {"2019-12-03/001"}
    assert rep.n_rows == 8
    assert rep.n_nogo_dropped == {"KS014": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_alf_per_session_random(tmp_path, fmt):
    raw = alf_table(40, nogo=(0, 7, 30), seed=11)
    df, rep = read_alf_trials(write(raw, tmp_path / "t", fmt), subject="m1", session="s1")
    go = raw["choice"].to_numpy() != 0
    assert len(df) == go.sum() == 37
    np.testing.assert_array_equal(df["choice"], (raw["choice"][go] == -1).astype(int))
    stim_right = raw["contrastRight"].notna().to_numpy()[go]
    np.testing.assert_array_equal(df["correct_side"], stim_right.astype(int))
    assert ((df["choice"] == df["correct_side"]) == (df["feedback"] == 1)).all()
    assert rep.total_nogo_dropped == 3 and rep.n_rows == 40


def test_alf_path_gives_subject_and_session(tmp_path):
    path = write(alf_table(), tmp_path / "Subjects" / "KS014" / "2019-12-03" / "001" / "alf" / "_ibl_trials.table", "pqt")
    df, _ = read_alf_trials(path)
    assert set(df["subject"]) == {"KS014"}
    assert set(df["session_label"]) == {"2019-12-03/001"}
    df, _ = read_alf_trials(path, subject="other", session="s9")  # arguments win
    assert set(df["subject"]) == {"other"} and set(df["session_label"]) == {"s9"}


def test_alf_reaction_time(tmp_path):
    raw = alf_table(10, nogo=(2,))
    raw["stimOn_times"] = np.arange(10) * 5.0
    raw["firstMovement_times"] = raw["stimOn_times"] + 0.25
    df, _ = read_alf_trials(write(raw, tmp_path / "t", "csv"), subject="m", session="s")
    np.testing.assert_allclose(df["reaction_time"], 0.25)
    raw["reaction_time"] = np.linspace(0, 1, 10)  # an explicit column wins
    df, _ = read_alf_trials(write(raw, tmp_path / "t", "csv"), subject="m", session="s")
    np.testing.assert_allclose(df["reaction_time"], np.delete(np.linspace(0, 1, 10), 2))


# --------------------------------------------------------------------------------------------
# ALF: aggregated tables and session order


@pytest.mark.parametrize("fmt", FORMATS)
def test_alf_aggregated_orders_sessions_by_start_time(tmp_path, fmt):
    raw = aggregated()
    df, rep = read_alf_trials(write(raw, tmp_path / "cohort", fmt))
    assert list(dict.fromkeys(df["subject"])) == ["KS014", "CSHL_002"]  # first appearance
    ks = df[df["subject"] == "KS014"]
    labels = ks.groupby("session", sort=True)["session_label"].first().tolist()
    assert labels == ["eid-a", "eid-b", "eid-c"]
    assert ks.groupby("session").size().tolist() == [10, 8, 11]  # no-go dropped
    cs = df[df["subject"] == "CSHL_002"]
    assert cs.groupby("session", sort=True)["session_label"].first().tolist() == ["eid-w", "eid-x"]
    for _, g in df.groupby(["subject", "session"]):
        assert g["trial"].tolist() == list(range(1, len(g) + 1))
    assert rep.n_nogo_dropped == {"KS014": 2, "CSHL_002": 2}
    assert rep.n_rows == len(raw)
    # trials keep file order: KS014 session 1 (eid-a) is file rows 13..22 in order
    a = raw[raw["eid"] == "eid-a"]
    np.testing.assert_array_equal(ks[ks["session"] == 1]["prob_left"], a["probabilityLeft"])


@pytest.mark.parametrize("key", ["session", "eid", "session_id"])
def test_alf_session_key_columns_with_date(tmp_path, key):
    raw = aggregated().rename(columns={"eid": key, "session_start_time": "date"})
    raw["date"] = raw["date"].str[:10]
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "csv"))
    ks = df[df["subject"] == "KS014"]
    assert ks.groupby("session")["session_label"].first().tolist() == ["eid-a", "eid-b", "eid-c"]


def test_alf_date_is_the_key(tmp_path):
    raw = aggregated().drop(columns=["eid"])
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "pqt"))
    ks = df[df["subject"] == "KS014"]
    assert ks.groupby("session")["session_label"].first().tolist() == [
        "2019-12-03T09:30:00",
        "2019-12-04T15:45:00",
        "2019-12-05T10:00:00",
    ]


def test_alf_mixed_date_formats_and_datetime_dtype(tmp_path):
    raw = aggregated()
    raw.loc[raw["eid"] == "eid-b", "session_start_time"] = "2019-12-04"  # date only, still between a and c
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "csv"))
    assert df[df["subject"] == "KS014"].groupby("session")["session_label"].first().tolist() == ["eid-a", "eid-b", "eid-c"]
    raw["session_start_time"] = pd.to_datetime(raw["session_start_time"], format="mixed")
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "pqt"))
    assert df[df["subject"] == "KS014"].groupby("session")["session_label"].first().tolist() == ["eid-a", "eid-b", "eid-c"]


def test_alf_without_date_orders_by_first_appearance(tmp_path):
    raw = aggregated().drop(columns=["session_start_time"])
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "csv"))
    ks = df[df["subject"] == "KS014"]
    assert ks.groupby("session")["session_label"].first().tolist() == ["eid-c", "eid-a", "eid-b"]


def test_alf_select_subject_and_session(tmp_path):
    path = write(aggregated(), tmp_path / "cohort", "pqt")
    df, rep = read_alf_trials(path, subject="CSHL_002")
    assert set(df["subject"]) == {"CSHL_002"} and df["session"].max() == 2
    assert rep.n_nogo_dropped == {"CSHL_002": 2}
    df, _ = read_alf_trials(path, subject="KS014", session="eid-b")
    assert set(df["session_label"]) == {"eid-b"} and set(df["session"]) == {1} and len(df) == 8
    with pytest.raises(TrialDataError, match="no rows for subject 'nobody'"):
        read_alf_trials(path, subject="nobody")


def test_alf_string_keys_keep_leading_zeros(tmp_path):
    raw = aggregated()
    raw["subject"] = raw["subject"].map({"KS014": "007", "CSHL_002": "010"})
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "csv"))
    assert list(dict.fromkeys(df["subject"])) == ["007", "010"]


# --------------------------------------------------------------------------------------------
# ALF: bad input


def _cell(i: int, column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df[column] = df[column].astype(object if isinstance(value, str) else float)
        df.loc[i, column] = value

    return mutate


def _stim(i: int, left: float, right: float) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[i, ["contrastLeft", "contrastRight"]] = [left, right]

    return mutate


def _flip_feedback(i: int) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[i, "feedbackType"] = -df.loc[i, "feedbackType"]

    return mutate


def _as_text(column: str, i: int, value: str) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df[column] = [None if np.isnan(v) else str(v) for v in df[column]]
        df.loc[i, column] = value

    return mutate


# mutation of alf_table(20, nogo=(0, 3)) -> (row, column, text); index i is data row i + 1
ALF_BAD = {
    "contrast_above_one": (_stim(5, np.nan, 1.5), 6, "contrastRight", "outside [0, 1]"),
    "contrast_negative": (_stim(6, -0.25, np.nan), 7, "contrastLeft", "outside [0, 1]"),
    "contrast_infinite": (_stim(6, np.inf, np.nan), 7, "contrastLeft", "outside [0, 1]"),
    "contrast_both_sides": (_stim(7, 0.5, 0.25), 8, "contrastRight", "both sides"),
    "contrast_not_a_number": (_as_text("contrastLeft", 9, "abc"), 10, "contrastLeft", "not a number: 'abc'"),
    "choice_code_2": (_cell(9, "choice", 2), 10, "choice", "unknown choice code 2"),
    "choice_code_half": (_cell(9, "choice", 0.5), 10, "choice", "unknown choice code 0.5"),
    "choice_missing": (_cell(9, "choice", np.nan), 10, "choice", "unknown choice code"),
    "feedback_inconsistent": (_flip_feedback(11), 12, "feedbackType", "does not match"),
    "feedback_unknown_code": (_cell(11, "feedbackType", 0), 12, "feedbackType", "unknown code"),
    "prob_left_missing": (_cell(4, "probabilityLeft", np.nan), 5, "probabilityLeft", "not a number"),
    "prob_left_out_of_range": (_cell(4, "probabilityLeft", 1.5), 5, "probabilityLeft", "outside [0, 1]"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(ALF_BAD), ids=list(ALF_BAD))
def test_alf_bad_values_are_located(tmp_path, case, fmt):
    mutate, row, column, text = ALF_BAD[case]
    raw = alf_table(20, nogo=(0, 3), seed=2)
    mutate(raw)
    path = write(raw, tmp_path / "trials", fmt)
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path, subject="m", session="s")
    assert_located(info.value, path, row, column)
    assert text in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("drop", [["feedbackType"], ["contrastLeft", "probabilityLeft"]])
def test_alf_missing_columns(tmp_path, fmt, drop):
    path = write(alf_table().drop(columns=drop), tmp_path / "trials", fmt)
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path, subject="m", session="s")
    assert_located(info.value, path, None, drop[0])
    assert all(repr(c) in str(info.value) for c in drop)


def test_alf_missing_keys(tmp_path):
    path = write(alf_table(), tmp_path / "trials", "csv")
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path)
    assert info.value.column == "subject"
    assert "'subject'" in str(info.value) and "eid" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("trial_col", ["trial", "trial_num"])
@pytest.mark.parametrize(
    ("numbers", "row", "text"),
    [
        ([1, 2, 3, 3, 4], 4, "duplicated trial number 3"),
        ([1, 2, 4, 3, 5], 4, "out of order"),
        ([1, 2, -1, 3, 4], 3, "must be an integer >= 0, got -1"),  # 0 is fine: IBL counts trials from 0
        ([0, 1, 2, 2, 3], 4, "duplicated trial number 2"),
    ],
    ids=["duplicated", "unordered", "negative", "duplicated_from_zero"],
)
def test_alf_trial_numbers(tmp_path, trial_col, numbers, row, text):
    raw = alf_table(5, nogo=(2,), seed=4)  # the no-go trial still counts in file rows
    raw[trial_col] = numbers
    path = write(raw, tmp_path / "trials", "csv")
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path, subject="m", session="s")
    assert_located(info.value, path, row, trial_col)
    assert text in str(info.value)


def test_alf_trial_numbers_checked_per_session(tmp_path):
    raw = aggregated()
    raw["trial"] = raw.groupby("eid").cumcount() + 1  # restarts per session: fine
    df, _ = read_alf_trials(write(raw, tmp_path / "cohort", "csv"))
    raw.loc[29, "trial"] = raw.loc[28, "trial"]  # inside CSHL_002's eid-x (rows 23..30)
    path = write(raw, tmp_path / "cohort", "csv")
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path)
    assert_located(info.value, path, 30, "trial")


@pytest.mark.parametrize("fmt", FORMATS)
def test_alf_empty_session(tmp_path, fmt):
    raw = aggregated()
    b = raw["eid"] == "eid-b"
    raw.loc[b, "choice"] = 0
    raw.loc[b, "feedbackType"] = -1
    path = write(raw, tmp_path / "cohort", fmt)
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path)
    first_row = int(np.flatnonzero(b)[0]) + 1
    assert_located(info.value, path, first_row, "eid")
    assert "'eid-b'" in str(info.value) and "'KS014'" in str(info.value) and "no usable trials" in str(info.value)


def test_alf_unknown_choice_reported_before_anything_is_dropped(tmp_path):
    raw = aggregated()
    b = raw["eid"] == "eid-b"  # an all-no-go session (would be "empty") ...
    raw.loc[b, "choice"] = 0
    raw["choice"] = raw["choice"].astype(float)
    raw.loc[40, "choice"] = 2.0  # ... and an unknown code further down
    path = write(raw, tmp_path / "cohort", "csv")
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path)
    assert_located(info.value, path, 41, "choice")


@pytest.mark.parametrize("fmt", FORMATS)
def test_alf_flipped_convention(tmp_path, fmt):
    raw = alf_table(30, nogo=(0, 3), seed=5)
    raw["choice"] = -raw["choice"]  # someone used +1 = right
    path = write(raw, tmp_path / "trials", fmt)
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path, subject="m", session="s")
    assert "flipped" in str(info.value)
    assert "-1 = right" in str(info.value)
    first_inconsistent = 2  # row 1 is a no-go; every go trial now contradicts its feedback
    assert_located(info.value, path, first_inconsistent, "choice")


def test_alf_minority_inconsistency_is_not_called_flipped(tmp_path):
    raw = alf_table(30, nogo=(), seed=6)
    idx = [4, 9, 20]
    raw.loc[idx, "feedbackType"] = -raw.loc[idx, "feedbackType"]
    path = write(raw, tmp_path / "trials", "csv")
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path, subject="m", session="s")
    assert "flipped" not in str(info.value)
    assert_located(info.value, path, 5, "feedbackType")
    assert "2 more row(s)" in str(info.value)


def test_alf_bad_date(tmp_path):
    raw = aggregated()
    raw.loc[12, "session_start_time"] = "yesterday"
    path = write(raw, tmp_path / "cohort", "csv")
    with pytest.raises(TrialDataError) as info:
        read_alf_trials(path)
    assert_located(info.value, path, 13, "session_start_time")
    assert "not a date" in str(info.value)


def test_alf_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_alf_trials(tmp_path / "nope.pqt", subject="m", session="s")


# --------------------------------------------------------------------------------------------
# the export format, on small synthetic files


def export_table(seed: int = 0) -> pd.DataFrame:
    """Export-style rows; sessions deliberately out of training order in the file."""
    rng = np.random.default_rng(seed)
    parts = []
    spec = [("A", "biased", 2, 10), ("A", "endtrain", 22, 8), ("A", "biased", 1, 9), ("A", "endtrain", 21, 7), ("B", "biased", 1, 6)]
    for subj, phase, sess, n in spec:
        pos = rng.choice([-35.0, 35.0], n)
        contrast = rng.choice([0.0, 0.0625, 0.25, 1.0], n)
        correct = (rng.random(n) < 0.8) | (np.arange(n) % 4 == 1)
        resp = np.where(correct, np.sign(pos), -np.sign(pos)).astype(int)
        parts.append(
            pd.DataFrame(
                {
                    "subject": subj,
                    "phase": phase,
                    "trial_num": np.arange(1, n + 1),
                    "session_num": sess,
                    "stim_probability_left": 0.5,
                    "contrast": contrast,
                    "position": pos,
                    "response_choice": resp,
                    "trial_correct": correct.astype(float),
                    "reaction_time": rng.random(n),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_export_mapping_and_order(tmp_path):
    raw = export_table()
    raw.loc[2, ["contrast", "position", "response_choice", "trial_correct"]] = [0.0, 0.0, 1, 1.0]  # side lost, rewarded
    raw.loc[3, ["contrast", "position", "response_choice", "trial_correct"]] = [0.0, -0.0, 1, 0.0]  # side lost, error
    raw.loc[[5, 12], ["response_choice", "trial_correct"]] = [0, 0.0]  # no-go
    path = tmp_path / "export.csv.gz"
    raw.to_csv(path, index=False)
    df, rep = read_ibl_export(path)
    a = df[df["subject"] == "A"]
    assert a.groupby("session")["session_label"].first().tolist() == ["endtrain-21", "endtrain-22", "biased-1", "biased-2"]
    assert a.groupby("session").size().tolist() == [7, 7, 9, 9]
    assert df[df["subject"] == "B"]["session_label"].unique().tolist() == ["biased-1"]
    assert rep.n_nogo_dropped == {"A": 2, "B": 0}
    assert rep.n_rows == len(raw)
    # biased-2 is file rows 1..10; with row 6 dropped its trials are renumbered 1..9
    b2 = a[a["session_label"] == "biased-2"]
    assert b2["trial"].tolist() == list(range(1, 10))
    assert b2["correct_side"].iloc[2] == 1 and b2["choice"].iloc[2] == 1  # lost side, correct: side = choice
    assert b2["correct_side"].iloc[3] == 0 and b2["feedback"].iloc[3] == -1  # lost side, error: the other side
    # every kept row against its raw row (reaction times are unique keys)
    m = df.merge(pd.read_csv(path), on=["subject", "reaction_time"], validate="one_to_one")
    assert len(m) == len(df) == len(raw) - 2
    known = m["position"] != 0
    np.testing.assert_array_equal(m["correct_side"][known], (m["position"][known] > 0).astype(int))
    np.testing.assert_array_equal(m["choice"], (m["response_choice"] == 1).astype(int))
    np.testing.assert_array_equal(m["contrast_left"], np.where(m["position"] < 0, m["contrast"], 0.0))
    np.testing.assert_array_equal(m["contrast_right"], np.where(m["position"] > 0, m["contrast"], 0.0))
    assert ((df["choice"] == df["correct_side"]) == (df["feedback"] == 1)).all()


def _export_cell(i: int, column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df[column] = df[column].astype(object if isinstance(value, str) else float)
        df.loc[i, column] = value

    return mutate


def _export_flip_correct(i: int) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[i, "trial_correct"] = 1.0 - df.loc[i, "trial_correct"]

    return mutate


def _export_lost_side_with_contrast(i: int) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[i, ["contrast", "position"]] = [0.5, 0.0]

    return mutate


def _export_drop_session(df: pd.DataFrame) -> None:
    sel = (df["subject"] == "A") & (df["phase"] == "endtrain") & (df["session_num"] == 22)
    df.loc[sel, ["response_choice", "trial_correct"]] = [0, 0.0]


def _export_flip(df: pd.DataFrame) -> None:
    df["response_choice"] = -df["response_choice"]


# mutation of export_table() -> (row, column, text); file rows 1..10 are A biased-2, 11..18 A endtrain-22
EXPORT_BAD = {
    "contrast_above_one": (_export_cell(4, "contrast", 1.5), 5, "contrast", "outside [0, 1]"),
    "contrast_negative": (_export_cell(4, "contrast", -0.5), 5, "contrast", "outside [0, 1]"),
    "choice_unknown": (_export_cell(6, "response_choice", 2), 7, "response_choice", "unknown choice code 2"),
    "correct_unknown": (_export_cell(6, "trial_correct", 0.5), 7, "trial_correct", "unknown code 0.5"),
    "correct_inconsistent": (_export_flip_correct(7), 8, "trial_correct", "does not match"),
    "phase_unknown": (_export_cell(12, "phase", "training"), 13, "phase", "unknown phase 'training'"),
    "position_missing": (_export_cell(3, "position", np.nan), 4, "position", "missing stimulus position"),
    "position_zero_with_contrast": (_export_lost_side_with_contrast(3), 4, "position", "contrast > 0"),
    "prob_left_out_of_range": (_export_cell(0, "stim_probability_left", -0.2), 1, "stim_probability_left", "outside"),
    "duplicated_trial": (_export_cell(14, "trial_num", 4), 15, "trial_num", "duplicated trial number 4"),
    "unordered_trial": (_export_cell(14, "trial_num", 3), 15, "trial_num", "out of order"),
    "session_num_bad": (_export_cell(14, "session_num", 0), 15, "session_num", "positive integer"),
    "empty_session": (_export_drop_session, 11, "session_num", "no usable trials"),
    "flipped": (_export_flip, 1, "response_choice", "flipped"),
}


@pytest.mark.parametrize("case", list(EXPORT_BAD), ids=list(EXPORT_BAD))
def test_export_bad_values_are_located(tmp_path, case):
    mutate, row, column, text = EXPORT_BAD[case]
    raw = export_table(seed=1)
    mutate(raw)
    path = tmp_path / "export.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(TrialDataError) as info:
        read_ibl_export(path)
    assert_located(info.value, path, row, column)
    assert text in str(info.value)


def test_export_missing_columns(tmp_path):
    path = tmp_path / "export.csv"
    export_table().drop(columns=["position", "trial_correct"]).to_csv(path, index=False)
    with pytest.raises(TrialDataError) as info:
        read_ibl_export(path)
    assert_located(info.value, path, None, "position")
    assert "'trial_correct'" in str(info.value)


def test_shared_data_dir_env(tmp_path, monkeypatch):
    (tmp_path / "ibl").mkdir()
    monkeypatch.setenv("TWIN_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    assert default_export_path() == tmp_path / "ibl" / EXPORT_FILENAME
    monkeypatch.setenv("TWIN_SHARED_DATA", str(tmp_path / "missing"))
    try:
        found = shared_data_dir()
    except FileNotFoundError as exc:
        assert "TWIN_SHARED_DATA" in str(exc)
    else:
        assert found == Path(__file__).resolve().parents[3].parent / "shared" / "data"


# --------------------------------------------------------------------------------------------
# the real 53-mouse export


def _real_export_path() -> Path | None:
    try:
        path = default_export_path()
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


REAL = _real_export_path()
needs_real = pytest.mark.skipif(
    REAL is None, reason=f"shared IBL export {EXPORT_FILENAME} not found (set TWIN_SHARED_DATA to the shared data folder)"
)


@pytest.fixture(scope="module")
def real():
    t0 = time.perf_counter()
    df, rep = read_ibl_export()
    seconds = time.perf_counter() - t0
    raw = pd.read_csv(
        REAL,
        engine="pyarrow",
        usecols=["subject", "phase", "session_num", "position", "response_choice", "trial_correct", "contrast"],
    )
    return df, rep, raw, seconds


@needs_real
def test_real_loads(real):
    df, rep, raw, seconds = real
    print(f"real export loaded in {seconds:.1f} s")
    assert seconds < 60  # ~5 s here; generous for a busy machine
    assert df["subject"].nunique() == 53
    assert len(rep.n_nogo_dropped) == 53
    assert rep.n_rows == len(raw) == 1_390_888
    assert rep.total_nogo_dropped == 4_779  # the README's count, none kept
    assert len(df) == 1_390_888 - 4_779
    assert set(df["choice"].unique()) == {0, 1}
    # every subject: endtrain sessions first, then biased, numbered 1..n
    first = df.groupby(["subject", "session"])["session_label"].first().reset_index()
    for _, g in first.groupby("subject"):
        assert g["session"].tolist() == list(range(1, len(g) + 1))
        phases = g["session_label"].str.split("-").str[0].tolist()
        assert phases == sorted(phases, key=["endtrain", "biased"].index)
    assert first["session_label"].str.startswith("endtrain-").sum() == 159
    assert len(first) == 159 + 1_639


@needs_real
def test_real_sign_convention(real):
    df, _, _, _ = real
    shown = (df["contrast_left"] + df["contrast_right"]) > 0
    correct = df["choice"] == df["correct_side"]
    assert (correct[shown] == (df["feedback"][shown] == 1)).all()
    assert (df["correct_side"][df["contrast_right"] > 0] == 1).all()
    assert (df["correct_side"][df["contrast_left"] > 0] == 0).all()
    full = (df["contrast_left"] == 1) | (df["contrast_right"] == 1)
    accuracy = (df["feedback"][full] == 1).mean()
    assert accuracy > 0.9, accuracy  # trained mice


@needs_real
def test_real_rows_match_raw_file(real):
    """Canonical rows are the raw go trials, reordered endtrain-then-biased per subject."""
    df, _, raw, _ = real
    order = np.lexsort(
        (
            np.arange(len(raw)),
            raw["session_num"].to_numpy(),
            (raw["phase"] == "biased").to_numpy(),
            pd.factorize(raw["subject"])[0],
        )
    )
    r = raw.iloc[order]
    # the README's 1,100 side-lost (position 0) trials are all zero-contrast and, in this file,
    # all no-go: none survive, so the trial_correct rule for them is pinned on synthetic data
    # (test_export_mapping_and_order) and here only checked to hold vacuously
    lost_raw = r["position"] == 0
    assert lost_raw.sum() == 1_100
    assert (r["contrast"][lost_raw] == 0).all()
    assert (r["response_choice"][lost_raw] == 0).all()
    r = r[r["response_choice"] != 0]
    np.testing.assert_array_equal(df["choice"], (r["response_choice"] == 1).astype(int))
    lost = (r["position"] == 0).to_numpy()
    choice = df["choice"].to_numpy()
    rewarded = np.where(r["trial_correct"].to_numpy() == 1, choice, 1 - choice)
    np.testing.assert_array_equal(df["correct_side"].to_numpy()[lost], rewarded[lost])
    np.testing.assert_array_equal(df["correct_side"].to_numpy()[~lost], (r["position"].to_numpy()[~lost] > 0).astype(int))
    np.testing.assert_array_equal(df["feedback"], np.where(r["trial_correct"] == 1, 1, -1))
