"""Per-session summaries: the session table of a twin and the cohort's accuracy per session."""

from __future__ import annotations

import numpy as np
import pytest

from twin.analysis.predict import predict
from twin.analysis.summary import session_accuracy, session_table
from twin.data.batch import make_batch
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.simulate import simulate
from twin.protocol import IBL_DEFAULT


def test_session_table_and_accuracy_agree_with_the_trials() -> None:
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    trials = simulate(truth, IBL_DEFAULT, 1, 1200, seed=2).trials
    pred = predict(truth, trials)
    table = session_table(trials, pred, trained_through=1)
    assert table["n_trials"].sum() == len(trials) and table["trained"].tolist()[0] and not table["trained"].tolist()[-1]
    assert table["ll_per_trial"].to_numpy() @ table["n_trials"].to_numpy() == pytest.approx(pred.log_likelihood, rel=1e-4)
    acc = session_accuracy(make_batch(trials), truth)
    np.testing.assert_allclose(acc["observed"], table["observed"], rtol=1e-6)
    np.testing.assert_allclose(acc["predicted"], table["predicted"], rtol=1e-5)


def test_block_prior_keeps_debiasing_repeats_in_their_block() -> None:
    import pandas as pd

    from twin.analysis.summary import block_prior

    t = pd.DataFrame({"session": [1, 1, 1, 2, 2, 2, 2], "prob_left": [0.5, 1.0, 0.5, 0.0, 0.8, 1.0, 0.2]})
    np.testing.assert_allclose(block_prior(t), [0.5, 0.5, 0.5, 0.5, 0.8, 0.8, 0.2])


def test_session_easy_performance_counts_only_easy_trials() -> None:
    import pandas as pd

    from twin.analysis.predict import Prediction
    from twin.analysis.summary import session_easy_performance

    t = pd.DataFrame(
        {
            "session": [1, 1, 1, 2, 2],
            "contrast_left": [1.0, 0.0, 0.0, 0.5, 0.0],
            "contrast_right": [0.0, 0.25, 0.5, 0.0, 0.0],
            "correct_side": [0, 1, 1, 0, 1],
            "feedback": [1, -1, -1, 1, 1],
            "prob_left": [0.5, 0.5, 0.5, 0.8, 0.8],
        }
    )
    pred = Prediction(p_right=np.array([0.1, 0.5, 0.7, 0.4, 0.5]), weights=np.zeros((5, 2)), feature_names=("stimulus", "bias"), log_likelihood=0.0, n_trials=5)
    out = session_easy_performance(t, pred)
    assert out["n_easy"].tolist() == [2, 1]
    np.testing.assert_allclose(out["easy_observed"], [0.5, 1.0])
    np.testing.assert_allclose(out["easy_predicted"], [(0.9 + 0.7) / 2, 0.6])
    assert out["biased"].tolist() == [False, True]
