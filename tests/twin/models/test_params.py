"""Twin parameters over a shared population rule."""

from __future__ import annotations

import pytest
import torch

from trial_tables import random_trials_table
from twin.data.batch import make_batch
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel, TwinParams, rule_ref, stack_params


def _population(rule: str = "dnn", seed: int = 0) -> LearnerModel:
    torch.manual_seed(seed)
    return LearnerModel(ModelSpec(rule)).eval().requires_grad_(False)


def test_twins_share_the_population_rule_and_run_as_one_batch():
    pop = _population()
    ref = rule_ref(pop)
    params = [TwinParams(torch.tensor([1.0, b]), torch.tensor([0.0, r]), ref) for b, r in ((0.5, 0.2), (-0.5, -0.1))]
    twins = [TwinModel(pop, p) for p in params]
    assert all(t.model.rule is pop.rule for t in twins) and torch.equal(twins[1].model.w0, params[1].w0)
    batch = make_batch(random_trials_table({"a": [40, 30], "b": [50]}), pop.spec.features)
    w0, log_rate = stack_params(params)
    together = pop.trajectory(batch, w0, log_rate)
    for i, t in enumerate(twins):
        one = batch.select([i])
        # one twin alone runs the fused batch-1 loop (twin.models.batch1), the batch the torch loop
        torch.testing.assert_close(t.model.trajectory(one)[0, : int(one.valid.sum())], together[i, : int(one.valid.sum())], rtol=0, atol=1e-5)


def test_rule_reference_is_the_rules_content():
    a, b = _population(seed=1), _population(seed=1)
    with torch.no_grad():
        b.w0.add_(1.0)  # the initial weights are the twin's, not the rule's
    assert rule_ref(a) == rule_ref(b) != rule_ref(_population(seed=2))
    assert rule_ref(_population("static")) != rule_ref(_population("reinforce"))


def test_mismatched_parameters_are_refused():
    pop = _population()
    with pytest.raises(ValueError, match="different rules"):
        stack_params([TwinParams.of(pop, "r1"), TwinParams.of(pop, "r2")])
    with pytest.raises(ValueError, match="do not fit"):
        TwinModel(pop, TwinParams(torch.zeros(3), torch.zeros(3), "r"))
    with pytest.raises(ValueError, match="must both be"):
        TwinParams(torch.zeros(2), torch.zeros(3), "r")


def test_making_a_twin_leaves_the_global_random_state_alone():
    pop = _population()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    TwinModel.of(pop)
    assert torch.equal(torch.rand(3), expected)
