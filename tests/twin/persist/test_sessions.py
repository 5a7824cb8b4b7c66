"""Stored sessions: numbering, validation with row/column, round trip, nothing half-written."""

from __future__ import annotations

import pandas as pd
import pytest

from store_backends import BACKENDS, open_store, run_concurrently
from trial_tables import random_trials_table
from twin.errors import TrialDataError
from twin.persist.sessions import SESSION_COLUMNS, SessionStore
from twin.persist.store import TwinNotFoundError, TwinStore


def one_session(n: int, seed: int) -> pd.DataFrame:
    return random_trials_table({"x": [n]}, seed=seed)[list(SESSION_COLUMNS)]


def test_sessions_are_numbered_in_upload_order_and_read_back(tmp_path):
    ss = SessionStore(TwinStore(tmp_path))
    a, b = one_session(40, 1), one_session(25, 2)
    r1 = ss.add_session("m1", a, label="2026-01-02")
    r2 = ss.add_session("m1", b)
    ss.add_session("m2", a)
    assert (r1.session, r1.n_trials, r1.label) == (1, 40, "2026-01-02")
    assert (r2.session, r2.n_trials) == (2, 25)
    assert ss.subjects() == ["m1", "m2"]
    assert [r.session for r in ss.sessions("m1")] == [1, 2]
    df = ss.trials("m1")
    assert list(df["session"].unique()) == [1, 2] and len(df) == 65
    assert (df["subject"] == "m1").all()
    assert df.groupby("session")["trial"].max().tolist() == [40, 25]
    pd.testing.assert_frame_equal(df[df.session == 2][list(SESSION_COLUMNS)].reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)
    assert len(ss.trials("m1", through_session=1)) == 40


def test_a_bad_session_names_row_and_column_and_stores_nothing(tmp_path):
    ss = SessionStore(TwinStore(tmp_path))
    bad = one_session(30, 3)
    bad.loc[7, "contrast_left"] = 1.5
    with pytest.raises(TrialDataError) as err:
        ss.add_session("m1", bad, source="upload m1")
    assert err.value.row == 8 and err.value.column == "contrast_left" and "upload m1" in str(err.value)
    with pytest.raises(TrialDataError, match="missing required column"):
        ss.add_session("m1", bad.drop(columns=["feedback"]))
    with pytest.raises(TrialDataError, match="no trials"):
        ss.add_session("m1", bad.iloc[:0])
    assert ss.sessions("m1") == [] and not (tmp_path / "sessions").exists()
    with pytest.raises(TwinNotFoundError):
        ss.trials("m1")


def test_add_table_stores_every_session_of_every_subject(tmp_path):
    ss = SessionStore(TwinStore(tmp_path))
    df = random_trials_table({"a": [10, 12, 9], "b": [15]}, seed=4)
    recs = ss.add_table(df)
    assert [(r.subject, r.session, r.n_trials) for r in recs] == [("a", 1, 10), ("a", 2, 12), ("a", 3, 9), ("b", 1, 15)]
    back = pd.concat([ss.trials("a"), ss.trials("b")], ignore_index=True)
    pd.testing.assert_frame_equal(back[df.columns], df, check_dtype=False)


def test_sessions_survive_reopening_the_store(tmp_path):
    SessionStore(TwinStore(tmp_path)).add_session("m1", one_session(20, 5))
    again = SessionStore(TwinStore(tmp_path))
    assert [r.session for r in again.sessions("m1")] == [1]
    assert again.add_session("m1", one_session(20, 6)).session == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_uploads_for_one_subject_get_distinct_numbers_and_files(tmp_path, backend):
    store = open_store(backend, tmp_path)
    ss = SessionStore(store)
    tables = [one_session(20 + i, seed=i) for i in range(8)]
    errors = run_concurrently(lambda i: ss.add_session("m1", tables[i], label=f"upload-{i}"), 8)
    assert not errors
    records = ss.sessions("m1")
    assert [r.session for r in records] == list(range(1, 9))
    # every upload's trials are stored once, under its own number; the losers' files were removed
    by_label = {r.label: r for r in records}
    df = ss.trials("m1")
    for i, table in enumerate(tables):
        rec = by_label[f"upload-{i}"]
        assert rec.n_trials == len(table)
        assert (df["session"] == rec.session).sum() == len(table)
    assert len(list((tmp_path / "sessions").rglob("*.parquet"))) == 8
    store.close()
