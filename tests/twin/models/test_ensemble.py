"""The ensemble twin: its prediction is the weighted mixture of its components'."""

from __future__ import annotations

import pytest
import torch

from twin.data.batch import make_batch
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.simulate import simulate


def _twin(rule: str, seed: int) -> TwinModel:
    torch.manual_seed(seed)
    m = LearnerModel(ModelSpec(rule))
    with torch.no_grad():
        m.w0.copy_(torch.randn(m.n_weights))
        for p in m.rule.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return TwinModel.of(m.eval().requires_grad_(False))


def ensemble(weights=(0.5, 0.3, 0.2)) -> TwinEnsemble:
    return TwinEnsemble.of([_twin("static", 0), _twin("reinforce", 1), _twin("dnn", 2)], weights, ["static/seed0", "reinforce/seed0", "dnn/seed0"])


@pytest.fixture(scope="module")
def batch():
    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 2, 600, seed=3).trials
    return make_batch(trials, ModelSpec("static").features)


def test_prediction_is_the_weighted_mixture(batch):
    ens = ensemble()
    p = ens.p_right(batch)
    expect = sum(float(w) * torch.sigmoid((c.model.trajectory(batch) * batch.x).sum(-1)).double() for c, w in zip(ens.components, ens.weights))
    assert torch.allclose(p, expect, atol=1e-12)
    ll = ens.log_likelihood(batch).double()
    direct = torch.where(batch.y == 1, p.log(), (1 - p).log()) * batch.mask
    assert torch.allclose(ll, direct, atol=1e-5)
    comp = ens.component_log_likelihood(batch)
    assert comp.shape == (3, batch.n_animals, batch.x.shape[1])
    # a mixture is never worse than its worst component, nor better than its best, on every trial
    m = batch.mask
    assert bool((ll[m] <= comp.double().max(0).values[m] + 1e-6).all()) and bool((ll[m] >= comp.double().min(0).values[m] - 1e-6).all())


def test_one_component_with_all_the_weight_is_that_component(batch):
    ens = ensemble((0.0, 1.0, 0.0))
    assert ens.main == 1
    assert torch.allclose(ens.log_likelihood(batch), ens.components[1].model.log_likelihood(batch), atol=1e-6)


def test_components_are_drawn_in_proportion():
    ens = ensemble((0.6, 0.3, 0.1))
    k = ens.sample(20000, torch.Generator().manual_seed(0))
    freq = torch.bincount(k, minlength=3).double() / len(k)
    assert torch.allclose(freq, ens.weights, atol=0.015)


def test_bad_ensembles_are_refused():
    a, b = _twin("static", 0), _twin("dnn", 1)
    with pytest.raises(ValueError, match="simplex|sum to 1"):
        TwinEnsemble((a, b), torch.tensor([0.7, 0.7]), ("a", "b"))
    with pytest.raises(ValueError, match="weights and labels"):
        TwinEnsemble.of([a, b], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        TwinEnsemble((), torch.zeros(0), ())
