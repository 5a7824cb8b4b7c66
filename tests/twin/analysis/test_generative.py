"""Scores of the generative check: CRPS, log score, PIT coverage, censoring, per-session tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twin.analysis.criteria import SessionStats
from twin.analysis.generative import coverage, crps_ensemble, generative_check, neg_log_score, pit


def test_crps_matches_the_definition_and_is_zero_for_a_perfect_point_forecast():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40))
    y = np.array([0.0, 1.5, -2.0])
    brute = np.abs(x - y[:, None]).mean(1) - 0.5 * np.abs(x[:, :, None] - x[:, None, :]).mean((1, 2))
    assert np.allclose(crps_ensemble(x, y), brute)
    assert crps_ensemble(np.full((1, 10), 3.0), np.array([3.0]))[0] == pytest.approx(0.0)
    # a forecast centred on the truth scores better than a shifted one
    assert crps_ensemble(x, np.zeros(3)).mean() < crps_ensemble(x + 3, np.zeros(3)).mean()


def test_log_score_is_smoothed_and_prefers_the_observed_category():
    s = np.array([[0, 0, 0, 1], [2, 2, 2, 2]])
    nls = neg_log_score(s, np.array([0, 0]), np.array([3, 3]))
    assert nls[0] == pytest.approx(-np.log(3.5 / 5.5))
    assert np.isfinite(nls[1]) and nls[1] > nls[0]  # never sampled: finite, worse


def test_pit_coverage_is_nominal_for_calibrated_forecasts_also_with_ties():
    rng = np.random.default_rng(1)
    n, r = 4000, 200
    for draw in (lambda size: rng.normal(size=size), lambda size: rng.integers(0, 3, size=size).astype(float)):
        x, y = draw((n, r)), draw(n)
        cov = coverage(x, y, (0.5, 0.8, 0.95))
        for lv, v in cov.items():
            assert abs(np.mean(v) - lv) < 0.03, (lv, np.mean(v))
    # an overconfident forecast (too narrow) under-covers
    x, y = rng.normal(size=(n, r)) * 0.3, rng.normal(size=n)
    assert np.mean(coverage(x, y, (0.8,))[0.8]) < 0.5
    assert np.isnan(pit(np.full((1, 5), np.nan), np.array([1.0]))[0])


def _stats(n: torch.Tensor, n_right: torch.Tensor, n_sessions: torch.Tensor) -> SessionStats:
    contrast = torch.tensor([-100.0, 100.0], dtype=torch.float64)
    return SessionStats(contrast, torch.tensor([0, 1]), n, n_right, n_sessions)


def test_check_tables_count_trials_to_criterion_censored_at_the_cap():
    """Two animals of 4 sessions of 300 easy trials: a perfect one (trained_1a would need a low
    contrast, so nobody reaches it here: every value is censored at the cap) and the predicted
    rollouts copy the observed counts, so every score is perfect."""
    s, per = 4, 150.0
    n = torch.full((2, s, 2), per, dtype=torch.float64)
    right = torch.stack([torch.tensor([0.0, per]).expand(s, 2), torch.tensor([75.0, 75.0]).expand(s, 2)]).double()
    obs = _stats(n, right, torch.tensor([s, s]))
    rr = 5
    pred = _stats(n.repeat_interleave(rr, 0), right.repeat_interleave(rr, 0), torch.full((2 * rr,), s))
    chk = generative_check(["a", "b"], obs, pred, torch.tensor([0, 1]), rr)
    a = chk.animals
    assert list(a["cap_trials"]) == [1200.0, 1200.0]
    assert list(a["obs_trials_1a"]) == [1200.0, 1200.0] and not a["obs_reached_1a"].any()
    assert np.allclose(a["crps_1a"], 0.0) and chk.summary["pred_frac_trained_1a"] == 0.0
    sess = chk.sessions
    assert list(sess.groupby("subject").size()) == [4, 3]  # b's first session is before its cut-off
    assert np.allclose(sess["obs_easy_accuracy"], sess["pred_mean_easy_accuracy"])
    assert np.allclose(sess.loc[sess["subject"] == "a", "obs_easy_accuracy"], 1.0)
