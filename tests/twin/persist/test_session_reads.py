"""Verified session reads: a stored session file that is missing, unreadable or changed since it
was stored raises StoredDataError (never a pyarrow or file error), checked against the row count
and data_hash recorded with it."""

from __future__ import annotations

import pandas as pd
import pytest

from trial_tables import random_trials_table
from twin.errors import StoredDataError
from twin.persist.sessions import SESSION_COLUMNS, SessionStore
from twin.persist.store import TwinStore


@pytest.fixture
def stored(tmp_path):
    ss = SessionStore(TwinStore(tmp_path))
    for i, label in enumerate(("2026-01-02", None)):
        ss.add_session("m1", random_trials_table({"x": [30]}, seed=i)[list(SESSION_COLUMNS)], label=label)
    files = sorted((tmp_path / "sessions").rglob("*.parquet"))
    assert len(files) == 2
    return ss, files


def test_intact_sessions_read_back_verified(stored):
    ss, _ = stored
    df = ss.trials("m1")
    assert len(df) == 60 and df["session_label"].iloc[0] == "2026-01-02"  # a label round-trips the checksum


def _garbage(path):
    path.write_bytes(b"not a parquet file at all")


def _missing(path):
    path.unlink()


def _changed(path):
    df = pd.read_parquet(path)
    df.loc[3, "prob_left"] = 0.2 if df.loc[3, "prob_left"] != 0.2 else 0.8
    df.to_parquet(path, index=False)


def _truncated(path):
    df = pd.read_parquet(path)
    df.iloc[:-1].to_parquet(path, index=False)


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "words"), [(_garbage, "unreadable"), (_missing, "missing"), (_changed, "checksum"), (_truncated, "checksum"), (_cut, "unreadable")])
def test_a_damaged_session_file_is_stored_data_error(stored, damage, words):
    ss, files = stored
    damage(files[1])
    with pytest.raises(StoredDataError, match=words) as e:
        ss.trials("m1")
    assert "stored session 2 of subject 'm1'" in str(e.value)
    assert str(files[1].parent.parent.parent) not in str(e.value)  # the store's root is not in it
    assert len(ss.trials("m1", through_session=1)) == 30  # the intact session still reads
