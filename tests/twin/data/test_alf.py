"""ALF session folders: both layouts (table.pqt + separate npy, npy only), discovery and order,
duplicates and gaps reported, errors that name the file, the ONE cache read as folders (through
ONE itself: ``test_one.py``), and load_trials on a folder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.data.alf import read_alf_dir, read_one_cache
from twin.errors import OptionalDependencyError
from twin.data.alf_sessions import AlfIngestReport, AlfLayout, DuplicatePolicy, find_sessions
from twin.data.readers import load_trials
from twin.errors import TrialDataError

# --------------------------------------------------------------------------------------------
# helpers: realistic IBL trials datasets


def ibl_trials(n: int = 30, seed: int = 0, nogo: tuple[int, ...] = (4,)) -> dict[str, np.ndarray]:
    """One session's trials attributes as IBL stores them: NaN contrast on the unused side,
    ``choice`` -1 = right response, +1 = left, 0 = no-go (with feedback -1)."""
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)  # 1 = right
    contrast = rng.choice([1.0, 0.5, 0.25, 0.125, 0.0625, 0.0], n)
    correct = (rng.random(n) < 0.8) | (np.arange(n) % 4 == 0)
    choice01 = np.where(correct, side, 1 - side)
    choice = np.where(choice01 == 1, -1.0, 1.0)
    feedback = np.where(correct, 1.0, -1.0)
    choice[list(nogo)] = 0.0
    feedback[list(nogo)] = -1.0
    start = np.cumsum(rng.uniform(3, 8, n)) + 10.0
    stim_on = start + 0.1
    first_move = stim_on + rng.uniform(0.15, 1.5, n)
    return {
        "contrastLeft": np.where(side == 0, contrast, np.nan),
        "contrastRight": np.where(side == 1, contrast, np.nan),
        "choice": choice,
        "feedbackType": feedback,
        "probabilityLeft": np.full(n, 0.5),
        "rewardVolume": np.where(correct, 3.0, 0.0),
        "stimOn_times": stim_on,
        "firstMovement_times": first_move,
        "goCue_times": stim_on + 0.01,
        "response_times": first_move + 0.2,
        "feedback_times": first_move + 0.25,
        "intervals": np.stack([start, start + 6.0], 1),
    }


def write_npy_session(folder: Path, attrs: dict[str, np.ndarray], namespace: str = "_ibl_") -> Path:
    """Separate ``_ibl_trials.<attribute>.npy`` files."""
    alf = folder / "alf"
    alf.mkdir(parents=True, exist_ok=True)
    for name, arr in attrs.items():
        np.save(alf / f"{namespace}trials.{name}.npy", arr)
    return folder


def write_table_session(folder: Path, attrs: dict[str, np.ndarray], separate: tuple[str, ...] = ("stimOn_times",)) -> Path:
    """IBL's layout: ``_ibl_trials.table.pqt`` without the attributes kept in separate files."""
    alf = folder / "alf"
    alf.mkdir(parents=True, exist_ok=True)
    cols: dict[str, np.ndarray] = {}
    for name, arr in attrs.items():
        if name in separate:
            np.save(alf / f"_ibl_trials.{name}.npy", arr)
        elif arr.ndim == 2:
            cols[f"{name}_0"], cols[f"{name}_1"] = arr[:, 0], arr[:, 1]
        else:
            cols[name] = arr
    pd.DataFrame(cols).to_parquet(alf / "_ibl_trials.table.pqt", index=False)
    return folder


def session_dir(root: Path, subject: str, date: str, number: int, lab: str | None = "cortexlab") -> Path:
    base = root / lab / "Subjects" if lab else root
    return base / subject / date / f"{number:03d}"


def expected(attrs: dict[str, np.ndarray]) -> pd.DataFrame:
    """Canonical rows by hand (no-go dropped; -1 = right)."""
    go = attrs["choice"] != 0
    cl = np.nan_to_num(attrs["contrastLeft"])[go]
    cr = np.nan_to_num(attrs["contrastRight"])[go]
    choice = (attrs["choice"][go] == -1).astype(int)
    side = (~np.isnan(attrs["contrastRight"][go])).astype(int)
    return pd.DataFrame({"contrast_left": cl, "contrast_right": cr, "choice": choice, "correct_side": side})


def assert_located(exc: TrialDataError, source: Path, row: int | None = None, column: str | None = None) -> None:
    assert exc.source == str(source), (exc.source, source)
    assert exc.row == row
    assert exc.column == column


# --------------------------------------------------------------------------------------------
# one session, both layouts


@pytest.mark.parametrize("layout", ["npy", "table"])
def test_one_session_mapping(tmp_path, layout):
    attrs = ibl_trials(30, seed=1, nogo=(0, 7))
    folder = session_dir(tmp_path, "KS014", "2019-12-03", 1)
    (write_npy_session if layout == "npy" else write_table_session)(folder, attrs)
    df, rep = read_alf_dir(tmp_path)
    assert isinstance(rep, AlfIngestReport)
    assert len(df) == 28 and rep.n_rows == 30 and rep.n_nogo_dropped == {"KS014": 2}
    exp = expected(attrs)
    for col in exp.columns:
        np.testing.assert_array_equal(df[col].to_numpy(), exp[col].to_numpy(), err_msg=col)
    # ALF -1 is a right response: a rewarded trial has the choice on the stimulus side
    assert ((df["choice"] == df["correct_side"]) == (df["feedback"] == 1)).all()
    assert (df["subject"] == "KS014").all() and (df["session"] == 1).all()
    assert df["trial"].tolist() == list(range(1, 29))
    assert (df["session_label"] == "2019-12-03/001").all()
    # stimOn_times is a separate file in the table layout too: merged, so the reaction time exists
    go = attrs["choice"] != 0
    rt = (attrs["firstMovement_times"] - attrs["stimOn_times"])[go]
    np.testing.assert_allclose(df["reaction_time"].to_numpy(), rt)
    (record,) = rep.sessions
    assert record.layout is (AlfLayout.NPY if layout == "npy" else AlfLayout.TABLE_AND_NPY)
    assert record.n_rows == 30 and record.n_nogo == 2 and record.index == 1
    assert record.session.lab == "cortexlab" and record.session.number == 1
    assert rep.duplicates == () and rep.gaps == () and rep.skipped == ()


def test_both_layouts_give_the_same_table(tmp_path):
    attrs = ibl_trials(40, seed=2)
    a, _ = read_alf_dir(write_npy_session(tmp_path / "a" / "M1" / "2020-01-01" / "001", attrs))
    b, rep = read_alf_dir(write_table_session(tmp_path / "b" / "M1" / "2020-01-01" / "001", attrs))
    pd.testing.assert_frame_equal(a, b)
    # table alone (every attribute in it)
    c, rep_c = read_alf_dir(write_table_session(tmp_path / "c" / "M1" / "2020-01-01" / "001", attrs, separate=()))
    pd.testing.assert_frame_equal(a, c)
    assert rep_c.sessions[0].layout is AlfLayout.TABLE


def test_single_session_folder_forms(tmp_path):
    attrs = ibl_trials(12, seed=3)
    folder = write_npy_session(session_dir(tmp_path, "NYU-11", "2020-02-01", 2, lab=None), attrs)
    for root in (folder, folder / "alf"):
        df, rep = read_alf_dir(root)
        assert (df["subject"] == "NYU-11").all() and rep.sessions[0].session.label == "2020-02-01/002"
    bare = write_npy_session(tmp_path / "bare_session", attrs)
    with pytest.raises(TrialDataError, match="subject="):
        read_alf_dir(bare)
    df, _ = read_alf_dir(bare, subject="M7")
    assert (df["subject"] == "M7").all() and (df["session_label"] == "bare_session").all()
    with pytest.raises(TrialDataError, match="belongs to subject 'NYU-11'"):
        read_alf_dir(folder, subject="other")


def test_alf_names_without_namespace_with_extra_parts_and_revisions(tmp_path):
    attrs = ibl_trials(15, seed=4)
    folder = session_dir(tmp_path, "M1", "2020-01-01", 1)
    alf = folder / "alf"
    alf.mkdir(parents=True)
    for i, (name, arr) in enumerate(attrs.items()):
        fname = f"trials.{name}.npy" if i % 3 == 0 else f"_ibl_trials.{name}.2f1a3c4e-aaaa-bbbb-cccc-0123456789ab.npy"
        np.save(alf / fname, arr)
    # a newer revision of one attribute wins over the unrevisioned file
    newer = attrs["probabilityLeft"].copy()
    newer[:] = 0.8
    (alf / "#2021-05-01#").mkdir()
    np.save(alf / "#2021-05-01#" / "_ibl_trials.probabilityLeft.npy", newer)
    # other objects and unknown files are ignored
    np.save(alf / "_ibl_wheel.position.npy", np.arange(100.0))
    (alf / "notes.txt").write_text("hello")
    df, rep = read_alf_dir(tmp_path)
    assert len(df) == 14
    assert (df["prob_left"] == 0.8).all()
    assert alf / "#2021-05-01#" / "_ibl_trials.probabilityLeft.npy" in rep.sessions[0].files


def test_single_task_collection(tmp_path):
    folder = session_dir(tmp_path, "M1", "2023-03-01", 1)
    write_npy_session(folder / "alf" / "task_00", ibl_trials(10, seed=5))
    # write_npy_session adds its own alf/: move the files up one level into alf/task_00
    src = folder / "alf" / "task_00" / "alf"
    for f in src.iterdir():
        f.rename(folder / "alf" / "task_00" / f.name)
    src.rmdir()
    df, _ = read_alf_dir(tmp_path)
    assert len(df) == 9


# --------------------------------------------------------------------------------------------
# discovery, order, duplicates, gaps


def build_tree(root: Path) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """Two subjects in two labs; folders created out of date order; both layouts mixed."""
    spec = [
        ("KS014", "2019-12-05", 1, "cortexlab"),
        ("KS014", "2019-12-03", 2, "cortexlab"),
        ("KS014", "2019-12-03", 1, "cortexlab"),
        ("KS014", "2019-12-10", 1, "cortexlab"),  # days without sessions in between: fine
        ("CSHL_002", "2020-02-01", 1, "churchlandlab"),
        ("CSHL_002", "2020-01-31", 1, "churchlandlab"),
    ]
    out = {}
    for k, (subj, date, num, lab) in enumerate(spec):
        attrs = ibl_trials(10 + k, seed=10 + k)
        writer = write_npy_session if k % 2 else write_table_session
        writer(session_dir(root, subj, date, num, lab), attrs)
        out[(subj, date, num)] = attrs
    return out


def test_discovery_orders_by_date_then_number(tmp_path):
    made = build_tree(tmp_path)
    sessions = find_sessions(tmp_path)
    keys = [(s.subject, s.date, s.number) for s in sessions]
    assert keys == [
        ("CSHL_002", "2020-01-31", 1),
        ("CSHL_002", "2020-02-01", 1),
        ("KS014", "2019-12-03", 1),
        ("KS014", "2019-12-03", 2),
        ("KS014", "2019-12-05", 1),
        ("KS014", "2019-12-10", 1),
    ]
    df, rep = read_alf_dir(tmp_path)
    labels = df.groupby(["subject", "session"], sort=False)["session_label"].first()
    assert list(labels.items()) == [
        (("CSHL_002", 1), "2020-01-31/001"),
        (("CSHL_002", 2), "2020-02-01/001"),
        (("KS014", 1), "2019-12-03/001"),
        (("KS014", 2), "2019-12-03/002"),
        (("KS014", 3), "2019-12-05/001"),
        (("KS014", 4), "2019-12-10/001"),
    ]
    # each session's rows are that folder's trials
    for (subj, sess), label in labels.items():
        date, num = label.split("/")
        part = df[(df["subject"] == subj) & (df["session"] == sess)]
        exp = expected(made[(subj, date, int(num))])
        np.testing.assert_array_equal(part["choice"].to_numpy(), exp["choice"].to_numpy())
    assert rep.gaps == () and rep.duplicates == ()
    assert [r.index for r in rep.sessions] == [1, 2, 1, 2, 3, 4]
    assert "6 session(s) of 2 subject(s)" in rep.summary()
    # one subject only
    only, rep1 = read_alf_dir(tmp_path, subject="KS014")
    assert set(only["subject"]) == {"KS014"} and len(rep1.sessions) == 4
    with pytest.raises(TrialDataError, match=r"no sessions of subject 'nobody'; subjects found: \['CSHL_002', 'KS014'\]"):
        read_alf_dir(tmp_path, subject="nobody")


def test_subject_date_number_layout_without_lab(tmp_path):
    for k, (date, num) in enumerate([("2020-03-02", 1), ("2020-03-01", 1)]):
        write_npy_session(session_dir(tmp_path, "SWC_023", date, num, lab=None), ibl_trials(10, seed=k))
    df, rep = read_alf_dir(tmp_path)
    assert df.groupby("session")["session_label"].first().tolist() == ["2020-03-01/001", "2020-03-02/001"]
    assert all(r.session.lab is None for r in rep.sessions)


def test_gaps_are_reported(tmp_path):
    for k, (date, num) in enumerate([("2020-01-01", 1), ("2020-01-01", 3), ("2020-01-02", 2), ("2020-01-05", 1)]):
        write_npy_session(session_dir(tmp_path, "M1", date, num), ibl_trials(10, seed=k))
    df, rep = read_alf_dir(tmp_path)
    assert df["session"].max() == 4  # nothing is invented for the gaps
    assert [(g.subject, g.date, g.missing) for g in rep.gaps] == [("M1", "2020-01-01", (2,)), ("M1", "2020-01-02", (1,))]
    assert any("2020-01-01 has no session 002" in line for line in rep.problems())


def test_same_session_twice_is_reported_not_merged(tmp_path):
    attrs = ibl_trials(20, seed=7)
    a = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1, lab="labA"), attrs)
    b = write_table_session(session_dir(tmp_path, "M1", "2020-01-01", 1, lab="labB"), attrs)
    write_npy_session(session_dir(tmp_path, "M1", "2020-01-02", 1, lab="labA"), ibl_trials(20, seed=8))
    df, rep = read_alf_dir(tmp_path)
    assert df["session"].max() == 2 and len(df) == 2 * 19
    (dup,) = rep.duplicates
    assert dup.same_key and dup.identical and dup.paths == (a, b) and dup.kept == (a,)
    assert "duplicate session of M1" in rep.problems()[0]
    every, rep_all = read_alf_dir(tmp_path, duplicates=DuplicatePolicy.KEEP_ALL)
    assert every["session"].max() == 3 and rep_all.duplicates[0].kept == (a, b)
    with pytest.raises(TrialDataError, match="found 2 times") as ei:
        read_alf_dir(tmp_path, duplicates=DuplicatePolicy.ERROR)
    assert ei.value.source == str(b)


def test_same_key_different_trials_needs_a_decision(tmp_path):
    a = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1, lab="labA"), ibl_trials(20, seed=1))
    b = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1, lab="labB"), ibl_trials(20, seed=2))
    with pytest.raises(TrialDataError, match="different trials.*KEEP_ALL"):
        read_alf_dir(tmp_path)
    df, rep = read_alf_dir(tmp_path, duplicates=DuplicatePolicy.KEEP_ALL)
    assert df["session"].max() == 2
    (dup,) = rep.duplicates
    assert not dup.identical and dup.kept == (a, b)


def test_copied_folder_is_reported(tmp_path):
    attrs = ibl_trials(25, seed=9)
    first = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    copy = write_table_session(session_dir(tmp_path, "M1", "2020-01-03", 1), attrs)
    write_npy_session(session_dir(tmp_path, "M1", "2020-01-02", 1), ibl_trials(25, seed=10))
    df, rep = read_alf_dir(tmp_path)
    assert df.groupby("session")["session_label"].first().tolist() == ["2020-01-01/001", "2020-01-02/001"]
    (dup,) = rep.duplicates
    assert not dup.same_key and dup.identical and dup.paths == (first, copy) and dup.kept == (first,)
    with pytest.raises(TrialDataError, match="identical trials"):
        read_alf_dir(tmp_path, duplicates=DuplicatePolicy.ERROR)


def test_symlinked_session_is_a_duplicate_and_link_loops_end(tmp_path):
    attrs = ibl_trials(12, seed=11)
    real = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1, lab="labA"), attrs)
    link = session_dir(tmp_path, "M1", "2020-01-01", 1, lab="labB")
    link.parent.mkdir(parents=True)
    link.symlink_to(real, target_is_directory=True)
    (tmp_path / "labA" / "loop").symlink_to(tmp_path, target_is_directory=True)
    df, rep = read_alf_dir(tmp_path)
    assert df["session"].max() == 1
    assert rep.duplicates[0].paths == (real, link)


# --------------------------------------------------------------------------------------------
# errors name the folder or file


def test_folder_without_trials_datasets(tmp_path):
    folder = session_dir(tmp_path, "M1", "2020-01-01", 1)
    (folder / "alf").mkdir(parents=True)
    np.save(folder / "alf" / "_ibl_wheel.position.npy", np.arange(5.0))
    with pytest.raises(TrialDataError, match="no trials datasets") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf")
    (folder / "alf" / "_ibl_wheel.position.npy").unlink()
    (folder / "alf").rmdir()
    with pytest.raises(TrialDataError, match="no alf folder") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder)


def test_no_session_folders(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(TrialDataError, match="no ALF session folders"):
        read_alf_dir(tmp_path)
    with pytest.raises(TrialDataError, match="no such folder"):
        read_alf_dir(tmp_path / "absent")


def test_unequal_lengths_name_the_file(tmp_path):
    attrs = ibl_trials(20, seed=1)
    attrs["feedbackType"] = attrs["feedbackType"][:18]
    folder = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    with pytest.raises(TrialDataError, match="'feedbackType' has 18 entries but the other trials datasets have 20") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf" / "_ibl_trials.feedbackType.npy", column="feedbackType")


def test_separate_file_shorter_than_the_table(tmp_path):
    attrs = ibl_trials(20, seed=1)
    folder = write_table_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    np.save(folder / "alf" / "_ibl_trials.stimOn_times.npy", attrs["stimOn_times"][:-1])
    with pytest.raises(TrialDataError, match="has 19 entries but _ibl_trials.table.pqt has 20") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf" / "_ibl_trials.stimOn_times.npy", column="stimOn_times")


def test_table_and_file_disagree(tmp_path):
    attrs = ibl_trials(20, seed=1)
    folder = write_table_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    np.save(folder / "alf" / "_ibl_trials.choice.npy", -attrs["choice"])
    with pytest.raises(TrialDataError, match="disagrees with column 'choice' of _ibl_trials.table.pqt") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf" / "_ibl_trials.choice.npy", column="choice")


def test_missing_required_attribute(tmp_path):
    attrs = ibl_trials(20, seed=1)
    del attrs["probabilityLeft"]
    folder = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    with pytest.raises(TrialDataError, match=r"missing required trials attribute\(s\) \['probabilityLeft'\]") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf", column="probabilityLeft")


def test_unreadable_and_pickled_arrays_are_refused(tmp_path):
    attrs = ibl_trials(20, seed=1)
    folder = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    bad = folder / "alf" / "_ibl_trials.choice.npy"
    bad.write_bytes(b"this is not an npy file")
    with pytest.raises(TrialDataError, match="cannot read the array") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, bad)
    np.save(bad, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(TrialDataError, match="unpickling it, which is refused") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, bad)


def test_two_files_for_one_attribute(tmp_path):
    attrs = ibl_trials(20, seed=1)
    folder = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    np.save(folder / "alf" / "trials.choice.npy", attrs["choice"])
    with pytest.raises(TrialDataError, match="several files hold trials attribute 'choice'") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf")


@pytest.mark.parametrize("layout", ["npy", "table"])
def test_bad_value_names_file_trial_and_attribute(tmp_path, layout):
    attrs = ibl_trials(20, seed=1, nogo=())
    attrs["choice"][6] = 2.0
    folder = session_dir(tmp_path, "M1", "2020-01-01", 1)
    (write_npy_session if layout == "npy" else write_table_session)(folder, attrs)
    with pytest.raises(TrialDataError, match="unknown choice code 2") as ei:
        read_alf_dir(tmp_path)
    file = "_ibl_trials.choice.npy" if layout == "npy" else "_ibl_trials.table.pqt"
    assert_located(ei.value, folder / "alf" / file, row=7, column="choice")


def test_contrast_out_of_range_in_the_table(tmp_path):
    attrs = ibl_trials(20, seed=1, nogo=())
    side_left = np.flatnonzero(~np.isnan(attrs["contrastLeft"]))[0]
    attrs["contrastLeft"][side_left] = 1.5
    folder = write_table_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    with pytest.raises(TrialDataError, match=r"outside \[0, 1\]") as ei:
        read_alf_dir(tmp_path)
    assert_located(ei.value, folder / "alf" / "_ibl_trials.table.pqt", row=int(side_left) + 1, column="contrastLeft")


def test_flipped_choice_sign_is_caught(tmp_path):
    attrs = ibl_trials(40, seed=1, nogo=())
    attrs["choice"] = -attrs["choice"]  # +1 = right: the wrong convention
    folder = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    with pytest.raises(TrialDataError, match="looks flipped") as ei:
        read_alf_dir(tmp_path)
    assert ei.value.source == str(folder / "alf" / "_ibl_trials.choice.npy")


def test_session_of_only_nogo_trials(tmp_path):
    attrs = ibl_trials(5, seed=1, nogo=(0, 1, 2, 3, 4))
    folder = write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), attrs)
    with pytest.raises(TrialDataError, match="has no usable trials") as ei:
        read_alf_dir(tmp_path)
    assert ei.value.source == str(folder / "alf")


def test_skip_invalid_reports_and_goes_on(tmp_path):
    write_npy_session(session_dir(tmp_path, "M1", "2020-01-01", 1), ibl_trials(10, seed=1))
    bad = session_dir(tmp_path, "M1", "2020-01-02", 1)
    (bad / "alf").mkdir(parents=True)
    bad_value = ibl_trials(10, seed=2, nogo=())
    bad_value["feedbackType"][3] = 5.0
    write_npy_session(session_dir(tmp_path, "M1", "2020-01-03", 1), bad_value)
    write_npy_session(session_dir(tmp_path, "M1", "2020-01-04", 1), ibl_trials(10, seed=3))
    df, rep = read_alf_dir(tmp_path, skip_invalid=True)
    assert df.groupby("session")["session_label"].first().tolist() == ["2020-01-01/001", "2020-01-04/001"]
    assert [s.path for s in rep.skipped] == [bad, session_dir(tmp_path, "M1", "2020-01-03", 1)]
    assert "no trials datasets" in rep.skipped[0].reason and "feedbackType" in rep.skipped[1].reason
    assert "2 skipped" in rep.summary()


# --------------------------------------------------------------------------------------------
# ONE cache


def one_cache(root: Path) -> Path:
    """A ONE local cache on disk: cache tables at the top, ALF session folders below."""
    build_tree(root)
    pd.DataFrame({"id": ["x"], "subject": ["KS014"]}).to_parquet(root / "sessions.pqt")
    pd.DataFrame({"id": ["y"], "rel_path": ["alf/_ibl_trials.table.pqt"]}).to_parquet(root / "datasets.pqt")
    (root / "cache_info.json").write_text("{}")
    return root


def test_one_cache_read_as_folders(tmp_path):
    cache = one_cache(tmp_path)
    df, rep = read_alf_dir(cache)
    assert df.groupby("subject")["session"].max().to_dict() == {"CSHL_002": 2, "KS014": 4}
    df2, _ = load_trials(cache)
    pd.testing.assert_frame_equal(df, df2)


def test_read_one_cache_without_one_api(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "one", None)  # import one... -> ImportError
    monkeypatch.setitem(sys.modules, "one.api", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install 'learning-twins\[one\]'.*read_alf_dir"):
        read_one_cache(tmp_path)


# --------------------------------------------------------------------------------------------
# load_trials


def test_load_trials_dispatches_folders_and_keeps_files(tmp_path):
    build_tree(tmp_path / "tree")
    df, rep = load_trials(tmp_path / "tree")
    assert isinstance(rep, AlfIngestReport) and df["subject"].nunique() == 2
    # an aggregated ALF CSV still goes through read_alf_trials
    attrs = ibl_trials(15, seed=1)
    table = pd.DataFrame({k: v for k, v in attrs.items() if v.ndim == 1})
    table.insert(0, "session_start_time", "2020-01-01T10:00:00")
    table.insert(0, "eid", "e1")
    table.insert(0, "subject", "M1")
    path = tmp_path / "trials.csv"
    table.to_csv(path, index=False)
    csv_df, csv_rep = load_trials(path)
    assert len(csv_df) == 14 and not isinstance(csv_rep, AlfIngestReport)
    folder_df, _ = read_alf_dir(write_npy_session(session_dir(tmp_path / "one", "M1", "2020-01-01", 1), attrs))
    cols = ["contrast_left", "contrast_right", "choice", "feedback", "correct_side", "prob_left"]
    pd.testing.assert_frame_equal(csv_df[cols], folder_df[cols])
