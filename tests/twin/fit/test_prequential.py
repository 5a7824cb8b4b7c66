"""Scoring a rule re-started as each session arrives."""

from __future__ import annotations

import pytest
import torch

from twin.data.batch import make_batch
from twin.fit.adapt import StartPrior, infer_start
from twin.fit.prequential import session_by_session_log_likelihood
from twin.models.params import TwinParams, rule_ref
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.simulate import simulate


@pytest.fixture(scope="module")
def animals():
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    w0 = torch.tensor([[0.0, 1.5], [0.0, -1.5], [0.0, 0.8], [0.0, -0.8]])
    sim = simulate(truth, IBL_DEFAULT, 4, 1500, seed=5, w0=w0)
    batch = make_batch(sim.trials)
    prior = StartPrior.from_params([TwinParams(w, torch.zeros(2), rule_ref(truth)) for w in w0])
    return truth, batch, prior


def test_each_session_is_scored_from_the_start_its_earlier_sessions_give(animals):
    truth, batch, prior = animals
    ll = session_by_session_log_likelihood(truth, batch, prior, 2, iterations=30)
    assert ll.shape == batch.mask.shape
    assert bool((ll[batch.session < 2] == 0).all()) and bool((ll[(batch.session >= 2) & batch.valid] < 0).all())
    # session 3 by hand: the MAP from sessions 1-2, teacher-forced through session 3
    before = batch.truncate_sessions(torch.full((4,), 2, dtype=torch.long))
    starts = infer_start(truth, before.with_mask(before.valid), prior, fit_rate=True, iterations=30)
    w0 = torch.stack([starts[s].params.w0 for s in batch.subjects])
    rate = torch.stack([starts[s].params.log_rate for s in batch.subjects])
    with torch.no_grad():
        by_hand = truth.log_likelihood(batch, w0, rate)
    s3 = (batch.session == 3) & batch.valid
    # warm-started from session 2's MAP, so equal to the optimiser's tolerance, not bit for bit
    assert torch.allclose(ll[s3], by_hand[s3], atol=2e-3)


def test_re_starting_scores_later_sessions_better_than_a_start_fixed_at_the_first(animals):
    truth, batch, prior = animals
    rolling = session_by_session_log_likelihood(truth, batch, prior, 2, iterations=50)
    first = batch.truncate_sessions(torch.ones(4, dtype=torch.long))
    starts = infer_start(truth, first.with_mask(first.valid), prior, fit_rate=True, iterations=50)
    w0 = torch.stack([starts[s].params.w0 for s in batch.subjects])
    rate = torch.stack([starts[s].params.log_rate for s in batch.subjects])
    later = batch.with_mask(batch.valid & (batch.session >= 2))
    with torch.no_grad():
        fixed = truth.log_likelihood(later, w0, rate)
    assert float(rolling[later.mask].sum()) > float(fixed[later.mask].sum())


def test_the_scored_mask_is_honoured_and_bad_arguments_refused(animals):
    truth, batch, prior = animals
    only_first = batch.with_mask(batch.valid & (batch.session == 1))
    ll = session_by_session_log_likelihood(truth, only_first, prior, 1, iterations=10)
    assert bool((ll[~only_first.mask] == 0).all()) and bool((ll[only_first.mask] < 0).all())
    with torch.no_grad():  # session 1 from the prior mean
        prior_mean = truth.log_likelihood(only_first, prior.w0_mean.expand(4, 2), torch.zeros(4, 2))
    assert torch.allclose(ll[only_first.mask], prior_mean[only_first.mask], atol=1e-5)
    with pytest.raises(ValueError, match="first_scored"):
        session_by_session_log_likelihood(truth, batch, prior, 0)
    with pytest.raises(ValueError, match="init"):
        infer_start(truth, batch, prior, init=(torch.zeros(3, 2), torch.zeros(3, 2)))
