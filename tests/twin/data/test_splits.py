"""Splitting trials for (cross-)validation: held-out animals, held-out sessions."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from trial_tables import random_trials_table

from twin.data.batch import make_batch
from twin.data.splits import AnimalSplit, split_animals, split_sessions
from twin.errors import TwinError


#: sessions per animal: a has 4, b 3, c 5.
SESSION_LENGTHS = {"a": [10, 8, 6, 7], "b": [5, 9, 4], "c": [6, 6, 6, 6, 3]}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Three animals' random trials (the sessions of :data:`SESSION_LENGTHS`)."""
    return random_trials_table(SESSION_LENGTHS, 3, contrasts=(0.0, 0.125, 0.5, 1.0))


# --------------------------------------------------------------------------------------------
# held-out animals


@pytest.mark.parametrize("n, n_test, val_fraction", [(10, 3, 0.2), (20, 5, 0.0), (7, 2, 0.5), (4, 1, 0.01)])
def test_split_animals_is_disjoint_complete_and_seeded(n, n_test, val_fraction):
    s = split_animals(n, n_test, val_fraction, seed=4)
    assert isinstance(s, AnimalSplit)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert set().union(*parts) == set(range(n))
    assert sum(len(p) for p in parts) == n
    assert len(s.test) == n_test
    if val_fraction == 0:
        assert s.val == ()
    else:
        assert len(s.val) == max(1, round(val_fraction * (n - n_test)))
    assert len(s.train) >= 1
    for part in (s.train, s.val, s.test):
        assert list(part) == sorted(part)
    assert split_animals(n, n_test, val_fraction, seed=4) == s


def test_split_animals_depends_on_the_seed():
    splits = {split_animals(20, 5, 0.2, seed=k).test for k in range(5)}
    assert len(splits) > 1


@pytest.mark.parametrize("n, n_test, val_fraction", [(5, 0, 0.2), (5, 5, 0.2), (3, 1, 0.9), (2, 1, 0.5)])
def test_split_animals_errors(n, n_test, val_fraction):
    with pytest.raises(ValueError):
        split_animals(n, n_test, val_fraction, seed=0)


# --------------------------------------------------------------------------------------------
# held-out future sessions


def test_split_sessions(table):
    batch = make_batch(table)
    k = 2
    sp = split_sessions(batch, k)
    # train: sessions 1..k-1, trimmed, every remaining trial scored
    assert sp.train.lengths.tolist() == [10, 5, 6]
    assert int(sp.train.session[sp.train.valid].max()) == k - 1
    assert torch.equal(sp.train.mask, sp.train.valid)
    # val: runs through 1..k, scores session k only
    assert sp.val.lengths.tolist() == [18, 14, 12]
    assert torch.equal(sp.val.mask, (sp.val.session == k) & sp.val.valid)
    assert sp.val.mask.sum(1).tolist() == [8, 9, 6]
    # test: every trial, scores only sessions after k
    assert sp.test.n_trials == batch.n_trials and torch.equal(sp.test.valid, batch.valid)
    assert torch.equal(sp.test.mask, (batch.session > k) & batch.valid)
    assert sp.test.mask.sum(1).tolist() == [13, 4, 15]
    # the three never score the same trial twice and the scored trials are in order
    assert not (sp.val.mask & sp.test.mask[:, : sp.val.n_trials]).any()


def test_split_sessions_needs_enough_sessions(table):
    batch = make_batch(table)
    split_sessions(batch, 2)  # b has 3 sessions: fine
    with pytest.raises(ValueError, match="'b'"):
        split_sessions(batch, 3)  # b has no session after 3
    with pytest.raises(ValueError, match="k >= 2"):
        split_sessions(batch, 1)
    with pytest.raises(ValueError):
        split_sessions(batch.select([0, 2]), 4)  # a has only 4
    assert split_sessions(batch.select([0, 2]), 3).test.mask.sum().item() == 7 + 9


# --------------------------------------------------------------------------------------------
# the last sessions, for early stopping


def test_split_last_sessions(table):
    from twin.data.splits import split_last_sessions

    batch = make_batch(table)
    train, val = split_last_sessions(batch)
    last = batch.session.max(1).values
    assert torch.equal(torch.where(train.valid, train.session, 0).max(1).values, last - 1)
    assert torch.equal(val.mask, (batch.session == last[:, None]) & batch.valid)
    with pytest.raises(TwinError, match="more than 3 session"):
        split_last_sessions(batch, 3)


# --------------------------------------------------------------------------------------------
# sessions named by the data's own labels


def test_sessions_from_label_exact_numeric_and_dates():
    from twin.data.splits import sessions_from_label

    df = random_trials_table({"a": [3, 3, 3], "b": [3, 3]}, seed=0)
    labels = {("a", 1): "0", ("a", 2): "1", ("a", 3): "2", ("b", 1): "0", ("b", 2): "3"}
    df["session_label"] = [labels[(s, n)] for s, n in zip(df["subject"], df["session"])]
    got = sessions_from_label(df, "1")
    assert got.first == {"a": 2, "b": 2}  # b has no session 1: its next numbered one, 3
    assert got.labels == {"a": "1", "b": "3"} and got.missing == ()
    assert sessions_from_label(df, "3").missing == ("a",)
    batch = make_batch(df)
    mask = batch.sessions_mask(got.first_index(batch.subjects))
    assert int(mask.sum()) == int((df["session"] >= 2).sum())
    dated = df.assign(session_label=df["session"].map({1: "2024-01-01/000", 2: "2024-01-02/000", 3: "2024-01-05/001"}))
    assert sessions_from_label(dated, "2024-01-03").first == {"a": 3}
    with pytest.raises(TwinError, match="no session labelled 'endtrain-1'.*2024-01-01/000"):
        sessions_from_label(dated, "endtrain-1")
