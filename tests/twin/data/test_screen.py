"""The compiled screen answers "valid" exactly when the NumPy checks raise nothing, and the
columns it lets through are the ones the checks return."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.data import screen as screen_mod
from twin.data.trials import TrialColumns, _SCREENED, validate_columns
from twin.errors import TrialDataError


def _valid(n: int, rng: np.random.Generator) -> TrialColumns:
    """``n`` valid trials over a few sessions."""
    session = np.sort(rng.integers(1, 4, n))
    trial = np.concatenate([np.arange(1, int((session == s).sum()) + 1) for s in np.unique(session)])
    side = rng.integers(0, 2, n)
    c = rng.choice([0.0, 0.0625, 0.125, 0.25, 1.0], n)
    choice = rng.integers(0, 2, n)
    return TrialColumns(
        session=session.astype(np.int64),
        trial=trial.astype(np.int64),
        contrast_left=np.where(side == 0, c, 0.0),
        contrast_right=np.where(side == 1, c, 0.0),
        choice=choice.astype(np.int64),
        feedback=np.where(choice == side, 1, -1).astype(np.int64),
        correct_side=side.astype(np.int64),
        prob_left=np.full(n, 0.5),
    )


#: Values that break one check or another (and some that are fine), per column.
_BAD = [np.nan, np.inf, -np.inf, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, -0.0, 3.0, 1e300]


@pytest.fixture
def compiled_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled screen on, as in a warmed-up server."""
    monkeypatch.setattr(screen_mod, "_READY", screen_mod.threading.Event())
    screen_mod.warm_up()


def _numpy_verdict(cols: TrialColumns) -> tuple[bool, TrialColumns | None]:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(screen_mod, "_READY", screen_mod.threading.Event())  # screen off: NumPy checks
        try:
            return True, validate_columns(cols)
        except TrialDataError:
            return False, None


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), edits=st.lists(st.tuples(st.sampled_from(_SCREENED), st.integers(0, 39), st.sampled_from(_BAD)), max_size=3))
def test_screen_agrees_with_the_numpy_checks(seed: int, n: int, edits: list[tuple[str, int, float]]) -> None:
    cols = _valid(n, np.random.default_rng(seed))
    arrays = {c: np.asarray(getattr(cols, c), dtype=float).copy() for c in _SCREENED}
    for col, i, value in edits:
        arrays[col][i % n] = value
    edited = dataclasses.replace(cols, **arrays)
    ok, expected = _numpy_verdict(edited)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(screen_mod, "_READY", screen_mod.threading.Event())
        screen_mod.warm_up()
        assert screen_mod.screen(*(arrays[c] for c in _SCREENED)) is ok
        if ok:
            got = validate_columns(edited)
            assert expected is not None
            for c in _SCREENED:
                a, b = getattr(got, c), getattr(expected, c)
                assert a.dtype == b.dtype and np.array_equal(a, b), c
        else:
            with pytest.raises(TrialDataError):
                validate_columns(edited)


def test_order_problems_are_caught(compiled_screen: None) -> None:
    cols = _valid(30, np.random.default_rng(1))
    for col, i, value in (("trial", 5, 0), ("session", 29, 1)):
        arrays = {c: np.asarray(getattr(cols, c), dtype=float).copy() for c in _SCREENED}
        arrays["trial"][i] = arrays["trial"][i - 1] if col == "trial" else arrays["trial"][i]
        arrays["session"][i] = value if col == "session" else arrays["session"][i]
        assert screen_mod.screen(*(arrays[c] for c in _SCREENED)) is False


def test_not_ready_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screen_mod, "_READY", screen_mod.threading.Event())
    one = np.ones(1)
    assert screen_mod.screen(one, one, one, np.zeros(1), one, one, one, one) is None and not screen_mod.ready()


def test_python_form_matches(compiled_screen: None) -> None:
    """The plain-Python form (what runs without numba) gives the compiled one's answers."""
    rng = np.random.default_rng(3)
    for k in range(50):
        cols = _valid(20, rng)
        arrays = [np.asarray(getattr(cols, c), dtype=float).copy() for c in _SCREENED]
        if k % 2:
            arrays[k % 8][k % 20] = _BAD[k % len(_BAD)]
        assert screen_mod._screen_py(*arrays) == screen_mod.screen(*arrays)
