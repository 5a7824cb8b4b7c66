"""Predictions along a history: agree with the model's likelihood; continuing from a state
equals predicting the whole history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trial_tables import random_trials_table
from twin.data.batch import make_batch
from twin.errors import TwinError
from twin.models.learner import LearnerModel, ModelSpec
from twin.analysis.predict import predict
from twin.models.rules import MODEL_RULES
from twin.models.state import end_state


@pytest.mark.parametrize("rule", MODEL_RULES)
def test_prediction_matches_the_model_likelihood(rule):
    torch.manual_seed(1)
    model = LearnerModel(ModelSpec(rule)).eval()
    df = random_trials_table({"a": [40, 30]}, seed=2)
    pred = predict(model, df)
    ll = model.log_likelihood(make_batch(df)).sum().item()
    assert pred.n_trials == 70 and pred.p_right.shape == (70,) and pred.weights.shape == (70, model.n_weights)
    assert pred.feature_names == model.spec.features.names
    assert np.all((pred.p_right > 0) & (pred.p_right < 1))
    assert pred.log_likelihood == pytest.approx(ll, rel=1e-5)


@pytest.mark.parametrize("rule", ["reinforce", "rnn"])
def test_continuing_from_a_state_equals_predicting_the_whole_history(rule):
    torch.manual_seed(2)
    model = LearnerModel(ModelSpec(rule)).eval()
    with torch.no_grad():
        model.w0.copy_(torch.tensor([1.0, -0.3]))
    df = random_trials_table({"a": [30, 25, 20]}, seed=3)
    whole = predict(model, df)
    state = end_state(model, df[df.session <= 2])
    rest = predict(model, df[df.session == 3], start=state)
    np.testing.assert_allclose(rest.p_right, whole.p_right[-20:], rtol=1e-5, atol=1e-6)


def test_predict_needs_one_subject():
    with pytest.raises(TwinError, match="exactly one subject"):
        predict(LearnerModel(ModelSpec("static")), random_trials_table({"a": [5], "b": [5]}))
