"""Δw maps: the REINFORCE truth against its closed form, and the comparison of two maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.analysis.dwmap import SIGNED_CONTRASTS, compare_delta_w, compare_on_trials, delta_w, sample_states
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import NetworkConfig

STATES = torch.tensor([[0.0, 0.0], [1.5, -0.4], [-0.7, 0.9], [3.0, 0.2]])
CONTRASTS = torch.tensor(SIGNED_CONTRASTS)


def closed_form_reinforce(alpha, base, w, c, correct):
    """Δw = α (r − b)(y − p) x with x = [g(c_R) − g(c_L), 1], answer right at c >= 0."""
    n, m = w.shape[0], c.shape[0]
    out = torch.zeros(n, m, 2, dtype=torch.float64)
    for i in range(n):
        for j in range(m):
            cj = float(c[j])
            s = math.copysign(math.tanh(5 * abs(cj)) / math.tanh(5.0), cj) if cj != 0 else 0.0
            x = (s, 1.0)
            answer = 1.0 if cj >= 0 else 0.0
            y = answer if correct else 1.0 - answer
            r = 1.0 if correct else 0.0
            p = 1 / (1 + math.exp(-(float(w[i, 0]) * x[0] + float(w[i, 1]) * x[1])))
            for k in range(2):
                out[i, j, k] = alpha[k] * (r - base[k]) * (y - p) * x[k]
    return out


@pytest.mark.parametrize("correct", [True, False])
def test_reinforce_truth_matches_closed_form(correct):
    gt = DEFAULT_TRUTHS[Family.REINFORCE]
    model = gt.build()
    dw = delta_w(model, STATES, CONTRASTS, correct)
    assert dw.shape == (4, len(SIGNED_CONTRASTS), 2)
    expected = closed_form_reinforce(gt.alpha, gt.baseline, STATES, CONTRASTS, correct)
    # float32: Δw is a difference of weights of size ~1, so allow a few float32 ulps of w
    torch.testing.assert_close(dw.double(), expected, rtol=1e-4, atol=1e-6)
    # in float64 the closed form holds to rounding
    dw64 = delta_w(model, STATES.double(), CONTRASTS.double(), correct)
    assert dw64.dtype == torch.float64
    torch.testing.assert_close(dw64, expected, rtol=1e-6, atol=1e-12)
    # the map is not flat in contrast
    assert dw[1, :, 0].unique().numel() > 5
    assert dw[1, :, 1].unique().numel() > 5


def test_reinforce_stimulus_update_is_zero_at_zero_contrast():
    model = DEFAULT_TRUTHS[Family.REINFORCE].build()
    j0 = SIGNED_CONTRASTS.index(0.0)
    for correct in (True, False):
        dw = delta_w(model, STATES, CONTRASTS, correct)
        assert torch.all(dw[:, j0, 0] == 0)
        assert torch.all(dw[:, j0, 1] != 0)  # the bias still learns
        others = [j for j in range(len(SIGNED_CONTRASTS)) if j != j0]
        assert torch.all(dw[:, others, 0] != 0)


def test_reinforce_update_signs():
    """After a correct trial REINFORCE (b = 0.5) pushes toward the choice made; after an error away."""
    model = DEFAULT_TRUTHS[Family.REINFORCE].build()
    c = torch.tensor([-1.0, 1.0])
    w = torch.zeros(1, 2)
    right = delta_w(model, w, c, correct=True)[0]
    assert right[1, 0] > 0 and right[1, 1] > 0  # rewarded right choice at +1: stimulus and bias up
    assert right[0, 0] > 0 and right[0, 1] < 0  # rewarded left choice at -1: stimulus up, bias down
    wrong = delta_w(model, w, c, correct=False)[0]
    assert wrong[1, 0] > 0 and wrong[1, 1] > 0  # chose left at +1: bias pushed to the right


def test_delta_w_matches_a_rollout_step_for_a_network_rule():
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec("rnn", rule_config=NetworkConfig(hidden_size=6, scale_init=0.1)))
    h = torch.randn(4, 6) * 0.3
    dw = delta_w(model, STATES, CONTRASTS, True, h=h)
    dw0 = delta_w(model, STATES, CONTRASTS, True)
    assert not torch.allclose(dw, dw0)  # the state matters for a history-dependent rule
    torch.testing.assert_close(dw0, delta_w(model, STATES, CONTRASTS, True, h=torch.zeros(4, 6)))


def test_compare_with_itself_is_perfect():
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    cmp = compare_delta_w(truth, truth, STATES)
    assert set(cmp.correlation) == {"stimulus", "bias", "all"}
    for v in cmp.correlation.values():
        assert v == pytest.approx(1.0, abs=1e-9)
    assert cmp.min_correlation == pytest.approx(1.0, abs=1e-9)
    t = cmp.table
    assert len(t) == 2 * 4 * len(SIGNED_CONTRASTS) * 2
    assert set(t["outcome"]) == {"correct", "error"}
    assert (t["dw_true"] == t["dw_model"]).all()
    row = t[(t["state"] == 1) & (t["contrast"] == 0.5) & (t["outcome"] == "error") & (t["weight"] == "bias")]
    assert len(row) == 1
    gt = DEFAULT_TRUTHS[Family.REINFORCE]
    expected = closed_form_reinforce(gt.alpha, gt.baseline, STATES[1:2], torch.tensor([0.5]), False)[0, 0, 1]
    assert row["dw_true"].iloc[0] == pytest.approx(float(expected), rel=1e-4)


def test_compare_different_rules():
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    other = DEFAULT_TRUTHS[Family.ASYMMETRIC].build()
    cmp = compare_delta_w(truth, other, STATES)
    assert cmp.min_correlation < 0.999
    assert all(-1.0 <= v <= 1.0 for v in cmp.correlation.values())
    # a scaled copy of the truth is still perfectly correlated
    scaled = DEFAULT_TRUTHS[Family.REINFORCE].build()
    with torch.no_grad():
        scaled.rule.log_alpha.add_(math.log(3.0))
    cmp = compare_delta_w(truth, scaled, STATES)
    assert cmp.min_correlation == pytest.approx(1.0, abs=1e-6)


def test_sample_states():
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(3, 10, 2, generator=g)
    valid = torch.zeros(3, 10, dtype=torch.bool)
    valid[0, :4] = True
    valid[2, :6] = True
    s = sample_states(weights, valid, 5, seed=1)
    assert s.shape == (5, 2)
    pool = weights[valid]
    for row in s:
        assert (pool == row).all(1).any()
    assert len({tuple(r.tolist()) for r in s}) == 5  # without replacement
    assert torch.equal(s, sample_states(weights, valid, 5, seed=1))
    assert sample_states(weights, valid, 100, seed=1).shape == (10, 2)  # capped at what exists
    assert np.isfinite(s.numpy()).all()


def test_compare_on_trials_uses_the_trials_as_they_happened():
    from twin.data.batch import make_batch
    from twin.sim.simulate import simulate
    from twin.protocol import IBL_DEFAULT

    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    sim = simulate(truth, IBL_DEFAULT, 3, 400, seed=0)
    batch = make_batch(sim.trials)
    same = compare_on_trials(truth, truth, sim.weights, batch, 500, seed=0)
    assert set(same) == {"stimulus", "bias"} and all(v == pytest.approx(1.0, abs=1e-6) for v in same.values())
    other = compare_on_trials(truth, DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), sim.weights, batch, 500, seed=0)
    assert all(-1.0 <= v < 0.999 for v in other.values())
    # seeded: the same sample gives the same figures
    assert compare_on_trials(truth, DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), sim.weights, batch, 500, seed=0) == other
