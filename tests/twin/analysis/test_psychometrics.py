"""The erf psychometric and its batched maximum-likelihood fit."""

from __future__ import annotations

import math
import time

import pytest
import torch

from twin.analysis.psychometrics import erf_psychometric, fit_psychometric, psychometric_nll, session_psychometrics

LEVELS = torch.tensor([-100, -50, -25, -12.5, -6.25, 0, 6.25, 12.5, 25, 50, 100.0], dtype=torch.float64)


def simulate_psychometric(params: torch.Tensor, n_trials: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, T]`` contrasts (uniform over LEVELS) and choices drawn from the erf model."""
    g = torch.Generator().manual_seed(seed)
    x = LEVELS[torch.randint(0, len(LEVELS), (params.shape[0], n_trials), generator=g)]
    b, s, gl, gh = (params[:, i : i + 1] for i in range(4))
    p = erf_psychometric(x, b, s, gl, gh)
    return x, (torch.rand(x.shape, generator=g, dtype=torch.float64) < p).double()



def test_psychometric_uses_the_psychofit_threshold_convention():
    # threshold divides (x - bias) inside erf with no sqrt(2): one threshold right of the bias,
    # the lapse-free curve is at (1 + erf(1)) / 2 = 0.921, not at Phi(1) = 0.841
    p = erf_psychometric(torch.tensor([10.0, 30.0]), 10.0, 20.0, 0.1, 0.2)
    assert p[0].item() == pytest.approx(0.1 + 0.7 * 0.5)
    assert p[1].item() == pytest.approx(0.1 + 0.7 * 0.5 * (1 + math.erf(1.0)))


def test_fit_recovers_known_parameters_in_batch():
    truth = torch.tensor(
        [[0.0, 10.0, 0.02, 0.02], [-12.0, 20.0, 0.1, 0.05], [8.0, 5.0, 0.0, 0.15], [20.0, 30.0, 0.2, 0.1], [-5.0, 15.0, 0.05, 0.25]],
        dtype=torch.float64,
    )
    x, c = simulate_psychometric(truth, 20_000, seed=1)
    fit = session_psychometrics(x, c)
    # tolerances: ~4 standard errors at 20,000 trials over 11 contrasts
    assert torch.allclose(fit.bias, truth[:, 0], atol=2.0), (fit.bias, truth[:, 0])
    assert ((fit.threshold - truth[:, 1]).abs() / truth[:, 1]).max() < 0.15, fit.threshold
    assert torch.allclose(fit.lapse_low, truth[:, 2], atol=0.025), fit.lapse_low
    assert torch.allclose(fit.lapse_high, truth[:, 3], atol=0.025), fit.lapse_high
    assert fit.n_trials.tolist() == [20_000] * 5


def test_batch_fit_equals_per_session_fit_with_padding():
    truth = torch.tensor([[5.0, 12.0, 0.05, 0.1], [-20.0, 25.0, 0.15, 0.02], [0.0, 3.0, 0.0, 0.0], [10.0, 40.0, 0.3, 0.3]], dtype=torch.float64)
    x, c = simulate_psychometric(truth, 800, seed=2)
    lengths = [800, 300, 650, 120]
    mask = torch.arange(800)[None, :] < torch.tensor(lengths)[:, None]
    batch = session_psychometrics(x, c, mask)
    for i, n in enumerate(lengths):
        one = fit_psychometric(x[i, :n], c[i, :n])
        assert one.n_trials == n
        got = [batch.bias[i], batch.threshold[i], batch.lapse_low[i], batch.lapse_high[i], batch.nll[i]]
        want = [one.bias, one.threshold, one.lapse_low, one.lapse_high, one.nll]
        assert [float(v) for v in got] == pytest.approx(want, rel=1e-5, abs=1e-5), i
    # padding is ignored whatever it holds
    x2 = torch.where(mask, x, torch.full_like(x, -100.0))
    c2 = torch.where(mask, c, torch.ones_like(c))
    again = session_psychometrics(x2, c2, mask)
    assert torch.allclose(again.params(), batch.params(), atol=1e-6)


def test_fit_likelihood_is_at_least_that_of_the_true_parameters():
    g = torch.Generator().manual_seed(3)
    n = 300
    truth = torch.stack(
        [
            (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 50,
            3 + torch.rand(n, generator=g, dtype=torch.float64) * 40,
            torch.rand(n, generator=g, dtype=torch.float64) * 0.3,
            torch.rand(n, generator=g, dtype=torch.float64) * 0.3,
        ],
        1,
    )
    x, c = simulate_psychometric(truth, 400, seed=4)
    fit = session_psychometrics(x, c)
    at_fit = psychometric_nll(fit.params(), x, c)
    assert torch.allclose(at_fit, fit.nll, atol=1e-8)
    assert (at_fit <= psychometric_nll(truth, x, c) + 1e-9).all()
    # within the bounds
    assert (fit.bias.abs() <= 100).all() and (fit.threshold > 0).all() and (fit.threshold <= 100).all()
    assert ((fit.lapse_low >= 0) & (fit.lapse_low < 1) & (fit.lapse_high >= 0) & (fit.lapse_high < 1)).all()


def test_fit_is_fast_enough_for_thousands_of_sessions():
    g = torch.Generator().manual_seed(5)
    n = 2000
    truth = torch.stack([torch.zeros(n), 5 + 20 * torch.rand(n, generator=g), torch.full((n,), 0.05), torch.full((n,), 0.05)], 1).double()
    x, c = simulate_psychometric(truth, 600, seed=6)
    t0 = time.perf_counter()
    session_psychometrics(x, c)
    # about 0.4 s on one CPU thread; the bound only catches a pathological slowdown
    assert time.perf_counter() - t0 < 10.0


def test_a_perfect_observer_fits_without_nan():
    fit = fit_psychometric([-100, -50, -6.25, 0, 0, 6.25, 50, 100] * 20, [0, 0, 0, 0, 1, 1, 1, 1] * 20)
    assert all(math.isfinite(v) for v in (fit.bias, fit.threshold, fit.lapse_low, fit.lapse_high, fit.nll))
    assert abs(fit.bias) < 6.25 and fit.threshold < 6.25 and fit.lapse_low < 1e-3 and fit.lapse_high < 1e-3


def test_fit_input_errors():
    x, c = simulate_psychometric(torch.tensor([[0.0, 10.0, 0.05, 0.05]] * 2, dtype=torch.float64), 50, seed=0)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] have no trials"):
        session_psychometrics(x, c, mask)
    with pytest.raises(ValueError, match="percent"):
        session_psychometrics(x / 100, c)
    with pytest.raises(ValueError, match="0/1"):
        session_psychometrics(x, 2 * c - 1)
    with pytest.raises(ValueError, match="shape"):
        session_psychometrics(x, c[:, :10])
    with pytest.raises(ValueError, match="no trials"):
        fit_psychometric([], [])
