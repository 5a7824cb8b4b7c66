"""IBL training criteria: trained_1a / trained_1b on tables and tensors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from twin.analysis.criteria import (
    TRAINED_1A,
    TRAINED_1B,
    CriterionConfig,
    SessionStats,
    criteria_sessions,
    first_session_meeting,
    session_stats,
    training_criteria,
    trials_to_session,
    window_psychometrics,
)
from twin.analysis.psychometrics import fit_psychometric
from twin.errors import TrialDataError

IBL_SET = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)


# ----------------------------------------------------------------------------- table builders


def perfect(x: np.ndarray, side: np.ndarray, session: int, rng: np.random.Generator) -> np.ndarray:
    return side.copy()


def psychometric_observer(bias: float, threshold: float, lapse_low: float, lapse_high: float):
    def choose(x, side, session, rng):
        p = lapse_low + (1 - lapse_low - lapse_high) * 0.5 * (1 + np.vectorize(math.erf)((x - bias) / threshold))
        return (rng.random(len(x)) < p).astype(int)

    return choose


def easy_accuracy_observer(accuracy_by_session: dict[int, float], default: float = 1.0):
    """Always correct on hard trials; on easy ones errs on a fixed fraction (deterministic)."""

    def choose(x, side, session, rng):
        choice = side.copy()
        easy = np.flatnonzero(np.abs(x) >= 50)
        n_err = int(round((1 - accuracy_by_session.get(session, default)) * len(easy)))
        wrong = rng.choice(easy, size=n_err, replace=False)
        choice[wrong] = 1 - side[wrong]
        return choice

    return choose


def make_table(sessions: list[int], choose=perfect, *, contrasts=IBL_SET, subject: str = "m1", seed: int = 0) -> pd.DataFrame:
    """Balanced design: each (contrast, side) condition equally often, shuffled, per session."""
    rng = np.random.default_rng(seed)
    conds = [(c, s) for c in contrasts for s in (0, 1)]
    parts = []
    for si, n in enumerate(sessions, start=1):
        order = np.resize(np.arange(len(conds)), n)
        rng.shuffle(order)
        c = np.array([conds[i][0] for i in order])
        side = np.array([conds[i][1] for i in order])
        x = 100 * c * np.where(side == 1, 1, -1)
        choice = np.asarray(choose(x, side, si, rng)).astype(np.int64)
        parts.append(
            pd.DataFrame(
                dict(
                    subject=subject,
                    session=si,
                    trial=np.arange(1, n + 1),
                    contrast_left=c * (1 - side),
                    contrast_right=c * side,
                    choice=choice,
                    feedback=np.where(choice == side, 1, -1),
                    correct_side=side,
                    prob_left=0.5,
                )
            )
        )
    return pd.concat(parts, ignore_index=True)


def first(df: pd.DataFrame, column: str):
    v = training_criteria(df)[column].iloc[0]
    return None if pd.isna(v) else int(v)


# ----------------------------------------------------------------------------- criteria on tables


def test_perfect_observer_reaches_1a_at_session_3_but_not_1b():
    df = make_table([250] * 5)
    assert first(df, "session_1a") == 3
    assert first(df, "trials_1a") == 750
    assert first(df, "session_1b") is None  # 250 trials per session is not > 400
    sess = criteria_sessions(df)
    assert sess["passes_1a"].tolist() == [False, False, True, True, True]
    assert sess[["bias", "threshold"]].iloc[:2].isna().all().all()
    assert sess["n_trials"].tolist() == [250] * 5
    assert sess["easy_accuracy"].tolist() == [1.0] * 5
    assert (sess["threshold"].iloc[2:] < 19).all() and (sess["bias"].iloc[2:].abs() < 16).all()


def test_a_short_session_blocks_every_window_containing_it():
    df = make_table([250, 150, 250, 250, 250])
    assert first(df, "session_1a") == 5
    assert first(df, "trials_1a") == 250 + 150 + 3 * 250
    assert criteria_sessions(df)["passes_1a"].tolist() == [False, False, False, False, True]


def test_trial_count_condition_is_strict():
    assert first(make_table([201] * 3), "session_1a") == 3
    assert first(make_table([200] * 3), "session_1a") is None  # IBL: more than 200


def test_strongly_biased_observer_fails_on_bias_only():
    df = make_table([250] * 4, psychometric_observer(-35.0, 10.0, 0.02, 0.02), seed=7)
    sess = criteria_sessions(df)
    assert not sess["passes_1a"].any()
    # MLE of the pooled windows, true -35 (sampling noise at 250 trials per session is a few %)
    assert sess["bias"].iloc[2:].between(-45, -20).all(), sess["bias"]
    assert (sess["window_easy_accuracy"].iloc[2:] > 0.9).all()
    loose = replace(TRAINED_1A, max_abs_bias=50.0)
    assert first_session_of(df, loose) == 3


def first_session_of(df: pd.DataFrame, config: CriterionConfig):
    v = training_criteria(df, (config,))[f"session_{config.name}"].iloc[0]
    return None if pd.isna(v) else int(v)


def test_seventy_percent_on_easy_trials_fails_on_accuracy():
    df = make_table([250] * 4, easy_accuracy_observer({}, default=0.7), seed=8)
    sess = criteria_sessions(df)
    assert sess["easy_accuracy"].round(2).tolist() == [0.7] * 4
    assert not sess["passes_1a"].any()
    # with the psychometric conditions switched off, accuracy alone still fails it ...
    only_accuracy = replace(TRAINED_1A, max_abs_bias=101.0, max_threshold=101.0, max_lapse=1.0)
    assert first_session_of(df, only_accuracy) is None
    # ... and passes once the accuracy bar is below 70 %
    assert first_session_of(df, replace(only_accuracy, min_easy_accuracy=0.6)) == 3


def test_1b_needs_more_than_400_trials_per_session():
    df300 = make_table([300] * 4)
    assert first(df300, "session_1a") == 3 and first(df300, "session_1b") is None
    df450 = make_table([450] * 4)
    assert first(df450, "session_1b") == 3 and first(df450, "trials_1b") == 1350


def test_1b_lapse_condition_is_stricter():
    # lapses near 0.15 pass 1a (< 0.2) but not 1b (< 0.1)
    df = make_table([500] * 3, psychometric_observer(0.0, 8.0, 0.15, 0.15), seed=9)
    sess = criteria_sessions(df)
    assert sess["lapse_low"].iloc[2] == pytest.approx(0.15, abs=0.05)
    assert sess["passes_1a"].iloc[2] and not sess["passes_1b"].iloc[2]


def test_low_contrasts_must_be_shown_on_both_sides():
    df = make_table([250] * 3, contrasts=(1.0, 0.5, 0.25))
    assert first(df, "session_1a") is None
    assert first_session_of(df, replace(TRAINED_1A, low_contrast=None)) == 3
    # zero contrast counts on the side it was rewarded
    df0 = make_table([250] * 3, contrasts=(1.0, 0.5, 0.0))
    assert first(df0, "session_1a") == 3
    assert first_session_of(df0, replace(TRAINED_1A, low_contrast=0.0)) == 3


def test_easy_accuracy_pooled_versus_per_session():
    # 95 %, 95 %, 72 %: pooled 87 % > 80 % but the last session alone fails
    df = make_table([250] * 3, easy_accuracy_observer({1: 0.95, 2: 0.95, 3: 0.72}), seed=10)
    pooled = replace(TRAINED_1A, max_lapse=0.3)
    assert first_session_of(df, pooled) == 3
    assert first_session_of(df, replace(pooled, easy_per_session=True)) is None


def test_window_fit_pools_the_trials_of_three_sessions():
    df = make_table([250, 300, 280, 260], psychometric_observer(-5.0, 15.0, 0.05, 0.1), seed=11)
    sess = criteria_sessions(df)
    x = 100 * (df["contrast_right"] - df["contrast_left"]).to_numpy()
    for last in (3, 4):
        rows = df["session"].between(last - 2, last).to_numpy()
        want = fit_psychometric(x[rows], df["choice"].to_numpy()[rows])
        got = sess.iloc[last - 1]
        assert [got["bias"], got["threshold"], got["lapse_low"], got["lapse_high"]] == pytest.approx(
            [want.bias, want.threshold, want.lapse_low, want.lapse_high], rel=1e-5, abs=1e-5
        )


def test_subjects_are_judged_separately_and_in_table_order():
    df = pd.concat(
        [
            make_table([250] * 4, subject="zed", seed=1),
            make_table([250, 150, 250, 250, 250], subject="amy", seed=2),
            make_table([100] * 3, subject="bob", seed=3),
        ],
        ignore_index=True,
    )
    out = training_criteria(df)
    assert out["subject"].tolist() == ["zed", "amy", "bob"]
    assert out["session_1a"].tolist()[:2] == [3, 5] and pd.isna(out["session_1a"].iloc[2])
    assert out["trials_1a"].tolist()[:2] == [750, 1150]
    assert out["n_sessions"].tolist() == [4, 5, 3]
    assert str(out["session_1a"].dtype) == "Int64"


# ----------------------------------------------------------------------------- tensor API


def table_tensors(df: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Rollout-like ``[A, T]`` tensors of a table (padded at the end)."""
    groups = [g for _, g in df.groupby("subject", sort=False)]
    t = max(len(g) for g in groups)
    out = {k: torch.zeros(len(groups), t, dtype=torch.float64) for k in ("x", "choice", "side")}
    out["start"] = torch.zeros(len(groups), t, dtype=torch.bool)
    out["mask"] = torch.zeros(len(groups), t, dtype=torch.bool)
    for a, g in enumerate(groups):
        n = len(g)
        out["x"][a, :n] = torch.as_tensor(100 * (g["contrast_right"] - g["contrast_left"]).to_numpy())
        out["choice"][a, :n] = torch.tensor(g["choice"].to_numpy(), dtype=torch.float64)
        out["side"][a, :n] = torch.tensor(g["correct_side"].to_numpy(), dtype=torch.float64)
        s = g["session"].to_numpy()
        out["start"][a, :n] = torch.as_tensor(np.r_[True, s[1:] != s[:-1]])
        out["mask"][a, :n] = True
    out["start"][:, 0] = True
    return out


def test_tensor_api_matches_the_table_api():
    df = pd.concat(
        [
            make_table([250] * 4, subject="a", seed=1),
            make_table([250, 150, 250, 250, 250], subject="b", seed=2),
            make_table([450] * 3, subject="c", seed=3),
            make_table([250] * 3, psychometric_observer(-35.0, 10.0, 0.02, 0.02), subject="d", seed=4),
        ],
        ignore_index=True,
    )
    t = table_tensors(df)
    stats = session_stats(t["x"], t["choice"], t["side"], t["start"], t["mask"])
    assert stats.n_sessions.tolist() == [4, 5, 3, 3]
    fits = window_psychometrics(stats, 3)
    assert fits.bias.shape == (4, 5) and torch.isnan(fits.bias[:, :2]).all() and torch.isnan(fits.bias[2, 3:]).all()
    f1a = first_session_meeting(stats, TRAINED_1A, fits)
    f1b = first_session_meeting(stats, TRAINED_1B, fits)
    assert f1a.tolist() == [2, 4, 2, -1]
    assert f1b.tolist() == [-1, -1, 2, -1]
    assert trials_to_session(stats, f1a).tolist() == [750, 1150, 1350, -1]
    table = training_criteria(df)
    want = [(-1 if pd.isna(v) else int(v) - 1) for v in table["session_1a"]]
    assert f1a.tolist() == want
    assert first_session_meeting(stats, TRAINED_1A).tolist() == f1a.tolist()  # fits computed inside


# ----------------------------------------------------------------------------- bad input


def test_missing_column_and_empty_table_raise_trial_data_errors():
    df = make_table([250] * 3)
    with pytest.raises(TrialDataError, match="correct_side"):
        training_criteria(df.drop(columns="correct_side"))
    with pytest.raises(TrialDataError, match="no trials"):
        criteria_sessions(df.iloc[:0])


def test_a_missing_session_number_is_an_error():
    df = make_table([250] * 4)
    with pytest.raises(TrialDataError, match="skip from 1 to 3"):
        training_criteria(df[df["session"] != 2].reset_index(drop=True))



def test_session_stats_errors():
    x = torch.tensor([[100.0, -100.0, 50.0, -50.0]], dtype=torch.float64)
    side = (x > 0).double()
    start = torch.tensor([[True, False, True, False]])
    with pytest.raises(ValueError, match="first trial"):
        session_stats(x, side, side, torch.tensor([[False, False, True, False]]))
    # a session whose trials are all masked out, followed by a real one
    mask = torch.tensor([[True, False, True, True]])
    every = torch.ones_like(mask)
    with pytest.raises(ValueError, match="session 1 .* no trials"):
        session_stats(x, side, side, every, mask)
    ok = session_stats(x, side, side, start)
    assert ok.n_trials.tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="no trials"):
        SessionStats(ok.contrast, ok.side, torch.zeros_like(ok.n), torch.zeros_like(ok.n), ok.n_sessions)


def test_config_validation():
    with pytest.raises(ValueError, match="window"):
        replace(TRAINED_1A, window=0)
    with pytest.raises(ValueError, match="name"):
        replace(TRAINED_1A, name="trained 1a")
    with pytest.raises(ValueError, match="window length"):
        criteria_sessions(make_table([250] * 3), (TRAINED_1A, replace(TRAINED_1B, window=2)))
    assert TRAINED_1A.max_abs_bias == 16 and TRAINED_1A.max_threshold == 19 and TRAINED_1A.max_lapse == 0.2
    assert TRAINED_1B.min_trials == 400 and TRAINED_1B.min_easy_accuracy == 0.9
