"""The registry of trials layouts: detection, naming a layout, and the errors of a file no reader takes."""

from __future__ import annotations

import pandas as pd
import pytest
from trial_tables import random_trials_table

from twin.data.readers import TrialReader, detect_reader, get_reader, load_trials, reader_names, register_reader, write_trials
from twin.errors import TrialDataError


def test_builtin_layouts_in_detection_order():
    assert reader_names() == ("alf_dir", "named_stimuli", "ibl_export", "alf_table", "canonical", "one_cache")
    assert get_reader("canonical").name == "canonical"
    with pytest.raises(ValueError, match="unknown trials layout 'nope'.*canonical"):
        get_reader("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_reader(TrialReader("canonical", get_reader("alf_table").read, lambda path, cols: False))


def test_detection_by_kind_and_columns(tmp_path):
    table = random_trials_table({"a": [5, 4]}, seed=1)
    canonical = write_trials(table, tmp_path / "t.pqt")
    assert detect_reader(canonical).name == "canonical"
    assert detect_reader(tmp_path).name == "alf_dir"
    assert detect_reader(tmp_path / "x.npz").name == "named_stimuli"
    alf = tmp_path / "alf.csv"
    pd.DataFrame({"contrastLeft": [0.5], "contrastRight": [0.0], "choice": [1]}).to_csv(alf, index=False)
    assert detect_reader(alf).name == "alf_table"
    export = tmp_path / "export.csv"
    pd.DataFrame({"response_choice": [1], "position": [35], "trial_correct": [1], "contrastLeft": [0.0]}).to_csv(export, index=False)
    assert detect_reader(export).name == "ibl_export"


def test_load_trials_with_a_named_layout_equals_detection(tmp_path):
    path = write_trials(random_trials_table({"a": [5, 4], "b": [3]}, seed=2), tmp_path / "t.csv")
    named, _ = load_trials(path, layout="canonical")
    detected, report = load_trials(path)
    pd.testing.assert_frame_equal(named, detected)
    assert report.n_rows == 12


def test_errors_name_the_file(tmp_path):
    with pytest.raises(TrialDataError, match="no such file") as info:
        load_trials(tmp_path / "missing.csv")
    assert info.value.source == str(tmp_path / "missing.csv")
    odd = tmp_path / "odd.csv"
    pd.DataFrame({"foo": [1], "bar": [2]}).to_csv(odd, index=False)
    with pytest.raises(TrialDataError, match=r"unrecognised table layout.*found \['bar', 'foo'\]") as info:
        load_trials(odd)
    assert info.value.source == str(odd)


# --------------------------------------------------------------------------------------------
# the session keys and 0-based indices labs have


def _alf_rows(n: int, seed: int) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.8
    choice01 = np.where(correct, side, 1 - side)
    return pd.DataFrame({
        "contrastLeft": np.where(side == 0, 0.5, np.nan), "contrastRight": np.where(side == 1, 0.5, np.nan),
        "choice": np.where(choice01 == 1, -1.0, 1.0), "feedbackType": np.where(correct, 1.0, -1.0), "probabilityLeft": 0.5,
    })


@pytest.mark.parametrize("key", ["session_number", "number"])
def test_alf_table_keyed_by_session_number_from_zero_with_trials_from_zero(tmp_path, key):
    # written out of order: sessions come back in number order, labelled with their own numbers
    parts = [_alf_rows(10, s).assign(subject="M", **{key: s, "trial": range(10)}) for s in (1, 0, 2)]
    path = tmp_path / "alf.pqt"
    pd.concat(parts).to_parquet(path)
    df, _ = load_trials(path)
    assert df["session"].drop_duplicates().tolist() == [1, 2, 3]
    assert df["session_label"].drop_duplicates().tolist() == ["0", "1", "2"]
    assert df["trial"].min() == 1
    first = df[df["session"] == 1][["contrast_left", "contrast_right"]].reset_index(drop=True)
    expected = _alf_rows(10, 0)[["contrastLeft", "contrastRight"]].fillna(0.0)
    assert first.to_numpy().tolist() == expected.to_numpy().tolist()


def test_alf_table_keyed_by_date_and_number(tmp_path):
    parts = [
        _alf_rows(6, i).assign(subject="M", date=d, number=n, trial=range(6))
        for i, (d, n) in enumerate([("2024-01-03", 0), ("2024-01-02", 1), ("2024-01-02", 0)])
    ]
    path = tmp_path / "alf.csv"
    pd.concat(parts).to_csv(path, index=False)
    df, _ = load_trials(path)
    assert df["session_label"].drop_duplicates().tolist() == ["2024-01-02/000", "2024-01-02/001", "2024-01-03/000"]


def test_alf_trial_index_below_zero_is_still_an_error(tmp_path):
    rows = _alf_rows(4, 0).assign(subject="M", session_number=0, trial=[-1, 0, 1, 2])
    path = tmp_path / "alf.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(TrialDataError, match=r"row 1, column 'trial'.*must be an integer >= 0, got -1"):
        load_trials(path)


def test_canonical_table_counting_from_zero(tmp_path):
    df = random_trials_table({"a": [5, 4]}, seed=0)
    zero = df.assign(session=df["session"] - 1, trial=df["trial"] - 1)
    path = tmp_path / "zero.csv"
    zero.to_csv(path, index=False)
    got, _ = load_trials(path)
    assert got["session"].tolist() == df["session"].tolist() and got["trial"].tolist() == df["trial"].tolist()
    assert got["session_label"].drop_duplicates().tolist() == ["0", "1"]
