"""Stacking: ensemble weights by held-out likelihood recover the mixture that made the data."""

from __future__ import annotations

import pytest
import torch

from twin.fit.stacking import StackingConfig, stack, stacking_weights


def _bernoulli_ll(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(y == 1, p.log(), (1 - p).log())


def _components(n: int, g: torch.Generator) -> torch.Tensor:
    """``[3, n]`` three distinct per-trial predictors p(right): two independent, one a coin
    (no mixture of two equals the third, so the weights are identifiable)."""
    u = torch.rand(2, n, generator=g)
    return torch.cat([0.05 + 0.9 * u, torch.full((1, n), 0.5)])


def test_the_generating_component_gets_most_of_the_weight():
    g = torch.Generator().manual_seed(0)
    p = _components(4000, g)
    y = (torch.rand(4000, generator=g) < p[1]).float()  # component 1 made the data
    w = stacking_weights(_bernoulli_ll(p, y))
    assert w.shape == (3,) and abs(float(w.sum()) - 1) < 1e-9 and bool((w >= 0).all())
    assert int(w.argmax()) == 1 and float(w[1]) > 0.95


def test_a_known_mixture_is_recovered():
    g = torch.Generator().manual_seed(1)
    n = 20000
    p = _components(n, g)
    true = torch.tensor([0.6, 0.0, 0.4], dtype=torch.float64)
    k = torch.multinomial(true.float(), n, replacement=True, generator=g)  # each trial from one component
    y = (torch.rand(n, generator=g) < p[k, torch.arange(n)]).float()
    w = stacking_weights(_bernoulli_ll(p, y))
    assert torch.allclose(w, true, atol=0.05), w
    # the maximum: no other point of the simplex does better
    obj = lambda v: float(torch.logsumexp(_bernoulli_ll(p, y).double() + v.log().unsqueeze(1), 0).sum())  # noqa: E731
    for other in (true.clamp(min=1e-9), torch.tensor([1 / 3] * 3, dtype=torch.float64), torch.tensor([0.5, 0.1, 0.4], dtype=torch.float64)):
        assert obj(w.clamp(min=1e-12)) >= obj(other) - 1e-6


def test_per_animal_weights_shrink_to_the_cohort():
    g = torch.Generator().manual_seed(2)
    a, t = 6, 3000
    p = _components(a * t, g).reshape(3, a, t)
    makers = torch.tensor([0, 0, 0, 0, 0, 1])  # the last animal follows component 1
    y = (torch.rand(a, t, generator=g) < p[makers, torch.arange(a)]).float()
    ll = _bernoulli_ll(p, y.unsqueeze(0).expand(3, -1, -1))
    mask = torch.ones(a, t, dtype=torch.bool)
    mask[4, 20:] = False  # animal 4 has only 20 held-out trials
    res = stack(ll, mask, StackingConfig(shrinkage=100.0))
    assert int(res.cohort.argmax()) == 0
    assert int(res.per_animal[5].argmax()) == 1  # enough evidence to leave the cohort
    assert torch.allclose(res.per_animal[4], res.cohort, atol=0.1)  # little evidence: stays near it
    assert torch.allclose(res.per_animal.sum(1), torch.ones(a, dtype=torch.float64))
    pooled = stack(ll, mask, StackingConfig(shrinkage=None))
    assert torch.equal(pooled.per_animal, pooled.cohort.expand(a, -1))
    assert res.ensemble_ll >= pooled.ensemble_ll - 1e-9  # per-animal weights fit at least as well
    assert res.n_trials.tolist() == [t, t, t, t, 20, t]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        stacking_weights(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="prior"):
        stacking_weights(torch.zeros(2, 3), concentration=5.0)
    with pytest.raises(ValueError, match="no held-out"):
        stack(torch.zeros(2, 1, 3), torch.zeros(1, 3, dtype=torch.bool))
