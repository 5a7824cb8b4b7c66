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
