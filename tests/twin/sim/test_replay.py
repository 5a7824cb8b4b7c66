"""Free runs over one animal's own trial sequence (the report's weight bands)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from twin.errors import TrialDataError
from twin.models.learner import ModelSpec, LearnerModel
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.replay import ReplayedTrials, free_weight_band
from twin.sim.simulate import run_task, simulate


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 1, 800, seed=5).trials


def test_the_replay_shows_the_animals_own_trials(trials: pd.DataFrame) -> None:
    col = {k: torch.as_tensor(trials[k].to_numpy().astype(np.float32)) for k in ("contrast_left", "contrast_right", "correct_side", "prob_left")}
    env = ReplayedTrials(col["contrast_left"], col["contrast_right"], col["correct_side"], col["prob_left"], 3)
    model = DEFAULT_TRUTHS[Family.REINFORCE].build()
    w, h = model.initial(3)
    start = torch.zeros(3, len(trials), dtype=torch.bool)
    start[:, 0] = True
    run = run_task(model, env, start, torch.Generator().manual_seed(0), w, h)
    for r in range(3):
        np.testing.assert_allclose(run.contrast_right[r].numpy(), trials["contrast_right"].to_numpy(), atol=1e-6)
        np.testing.assert_allclose(run.answer[r].numpy(), trials["correct_side"].to_numpy())
    assert not torch.equal(run.choice[0], run.choice[1])  # each row samples its own choices


def test_band_starts_at_the_learners_weights_and_widens(trials: pd.DataFrame) -> None:
    model = DEFAULT_TRUTHS[Family.REINFORCE].build()
    band = free_weight_band(model, trials, n_rollouts=40, level=0.9, seed=1)
    assert band.lo.shape == band.hi.shape == (len(trials), model.n_weights) and band.n_rollouts == 40
    assert (band.lo <= band.median).all() and (band.median <= band.hi).all()
    np.testing.assert_allclose(band.lo[0], model.w0.numpy(), atol=1e-6)
    np.testing.assert_allclose(band.hi[0], model.w0.numpy(), atol=1e-6)
    assert (band.hi[-1] - band.lo[-1] > 1e-3).all()  # the choices' randomness spreads the weights
    again = free_weight_band(model, trials, n_rollouts=40, level=0.9, seed=1)
    np.testing.assert_array_equal(band.hi, again.hi)  # seeded


def test_a_learner_that_does_not_learn_has_no_band(trials: pd.DataFrame) -> None:
    static = LearnerModel(ModelSpec("static"))
    band = free_weight_band(static, trials, n_rollouts=10)
    np.testing.assert_array_equal(band.lo, band.hi)


def test_bad_input_is_refused(trials: pd.DataFrame) -> None:
    model = DEFAULT_TRUTHS[Family.REINFORCE].build()
    with pytest.raises(ValueError, match="n_rollouts"):
        free_weight_band(model, trials, n_rollouts=0)
    with pytest.raises(ValueError, match="level"):
        free_weight_band(model, trials, level=1.0)
    with pytest.raises(TrialDataError, match="one animal"):
        free_weight_band(model, pd.concat([trials, trials.assign(subject="other")]))
    with pytest.raises(TrialDataError, match="no trials"):
        free_weight_band(model, trials.iloc[:0])
