"""LearnerModel and the choice policy: trajectories, likelihoods, specs, and batch independence."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from trial_tables import random_trials_table

from twin.data.batch import make_batch
from twin.data.features import FeatureSpec, StimulusCoding
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.policy import choice_log_likelihood, logits, p_right
from twin.models.rules import MODEL_RULES, NetworkConfig, make_config, rule_names


trials_table = random_trials_table


def init_model(spec: ModelSpec, seed: int = 0) -> LearnerModel:
    """A model with nonzero w0 and update scales large enough for the rule to matter."""
    torch.manual_seed(seed)
    model = LearnerModel(spec)
    with torch.no_grad():
        model.w0.copy_(torch.randn(model.n_weights) * 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    df = trials_table({"a": [30, 25], "b": [12], "c": [20, 10, 15]}, seed=1)
    return make_batch(df)


# --------------------------------------------------------------------------------------------
# policy


def test_policy_functions_by_hand():
    w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    x = torch.tensor([[1.0, 1.0], [-0.5, 1.0]])
    z = torch.tensor([-0.5, -0.75])
    torch.testing.assert_close(logits(w, x), z)
    torch.testing.assert_close(p_right(w, x), torch.sigmoid(z))
    y = torch.tensor([1.0, 0.0])
    ll = choice_log_likelihood(w.unsqueeze(0), x.unsqueeze(0), y.unsqueeze(0))[0]
    expected = torch.tensor([math.log(1 / (1 + math.exp(0.5))), math.log(1 - 1 / (1 + math.exp(0.75)))])
    torch.testing.assert_close(ll, expected)


def test_log_likelihood_is_stable_for_extreme_logits():
    w = torch.tensor([[[100.0]], [[-100.0]]])
    x = torch.ones(2, 1, 1)
    y = torch.tensor([[0.0], [1.0]])  # very unlikely choices
    ll = choice_log_likelihood(w, x, y)
    assert torch.isfinite(ll).all()
    torch.testing.assert_close(ll, torch.full((2, 1), -100.0))


# --------------------------------------------------------------------------------------------
# trajectories and likelihoods


@pytest.mark.parametrize("rule", rule_names())
def test_trajectory_shape_and_start(batch, rule):
    model = init_model(ModelSpec(rule, rule_config=make_config(rule, hidden_size=8, scale_init=0.05)))
    with torch.no_grad():
        w = model.trajectory(batch)
    assert w.shape == (batch.n_animals, batch.n_trials, batch.x.shape[-1])
    assert torch.isfinite(w).all()
    assert torch.equal(w[:, 0], model.w0.expand(batch.n_animals, -1))
    # per-animal starting weights
    w0 = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.3, 0.3]])
    with torch.no_grad():
        w_b = model.trajectory(batch, w0)
    assert torch.equal(w_b[:, 0], w0)
    if rule == "static":
        assert torch.equal(w_b, w0.unsqueeze(1).expand_as(w_b))
    else:
        assert not torch.allclose(w_b[:, -1], w0)


def test_trajectory_is_the_rule_rollout_shifted_by_one(batch):
    """The weights in force on trial t are those after the update of trial t - 1."""
    model = init_model(ModelSpec("reinforce"))
    with torch.no_grad():
        w = model.trajectory(batch)
        pre = model.precompute(batch)
        ws, _ = model.rule.rollout(*model.initial(batch.n_animals), pre)
    torch.testing.assert_close(w[:, 1:], ws[:-1].transpose(0, 1))


@pytest.mark.parametrize("rule", MODEL_RULES)
def test_log_likelihood_is_bernoulli_and_masked(batch, rule):
    model = init_model(ModelSpec(rule, rule_config=make_config(rule, hidden_size=8)))
    mask = batch.valid.clone()
    mask[:, ::3] = False
    b = batch.with_mask(mask)
    with torch.no_grad():
        ll = model.log_likelihood(b)
        w = model.trajectory(b)
    assert ll.shape == (b.n_animals, b.n_trials)
    assert torch.all(ll[~b.mask] == 0)
    assert torch.all(ll[b.mask] < 0)
    p = torch.sigmoid((w * b.x).sum(-1)).double()
    y = b.y.double()
    manual = (y * torch.log(p) + (1 - y) * torch.log1p(-p)) * b.mask
    torch.testing.assert_close(ll.double(), manual, rtol=1e-5, atol=1e-6)


def test_padding_is_never_scored(batch):
    model = init_model(ModelSpec("dnn"))
    with torch.no_grad():
        ll = model.log_likelihood(batch)
    assert torch.all(ll[~batch.valid] == 0)
    assert (ll != 0).sum(1).tolist() == batch.lengths.tolist()


# --------------------------------------------------------------------------------------------
# specs


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("static"),
        ModelSpec("dnn", FeatureSpec(StimulusCoding.SPLIT, bias=False, history=True), NetworkConfig(hidden_size=5, scale_init=0.02)),
        ModelSpec("rnn", FeatureSpec(history=True), NetworkConfig(hidden_size=3)),
    ],
)
def test_model_spec_round_trip(spec):
    d = spec.to_dict()
    again = ModelSpec.from_dict(json.loads(json.dumps(d)))
    assert again == spec
    assert again.to_dict() == d
    model = LearnerModel(again)
    assert model.n_weights == spec.features.n_features


def test_model_spec_reads_specs_stored_with_every_rules_options():
    """Files written when one config carried every rule's options still load."""
    legacy = {"hidden_size": 6, "scale_init": 0.05, "alpha_init": 0.02, "within_session_drift": False, "mirror_symmetric": True}
    features = FeatureSpec().to_dict()
    spec = ModelSpec.from_dict({"rule": "dnn_delta", "features": features, "rule_config": legacy})
    assert spec.rule_config == make_config("dnn_delta", hidden_size=6, scale_init=0.05, within_session_drift=False, mirror_symmetric=True)
    assert LearnerModel(spec).rule.mirror is not None
    assert ModelSpec.from_dict({"rule": "reinforce", "features": features, "rule_config": legacy}).rule_config == make_config("reinforce", alpha_init=0.02)
    assert ModelSpec.from_dict({"rule": "static", "features": features, "rule_config": legacy}) == ModelSpec("static")
    with pytest.raises(TypeError, match="hiden"):
        ModelSpec.from_dict({"rule": "dnn", "features": features, "rule_config": {"hiden": 3}})


def test_model_spec_refuses_another_rules_config():
    with pytest.raises(TypeError, match="ReinforceConfig"):
        ModelSpec("reinforce", rule_config=NetworkConfig())


def test_model_spec_unknown_rule_fails_when_built():
    from twin.errors import UnknownRuleError

    with pytest.raises(UnknownRuleError):
        LearnerModel(ModelSpec("nope"))


# --------------------------------------------------------------------------------------------
# batch independence: an animal's trajectory does not depend on who else is in the batch


@pytest.mark.parametrize("rule", rule_names())
def test_animal_alone_equals_animal_in_batch(rule):
    df = trials_table({f"m{i}": [15 + 3 * i, 10 + i] for i in range(6)}, seed=2)
    feats = FeatureSpec(history=True)
    big = make_batch(df, feats)
    model = init_model(ModelSpec(rule, feats, make_config(rule, hidden_size=16, scale_init=0.05)), seed=3)
    with torch.no_grad():
        w_all = model.trajectory(big)
        ll_all = model.log_likelihood(big)
    for i, subj in enumerate(big.subjects):
        alone = make_batch(df[df["subject"] == subj], feats)
        n = alone.n_trials
        assert n == int(big.lengths[i])
        with torch.no_grad():
            w_one = model.trajectory(alone)
            ll_one = model.log_likelihood(alone)
        torch.testing.assert_close(w_all[i, :n], w_one[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(ll_all[i, :n], ll_one[0], rtol=0, atol=1e-5)
        # select() gives the same animal too
        sel = big.select([i])
        with torch.no_grad():
            torch.testing.assert_close(model.trajectory(sel)[0, :n], w_one[0], rtol=0, atol=1e-5)
