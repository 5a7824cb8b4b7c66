"""Generative-check rollouts: replayed protocols, starts at a cut-off, and the oracle's calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from twin.analysis.generative import generative_check
from twin.models.params import TwinModel, TwinParams
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family, Individuality, draw_individuals
from twin.sim.check import repeat_trials, replayed_protocol, run_check, twin_starts
from twin.sim.simulate import simulate


@pytest.fixture(scope="module")
def cohort():
    gt = DEFAULT_TRUTHS[Family.REINFORCE]
    model = gt.build()
    w0, lr = draw_individuals(gt, 8, Individuality(), seed=3)
    sim = simulate(model, IBL_DEFAULT, 8, 2500, seed=3, w0=w0, log_rate=lr)
    subjects = list(dict.fromkeys(sim.trials["subject"]))
    twins = [TwinModel(model, TwinParams(w0[i], lr[i], "truth")) for i in range(8)]
    return model, sim.trials, subjects, twins


def test_repeat_trials_follow_easy_errors_only():
    s = pd.DataFrame({"contrast_left": [1.0, 1.0, 0.0, 0.0], "contrast_right": [0.0, 0.0, 0.25, 0.25], "correct_side": [0, 0, 1, 1], "feedback": [-1, 1, -1, 1]})
    assert repeat_trials(s).tolist() == [False, True, False, False]


def test_replayed_protocol_holds_the_sessions_contrasts_in_their_proportions(cohort):
    _, trials, subjects, _ = cohort
    g = trials[(trials["subject"] == subjects[0]) & (trials["session"] == 1)]
    p = replayed_protocol(g, "x")
    shown = np.unique(np.round(g["contrast_left"] + g["contrast_right"], 6))
    assert p.stimulus.phases == (tuple(shown.tolist()),)
    assert p.session_trials == (len(g), len(g)) and p.feedback.debias


def test_rollouts_keep_the_animals_session_lengths_and_observed_sessions_before_the_cutoff(cohort):
    model, trials, subjects, twins = cohort
    start = twin_starts(twins, trials, subjects, [2] * 8, IBL_DEFAULT)
    run = run_check(model, start, trials, IBL_DEFAULT, n_rollouts=3, seed=0)
    obs, pred = run.observed, run.predicted
    assert torch.equal(pred.n_trials, obs.n_trials.repeat_interleave(3, 0))
    assert torch.equal(pred.n[:, :2], obs.n[:, :2].repeat_interleave(3, 0))
    assert not torch.equal(pred.n_right[:, 2:], obs.n_right[:, 2:].repeat_interleave(3, 0))  # free choices
    # the start at the cut-off is the teacher-forced state, not w0
    assert not torch.allclose(start.w, torch.stack([t.params.w0 for t in twins]))
    with pytest.raises(ValueError, match="no session after the cut-off"):
        run_check(model, twin_starts(twins, trials, subjects, [50] * 8), trials, IBL_DEFAULT, 2)


@pytest.mark.parametrize("protocol", [IBL_DEFAULT, None], ids=["known", "replay"])
def test_the_true_rule_is_calibrated_and_a_wrong_start_is_not(cohort, protocol):
    """The oracle (true rule, each animal's true w0 and rate) covers per-session easy accuracy
    near the nominal rate; the same rule started with a strongly wrong bias does not."""
    model, trials, subjects, twins = cohort
    run = run_check(model, twin_starts(twins, trials, subjects, [0] * 8), trials, protocol, n_rollouts=40, seed=1)
    good = generative_check(run.subjects, run.observed, run.predicted, run.cutoff, 40).summary
    assert abs(good["cov80_easy_accuracy"] - 0.8) < 0.15
    assert 0.75 < good["pred_over_obs_trials_1a"] < 1.33
    bad_twins = [TwinModel(model, TwinParams(torch.tensor([0.0, 3.0]), t.params.log_rate - 1.5, "truth")) for t in twins]
    run = run_check(model, twin_starts(bad_twins, trials, subjects, [0] * 8), trials, protocol, n_rollouts=40, seed=1)
    bad = generative_check(run.subjects, run.observed, run.predicted, run.cutoff, 40).summary
    assert bad["cov80_easy_accuracy"] < good["cov80_easy_accuracy"] - 0.2
    assert bad["crps_easy_accuracy"] > good["crps_easy_accuracy"]


def test_replayed_future_sessions_keep_contrasts_only_shown_before_the_cutoff(cohort):
    """Replaying only the late sessions (without 0.5) must still count the early ones' 0.5 trials."""
    model, trials, subjects, twins = cohort
    sub = trials[trials["subject"] == subjects[0]]
    cut = sub["session"].nunique() - 1
    run = run_check(model, twin_starts(twins[:1], sub, subjects[:1], [cut]), sub, None, n_rollouts=4, seed=0)
    assert torch.equal(run.predicted.n[:, :cut], run.observed.n[:, :cut].expand(4, -1, -1))
    assert torch.equal(run.predicted.n_trials, run.observed.n_trials.expand(4, -1))


def test_ensemble_rollouts_each_run_the_component_they_drew(cohort):
    """Every rollout of an ensemble check is the free run of one component, drawn by weight."""
    from twin.models.ensemble import TwinEnsemble
    from twin.sim.check import run_ensemble_check

    model, trials, subjects, twins = cohort
    subjects, twins = subjects[:4], twins[:4]
    trials = trials[trials["subject"].isin(subjects)]
    bad_twins = [TwinModel(model, TwinParams(torch.tensor([0.0, 3.0]), t.params.log_rate - 1.5, "truth")) for t in twins]
    r = 20
    good = run_check(model, twin_starts(twins, trials, subjects, [2] * 4, IBL_DEFAULT), trials, IBL_DEFAULT, r, seed=4).predicted
    bad = run_check(model, twin_starts(bad_twins, trials, subjects, [2] * 4, IBL_DEFAULT), trials, IBL_DEFAULT, r, seed=4).predicted
    ens = [TwinEnsemble.of([g, b], [0.7, 0.3], ["good", "bad"]) for g, b in zip(twins, bad_twins)]
    run = run_ensemble_check(ens, trials, subjects, [2] * 4, IBL_DEFAULT, r, seed=4)
    pred = run.predicted
    assert pred.n.shape == good.n.shape and run.n_rollouts == r
    is_good = (pred.n_right == good.n_right).flatten(1).all(1)
    is_bad = (pred.n_right == bad.n_right).flatten(1).all(1)
    assert bool((is_good | is_bad).all()) and not bool((is_good & is_bad).any())
    assert abs(float(is_good.double().mean()) - 0.7) < 0.15  # drawn in proportion (80 rollouts)
    only_good = run_ensemble_check([TwinEnsemble.of([g, b], [1.0, 0.0], ["good", "bad"]) for g, b in zip(twins, bad_twins)], trials, subjects, [2] * 4, IBL_DEFAULT, r, seed=4)
    assert torch.equal(only_good.predicted.n_right, good.n_right)
    with pytest.raises(ValueError, match="different components"):
        run_ensemble_check([ens[0], TwinEnsemble.of([twins[1]], [1.0], ["other"])] + ens[2:], trials, subjects, [2] * 4, IBL_DEFAULT, 2)
