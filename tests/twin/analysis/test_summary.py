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
