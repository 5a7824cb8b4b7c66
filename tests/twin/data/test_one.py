"""ONE local caches read through the real ONE-api (and the same folders without it): task
collections (``alf/task_NN``, what current iblrig writes), revisions (``alf/#YYYY-MM-DD#/``),
subject and date selection, and the CLI's ``--one-cache``. The tests build a small cache with
``one.alf.cache.make_parquet_db``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.twin.data.test_alf import ibl_trials, session_dir, write_npy_session
from twin.data.alf import read_alf_dir, read_one_cache
from twin.errors import TrialDataError

pytest.importorskip("one.api")
from one.alf.cache import make_parquet_db  # noqa: E402


def write_collection(session: Path, collection: str, attrs: dict[str, np.ndarray]) -> None:
    """Trials datasets in ``<session>/<collection>`` (e.g. ``alf/task_00/#2024-05-01#``)."""
    folder = session / collection
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in attrs.items():
        np.save(folder / f"_ibl_trials.{name}.npy", arr)


def build_cache(root: Path) -> Path:
    """M1: 2024-01-02/000 in alf/task_00 (30 trials) with a revision of 24 trials; 2024-01-03/001
    in alf/ (20 trials). M2: 2024-01-04/000 with trials in alf/task_00 (15) and alf/task_01 (12)."""
    s1 = session_dir(root, "M1", "2024-01-02", 0, lab="mainlab")
    write_collection(s1, "alf/task_00", ibl_trials(30, seed=1))
    write_collection(s1, "alf/task_00/#2024-05-01#", ibl_trials(24, seed=2))
    write_npy_session(session_dir(root, "M1", "2024-01-03", 1, lab="mainlab"), ibl_trials(20, seed=3))
    s3 = session_dir(root, "M2", "2024-01-04", 0, lab="mainlab")
    write_collection(s3, "alf/task_00", ibl_trials(15, seed=4))
    write_collection(s3, "alf/task_01", ibl_trials(12, seed=5))
    make_parquet_db(root, hash_files=True)
    return root


def n_trials(df: pd.DataFrame, subject: str) -> list[int]:
    return df[df["subject"] == subject].groupby("session").size().tolist()


def test_task_collection_and_newest_revision_through_one_match_the_folders(tmp_path):
    cache = build_cache(tmp_path)
    df, rep = read_one_cache(cache, subject="M1")
    # the revision (24 trials, one no-go) wins over the unrevisioned 30; the second session is in alf/
    assert n_trials(df, "M1") == [23, 19]
    assert df["session_label"].drop_duplicates().tolist() == ["2024-01-02/000", "2024-01-03/001"]
    assert [r.session.label for r in rep.sessions] == ["2024-01-02/000", "2024-01-03/001"]
    folders, _ = read_alf_dir(cache, subject="M1")
    pd.testing.assert_frame_equal(df, folders)


def test_an_older_revision_when_asked(tmp_path):
    cache = build_cache(tmp_path)
    df, _ = read_one_cache(cache, subject="M1", revision="2024-04-01")
    assert n_trials(df, "M1") == [29, 19]  # the unrevisioned datasets: before 2024-05-01
    folders, _ = read_alf_dir(cache, subject="M1", revision="2024-04-01")
    pd.testing.assert_frame_equal(df, folders)


def test_several_task_collections_need_a_choice(tmp_path):
    cache = build_cache(tmp_path)
    with pytest.raises(TrialDataError, match=r"several task collections \['alf/task_00', 'alf/task_01'\]"):
        read_one_cache(cache, subject="M2")
    with pytest.raises(TrialDataError, match="several task collections"):
        read_alf_dir(cache, subject="M2")
    df, _ = read_one_cache(cache, subject="M2", collection="alf/task_01")
    assert n_trials(df, "M2") == [11]
    folders, _ = read_alf_dir(cache, subject="M2", collection="alf/task_01")
    pd.testing.assert_frame_equal(df, folders)
    with pytest.raises(TrialDataError, match="no trials datasets in collection 'alf/task_07'"):
        read_one_cache(cache, subject="M2", collection="alf/task_07")


def test_date_range_selects_sessions(tmp_path):
    cache = build_cache(tmp_path)
    df, _ = read_one_cache(cache, date_range=("2024-01-03", "2024-01-03"))
    assert df["session_label"].unique().tolist() == ["2024-01-03/001"]
    folders, _ = read_alf_dir(cache, date_range=("2024-01-03", "2024-01-03"))
    pd.testing.assert_frame_equal(df, folders)
    with pytest.raises(TrialDataError, match="not two YYYY-MM-DD dates"):
        read_one_cache(cache, date_range=("2024-01-05", "2024-01-03"))


def test_a_folder_without_cache_tables_is_not_a_one_cache(tmp_path):
    cache = build_cache(tmp_path / "c")
    shutil.copytree(cache / "mainlab", tmp_path / "bare" / "mainlab")
    with pytest.raises(TrialDataError, match="not a ONE cache"):
        read_one_cache(tmp_path / "bare")


def test_cli_one_cache_flags(tmp_path):
    from twin_cli.cli import build_parser
    from twin_cli.commands.common import load_trials_input

    cache = build_cache(tmp_path)
    args = build_parser().parse_args(
        ["fit", "--one-cache", str(cache), "--alf-subject", "M2", "--alf-collection", "alf/task_00", "--out", "m.safetensors"]
    )
    df, _ = load_trials_input(args)
    assert n_trials(df, "M2") == [14]
    args = build_parser().parse_args(["evaluate", "--one-cache", str(cache), "--alf-subject", "M1", "a.safetensors", "b.safetensors"])
    assert args.data is not None  # argparse gives the first model to the optional trials path...
    from twin_cli.cli import main

    # ...and evaluate takes it back as a model: the error names the first model file, not a trials file
    assert main(["evaluate", "--one-cache", str(cache), "--alf-subject", "M1", str(tmp_path / "a.safetensors")]) == 2
