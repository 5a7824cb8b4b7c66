"""Per-animal twins: batched adaptation of initial weights and learning rates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.data.batch import make_batch
from twin.data.splits import split_sessions
from twin.fit.train import FitConfig, fit
from twin.models.learner import LearnerModel, ModelSpec
from twin.sim.simulate import simulate
from twin.protocol import IBL_DEFAULT
from twin.fit.adapt import adapt, choose_adaptation
from twin.models.params import Adaptation, TwinModel, rule_ref


@pytest.fixture(scope="module")
def cohort():
    # animals that start with very different biases: adapting w0 must help on early sessions
    rng = np.random.default_rng(0)
    w0 = torch.tensor(np.c_[np.zeros(8), rng.choice([-2.0, 2.0], 8)], dtype=torch.float32)
    sim = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 8, 1600, seed=2, w0=w0)
    batch = make_batch(sim.trials)
    pop = fit(ModelSpec("reinforce"), batch, None, FitConfig(epochs=15, patience=5), progress=False).model
    return sim, batch, pop, w0


def test_w0_adaptation_recovers_each_animals_bias(cohort):
    sim, batch, pop, w0 = cohort
    first = batch.truncate_sessions(torch.ones(batch.n_animals, dtype=torch.long))
    res = adapt(pop, first, first, Adaptation.INITIAL_WEIGHTS, FitConfig(learning_rate=0.1, epochs=60, patience=10))
    fitted_bias = torch.stack([res.twins[s].params.w0[1] for s in batch.subjects])
    assert torch.corrcoef(torch.stack([fitted_bias, w0[:, 1]]))[0, 1] > 0.9
    base = adapt(pop, first, first, Adaptation.NONE)
    assert res.val_ll > base.val_ll + 0.01
    # the population model is untouched; the twins share one copy of its rule, each with its own parameters
    a, b = (res.twins[s] for s in batch.subjects[:2])
    assert torch.equal(pop.w0, pop.w0.clone()) and a is not b and not torch.equal(a.params.w0, b.params.w0)
    assert a.population is b.population and a.model.rule is b.model.rule and a.population is not pop
    assert a.params.rule == b.params.rule == rule_ref(pop)
    assert torch.equal(a.model.w0, a.params.w0) and not a.model.w0.requires_grad


def test_rate_adaptation_trains_log_rate_and_keeps_rule(cohort):
    _, batch, pop, _ = cohort
    res = adapt(pop, batch, batch, Adaptation.INITIAL_WEIGHTS_AND_RATE, FitConfig(learning_rate=0.05, epochs=5, patience=5))
    twin = res.twins[batch.subjects[0]].model
    assert isinstance(twin, LearnerModel)
    for (k1, v1), (k2, v2) in zip(pop.rule.state_dict().items(), twin.rule.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert res.val_ll >= adapt(pop, batch, batch, Adaptation.NONE).val_ll - 1e-6


@torch.no_grad()
def test_rate_multiplier_scales_updates():
    m = LearnerModel(ModelSpec("reinforce"))
    sim = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 2, 300, seed=0)
    b = make_batch(sim.trials)
    w1 = m.trajectory(b)
    w2 = m.trajectory(b, log_rate=torch.zeros(2, 2))
    assert torch.allclose(w1, w2)
    w_half = m.trajectory(b, log_rate=torch.full((2, 2), float(np.log(0.5))))
    assert not torch.allclose(w1, w_half)
    assert w_half[:, 1].sub(w_half[:, 0]).abs().sum() == pytest.approx(0.5 * w1[:, 1].sub(w1[:, 0]).abs().sum().item(), rel=1e-4)


def test_choose_adaptation_reports_every_option(cohort):
    _, batch, pop, _ = cohort
    best, table = choose_adaptation(pop, batch, 2)
    assert set(table["adaptation"]) == {"none", "w0", "w0+rate"}
    assert best.value == table.loc[table["forecast_ll_nats"].idxmax(), "adaptation"]
    assert np.isfinite(table["forecast_ll_nats"]).all()
    _ = split_sessions  # imported for readers of this test: the protocol choose_adaptation uses


def test_every_adaptation_gives_twins_over_a_referenced_rule(cohort):
    _, batch, pop, _ = cohort
    one = batch.select([0, 1])
    none = adapt(pop, one, one, Adaptation.NONE)
    twin = none.twins[one.subjects[0]]
    assert isinstance(twin, TwinModel) and twin is none.twins[one.subjects[1]]
    assert twin.params.rule == rule_ref(pop) and torch.equal(twin.params.w0, pop.w0.detach())
    full = adapt(pop, one, one, Adaptation.FULL, FitConfig(epochs=1, patience=1))
    a, b = (full.twins[s] for s in one.subjects)
    assert a.population is not b.population  # each fine-tuned twin references its own rule
    assert a.params.rule == rule_ref(a.population) and a.params.rule != b.params.rule


def test_a_new_animals_start_is_inferred_from_its_first_trials_not_the_population_mean():
    from twin.fit.adapt import StartPrior, infer_start
    from twin.models.params import TwinParams

    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    w0 = torch.tensor([[0.0, 1.5], [0.0, -1.5], [0.0, 0.8], [0.0, -0.8]])
    sim = simulate(truth, IBL_DEFAULT, 4, 600, seed=5, w0=w0)
    first = make_batch(sim.trials[sim.trials["session"] == 1])
    ref = rule_ref(truth)
    prior = StartPrior.from_params([TwinParams(w, torch.zeros(2), ref) for w in w0])  # mean 0, sd ~1.4 on the bias
    twins = infer_start(truth, first, prior)
    bias = torch.stack([twins[s].params.w0[1] for s in first.subjects])
    assert torch.all(torch.sign(bias) == torch.sign(w0[:, 1]))
    assert (bias - w0[:, 1]).abs().mean() < 0.5 * w0[:, 1].abs().mean()  # much closer than the prior mean (0)
    # a tight prior pulls the estimate toward its mean
    tight = infer_start(truth, first, StartPrior(torch.zeros(2), torch.full((2,), 0.01), torch.full((2,), 0.01)))
    assert max(float(t.params.w0.abs().max()) for t in tight.values()) < 0.05
    # the rule is shared, not copied, and the inferred rates are 0 unless asked for
    assert len({id(t.population) for t in twins.values()}) == 1
    assert all(float(t.params.log_rate.abs().max()) == 0.0 for t in twins.values())
    with_rate = infer_start(truth, first, prior, fit_rate=True)
    assert all(torch.isfinite(t.params.log_rate).all() and float(t.params.log_rate.abs().max()) > 0 for t in with_rate.values())
    with pytest.raises(ValueError, match="two"):
        StartPrior.from_params([TwinParams(w0[0], torch.zeros(2), ref)])



def test_cohort_start_prior_is_the_spread_of_the_animals_own_starts():
    from twin.fit.adapt import cohort_start_prior

    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    w0 = torch.tensor([[0.0, 1.5], [0.0, -1.5], [0.0, 0.8], [0.0, -0.8]])
    sim = simulate(truth, IBL_DEFAULT, 4, 600, seed=5, w0=w0)
    first = make_batch(sim.trials[sim.trials["session"] == 1])
    prior = cohort_start_prior(truth, first, iterations=30)
    assert 0.5 < float(prior.w0_sd[1]) < 3.0  # the bias starts differ: a wide bias prior, narrower than the wide one
    assert prior.w0_mean.shape == (2,) and bool((prior.log_rate_sd > 0).all())
    one = cohort_start_prior(truth, first.select([0]))  # no spread to measure: the wide prior itself
    assert torch.allclose(one.w0_sd, torch.full((2,), 3.0)) and torch.allclose(one.w0_mean, truth.w0.detach().float())


def test_batched_adaptation_warns_per_animal():
    """The epoch cap concerns every animal of the batch; worse than chance only the animals whose
    own validation LL is below a coin flip's."""
    from twin.data.splits import split_last_sessions
    from twin.fit.adapt import adapt_batched
    from twin.fit.train import FitConfig

    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    sim = simulate(truth, IBL_DEFAULT, 3, 1600, seed=5)
    train, val = split_last_sessions(make_batch(sim.trials), 2)  # two sessions: a truncated last one alone can be a handful of trials
    res = adapt_batched(truth, train, val, fit_rate=False, config=FitConfig(learning_rate=0.02, epochs=1, patience=5))
    assert set(res.warnings) == set(train.subjects)
    assert all(any("epoch cap 1" in m for m in msgs) for msgs in res.warnings.values())
    # the true rule predicts better than a coin flip on every animal: no such warning
    assert not any("coin flip" in m for msgs in res.warnings.values() for m in msgs)
    # the first animal errs on every validation trial: only its twin is worse than chance
    y, reward = val.y.clone(), val.reward.clone()
    y[0] = torch.where(val.mask[0], 1 - val.answer[0], y[0])
    reward[0] = torch.where(val.mask[0], torch.zeros_like(reward[0]), reward[0])
    bad = adapt_batched(truth, train, dataclasses.replace(val, y=y, reward=reward), fit_rate=False, config=FitConfig(learning_rate=0.02, epochs=1, patience=5))
    chance = {s for s, msgs in bad.warnings.items() if any("coin flip" in m for m in msgs)}
    assert chance == {train.subjects[0]}


def test_start_inference_backs_off_an_overflowing_step_and_keeps_finite_starts(monkeypatch, caplog):
    """A likelihood that keeps improving toward a region where the rollout overflows (NaN), as a
    fitted dnn_delta's did on the perseveration family (starts of order 1e24): the line search
    must back off the NaN instead of stepping on, and every start stays finite and no worse than
    the prior mean."""
    from twin.fit.adapt import StartPrior, infer_start
    from twin.models.learner import LearnerModel

    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    sim = simulate(truth, IBL_DEFAULT, 3, 300, seed=7)
    first = make_batch(sim.trials[sim.trials["session"] == 1])
    real = LearnerModel.log_likelihood

    def overflowing(self, batch, w0=None, log_rate=None, fused=True):  # type: ignore[no-untyped-def]
        ll = real(self, batch, w0, log_rate, fused)
        pull = 50.0 * log_rate.sum(1, keepdim=True) * batch.mask / batch.mask.sum(1, keepdim=True)  # more is better ...
        nan = (log_rate.max(1, keepdim=True).values > 3.0).expand_as(ll)  # ... until the rates overflow
        return torch.where(nan, torch.full_like(ll, float("nan")), ll + pull)

    monkeypatch.setattr(LearnerModel, "log_likelihood", overflowing)
    prior = StartPrior(torch.zeros(2), torch.full((2,), 3.0), torch.full((2,), 10.0))
    twins = infer_start(truth, first, prior, fit_rate=True, iterations=50)
    rates = torch.stack([t.params.log_rate for t in twins.values()])
    w0 = torch.stack([t.params.w0 for t in twins.values()])
    assert torch.isfinite(rates).all() and torch.isfinite(w0).all()
    assert float(rates.max()) <= 3.0 and float(w0.abs().max()) < 100.0
    assert float(rates.max()) > 0.5  # it did move toward the pull: not simply the prior mean
