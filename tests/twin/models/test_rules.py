"""Learning rules: the registry, the precompute/step/rollout contract every rule shares, the
closed forms of the interpretable rules, and the reference networks behind DNN and RNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from twin.errors import UnknownRuleError
from twin.models.rules import (
    MODEL_RULES,
    DNNDeltaConfig,
    NetworkConfig,
    ReinforceConfig,
    RuleConfig,
    UpdateInputs,
    config_fields,
    get_rule,
    make_config,
    make_rule,
    rule_names,
)
from twin.models.rules.reinforce import AsymmetricPredictionErrorRule, ReinforceRule, RewardHistoryReinforceRule
from twin.models.rules.reinforce_variants import BoundedReinforceRule, ForgettingReinforceRule, PerseverationReinforceRule

ALL_RULES = rule_names()
LEARNING_RULES = tuple(r for r in ALL_RULES if r != "static")
K = 2


def random_inputs(b: int = 3, t: int = 12, k: int = K, seed: int = 0) -> UpdateInputs:
    """Consistent random trials: reward = (choice == answer), a session break at trial 5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, k, generator=g)
    y = (torch.rand(b, t, generator=g) < 0.5).float()
    answer = (torch.rand(b, t, generator=g) < 0.5).float()
    reward = (y == answer).float()
    ss = torch.zeros(b, t)
    ss[:, 0] = 1
    ss[:, min(5, t - 1)] = 1
    return UpdateInputs.from_trials(x, y, reward, answer, ss)


def make(name: str, k: int = K, seed: int = 0, **options: object):
    """Rule ``name`` (hidden size 8 unless given), its parameters drawn with ``seed``."""
    torch.manual_seed(seed)
    return make_rule(name, k, make_config(name, **{"hidden_size": 8, **options}))


# --------------------------------------------------------------------------------------------
# registry


def test_registry_lists_every_builtin_rule():
    assert set(ALL_RULES) == {
        "static", "reinforce", "dnn", "dnn_delta", "rnn", "pe_asymmetric", "reinforce_history",
        "reinforce_perseveration", "reinforce_bounded", "reinforce_forgetting",
    }
    assert list(ALL_RULES) == sorted(ALL_RULES)
    assert set(MODEL_RULES) <= set(ALL_RULES)
    for name in ALL_RULES:
        assert get_rule(name).name == name


def test_unknown_rule_names_the_known_ones():
    with pytest.raises(UnknownRuleError) as info:
        make_rule("lstm", K)
    msg = str(info.value)
    assert "'lstm'" in msg
    for name in ALL_RULES:
        assert name in msg
    assert isinstance(info.value, KeyError)  # callers catching KeyError still work
    with pytest.raises(UnknownRuleError):
        get_rule("")


def test_markovian_flags():
    flags = {name: get_rule(name).markovian for name in ALL_RULES}
    assert flags == {
        "static": True,
        "reinforce": True,
        "pe_asymmetric": True,
        "dnn": True,
        "dnn_delta": True,
        "rnn": False,
        "reinforce_history": False,
        "reinforce_perseveration": False,
        "reinforce_bounded": True,
        "reinforce_forgetting": True,
    }
    assert get_rule("static").learns is False
    assert all(get_rule(n).learns for n in LEARNING_RULES)


@pytest.mark.parametrize(
    "config_type, bad",
    [(NetworkConfig, dict(hidden_size=0)), (NetworkConfig, dict(scale_init=0.0)), (DNNDeltaConfig, dict(hidden_size=0)), (ReinforceConfig, dict(alpha_init=-1.0))],
)
def test_rule_config_rejects_bad_values(config_type, bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        config_type(**bad)


def test_each_rule_has_its_own_config_type():
    families = {
        RuleConfig: ("static",),
        ReinforceConfig: ("reinforce", "pe_asymmetric", "reinforce_history", "reinforce_perseveration", "reinforce_bounded", "reinforce_forgetting"),
        NetworkConfig: ("dnn", "rnn"),
        DNNDeltaConfig: ("dnn_delta",),
    }
    assert {name: get_rule(name).config_type for name in ALL_RULES} == {n: t for t, names in families.items() for n in names}
    assert config_fields() == {"hidden_size", "scale_init", "alpha_init", "within_session_drift", "mirror_symmetric"}


def test_make_config_takes_the_options_the_rule_uses():
    options = dict(hidden_size=7, alpha_init=0.5, mirror_symmetric=True)
    assert make_config("static", **options) == RuleConfig()
    assert make_config("reinforce", **options) == ReinforceConfig(alpha_init=0.5)
    assert make_config("rnn", **options) == NetworkConfig(hidden_size=7)
    assert make_config("dnn_delta", **options) == DNNDeltaConfig(hidden_size=7, mirror_symmetric=True)
    with pytest.raises(TypeError, match="hiden_size"):
        make_config("dnn", hiden_size=7)
    with pytest.raises(UnknownRuleError):
        make_config("lstm")


def test_a_rule_refuses_another_rules_config():
    with pytest.raises(TypeError, match="NetworkConfig"):
        make_rule("dnn", K, ReinforceConfig())
    with pytest.raises(TypeError, match="DNNDeltaConfig"):
        make_rule("dnn_delta", K, NetworkConfig())
    assert make_rule("reinforce", K).config == ReinforceConfig()


# --------------------------------------------------------------------------------------------
# the contract every rule shares


@pytest.mark.parametrize("name", ALL_RULES)
def test_state_size_and_initial_state(name):
    rule = make(name, hidden_size=7)
    expected = {"rnn": 7, "reinforce_history": 1, "reinforce_perseveration": 1}.get(name, 0)
    assert rule.state_size == expected
    h = rule.initial_state(5)
    assert h.shape == (5, expected)
    assert torch.count_nonzero(h) == 0


@pytest.mark.parametrize("name", ALL_RULES)
def test_precompute_is_time_major(name):
    rule = make(name)
    inp = random_inputs(b=3, t=12)
    pre = rule.precompute(inp)
    assert pre.dim() == 3
    assert pre.shape[:2] == (12, 3)
    if name == "static":
        assert pre.shape[2] == 0
    assert torch.isfinite(pre).all()


@pytest.mark.parametrize("name", ALL_RULES)
def test_rollout_equals_a_loop_of_steps(name):
    rule = make(name, seed=1)
    inp = random_inputs(b=4, t=15, seed=2)
    pre = rule.precompute(inp)
    w0 = torch.randn(4, K, generator=torch.Generator().manual_seed(3))
    h0 = rule.initial_state(4)
    ws, h_end = rule.rollout(w0, h0, pre)
    assert ws.shape == (15, 4, K)
    assert torch.isfinite(ws).all() and torch.isfinite(h_end).all()
    w, h, ctx = w0, h0, rule.context()
    for t in range(15):
        w, h = rule.step(w, h, pre[t], ctx)
        torch.testing.assert_close(ws[t], w, rtol=0, atol=1e-6)
    torch.testing.assert_close(h_end, h, rtol=0, atol=1e-6)
    # an empty rollout returns no weights and the state unchanged
    ws0, h0_out = rule.rollout(w0, h0, pre[:0])
    assert ws0.shape == (0, 4, K)
    assert torch.equal(h0_out, h0)


@pytest.mark.parametrize("name", LEARNING_RULES)
def test_learning_rules_change_the_weights(name):
    rule = make(name, seed=4)
    inp = random_inputs(seed=5)
    w0 = torch.randn(3, K, generator=torch.Generator().manual_seed(6))
    ws, _ = rule.rollout(w0, rule.initial_state(3), rule.precompute(inp))
    assert (ws[-1] - w0).abs().max() > 0


def test_static_delta_w_is_exactly_zero():
    rule = make("static")
    inp = random_inputs(b=3, t=20)
    w0 = torch.randn(3, K, generator=torch.Generator().manual_seed(0))
    ws, h = rule.rollout(w0, rule.initial_state(3), rule.precompute(inp))
    assert ws.shape == (20, 3, K)
    assert torch.equal(ws, w0.unsqueeze(0).expand_as(ws))
    w1, _ = rule.step(w0, h, rule.precompute(inp)[0], rule.context())
    assert torch.equal(w1, w0)
    assert list(rule.parameters()) == []


# --------------------------------------------------------------------------------------------
# closed forms of the interpretable rules


def one_trial(x: list[float], y: float, reward: float, answer: float) -> UpdateInputs:
    return UpdateInputs(
        x=torch.tensor([[x]]),
        y=torch.tensor([[y]]),
        reward=torch.tensor([[reward]]),
        answer=torch.tensor([[answer]]),
        next_session_start=torch.zeros(1, 1),
    )


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize(
    "w, x, y, r",
    [
        ([0.3, -0.2], [0.8, 1.0], 1.0, 1.0),  # correct right choice
        ([0.3, -0.2], [-0.5, 1.0], 1.0, 0.0),  # error: chose right, stimulus left
        ([-1.2, 0.4], [1.0, 1.0], 0.0, 0.0),  # error: chose left
        ([0.0, 0.0], [0.0, 1.0], 0.0, 1.0),  # zero contrast, rewarded left
    ],
)
def test_reinforce_step_matches_closed_form(w, x, y, r):
    alpha, base = [0.05, 0.02], [0.4, 0.7]
    rule = ReinforceRule(K).set_parameters(alpha, base)
    inp = one_trial(x, y, r, answer=y if r else 1 - y)
    w_t = torch.tensor([w])
    w_new, _ = rule.step(w_t, rule.initial_state(1), rule.precompute(inp)[0], rule.context())
    p = sigmoid(sum(wi * xi for wi, xi in zip(w, x)))
    expected = [w[i] + alpha[i] * (r - base[i]) * (y - p) * x[i] for i in range(K)]
    torch.testing.assert_close(w_new[0], torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "w, x, y, answer",
    [
        ([0.5, 0.1], [0.9, 1.0], 1.0, 1.0),
        ([0.5, 0.1], [0.9, 1.0], 0.0, 1.0),
        ([2.0, -0.3], [-0.7, 1.0], 1.0, 0.0),  # confident error: large update
    ],
)
def test_pe_asymmetric_matches_closed_form(w, x, y, answer):
    a_c, a_e = [0.01, 0.02], [0.07, 0.03]
    rule = AsymmetricPredictionErrorRule(K).set_parameters(a_c, a_e)
    r = float(y == answer)
    inp = one_trial(x, y, r, answer)
    w_new, _ = rule.step(torch.tensor([w]), rule.initial_state(1), rule.precompute(inp)[0], rule.context())
    p = sigmoid(sum(wi * xi for wi, xi in zip(w, x)))
    alpha = a_c if r else a_e
    expected = [w[i] + alpha[i] * (answer - p) * x[i] for i in range(K)]
    torch.testing.assert_close(w_new[0], torch.tensor(expected), rtol=0, atol=1e-6)


def test_reinforce_history_gain_grows_along_rewards_and_resets_after_error():
    """The gain on trial t comes from the run of rewards before it, so an error that ends a run is
    scaled up too, and the trial after an error starts from gain 1."""
    alpha, base, kappa, tau = [0.05, 0.05], [0.5, 0.5], 3.0, 4.0
    rule = RewardHistoryReinforceRule(K).set_parameters(alpha, base, kappa, tau)
    plain = ReinforceRule(K).set_parameters(alpha, base)
    rewards = [1, 1, 1, 1, 1, 0, 1, 1]
    n = len(rewards)
    w = torch.tensor([[0.2, -0.1]])
    x = torch.tensor([[[0.6, 1.0]] * n])
    y = torch.ones(1, n)
    r = torch.tensor([rewards], dtype=torch.float32)
    inp = UpdateInputs(x=x, y=y, reward=r, answer=torch.where(r > 0, y, 1 - y), next_session_start=torch.zeros(1, n))
    pre, pre_plain = rule.precompute(inp), plain.precompute(inp)
    h = rule.initial_state(1)
    gains, counts = [], []
    for t in range(n):
        # same w every trial, so the ratio to plain REINFORCE is the gain alone
        w_new, h = rule.step(w, h, pre[t], rule.context())
        w_plain, _ = plain.step(w, plain.initial_state(1), pre_plain[t], plain.context())
        ratio = ((w_new - w) / (w_plain - w)).detach()
        assert torch.allclose(ratio[0, 0], ratio[0, 1], atol=1e-5)
        gains.append(float(ratio[0, 0]))
        counts.append(float(h[0, 0].detach()))
    assert counts == [1, 2, 3, 4, 5, 0, 1, 2]
    before = [0.0] + counts[:-1]  # the run of rewards leading up to each trial
    expected = [1 + kappa * (1 - math.exp(-c / tau)) for c in before]
    assert gains == pytest.approx(expected, rel=1e-4)
    assert gains[0] == pytest.approx(1.0, abs=1e-5)  # no run yet: plain REINFORCE
    assert all(b > a for a, b in zip(gains[:6], gains[1:6]))  # grows along the run...
    assert gains[5] > gains[4]  # ...and the error that ends it is scaled up the most
    assert gains[6] == pytest.approx(1.0, abs=1e-5)  # after an error a new run starts from scratch
    assert gains[5] < 1 + kappa


def test_perseveration_adds_the_change_of_an_exponential_choice_trace():
    """w_t = u_t + φ c_t: the kernel part of the update is φ (c_{t+1} − c_t), c an exponential
    trace of the choices (±1); with the same REINFORCE part, the difference to plain REINFORCE
    after a run of right choices is φ c."""
    alpha, base, phi, eta = [0.05, 0.02], [0.4, 0.7], [0.0, 1.5], 0.25
    rule = PerseverationReinforceRule(K).set_parameters(alpha, base).set_kernel(phi, eta)
    plain = ReinforceRule(K).set_parameters(alpha, base)
    w, h = torch.tensor([[0.3, -0.2]]), rule.initial_state(1)
    choices = [1.0, 1.0, 1.0, 0.0, 1.0]
    c = 0.0
    for y in choices:
        inp = one_trial([0.8, 1.0], y, 1.0, answer=y)
        w_new, h = rule.step(w, h, rule.precompute(inp)[0], rule.context())
        w_plain, _ = plain.step(w, plain.initial_state(1), plain.precompute(inp)[0], plain.context())
        c_next = c + eta * ((2 * y - 1) - c)
        torch.testing.assert_close(w_new - w_plain, torch.tensor([[0.0, phi[1] * (c_next - c)]]), rtol=0, atol=1e-6)
        assert float(h[0, 0].detach()) == pytest.approx(c_next, abs=1e-6)
        w, c = w_new, c_next
    assert 0 < c < 1  # three rights, a left, a right


@pytest.mark.parametrize("w, y, r", [([0.5, 0.1], 1.0, 1.0), ([0.5, 0.1], 0.0, 0.0), ([1.2, -0.3], 1.0, 1.0), ([-0.5, 0.2], 0.0, 1.0)])
def test_bounded_step_matches_closed_form(w, y, r):
    alpha, base, bound = [0.2, 0.1], [0.3, 0.5], [1.0, 2.0]
    rule = BoundedReinforceRule(K).set_parameters(alpha, base).set_bound(bound)
    x = [0.9, 1.0]
    inp = one_trial(x, y, r, answer=y if r else 1 - y)
    w_new, _ = rule.step(torch.tensor([w]), rule.initial_state(1), rule.precompute(inp)[0], rule.context())
    p = sigmoid(sum(wi * xi for wi, xi in zip(w, x)))
    expected = []
    for i in range(K):
        d = alpha[i] * (r - base[i]) * (y - p) * x[i]
        sign = (d > 0) - (d < 0)
        expected.append(w[i] + d * max(0.0, 1 - sign * w[i] / bound[i]))
    torch.testing.assert_close(w_new[0], torch.tensor(expected), rtol=0, atol=1e-6)


def test_bounded_weights_plateau_at_the_bound():
    rule = BoundedReinforceRule(K).set_parameters([0.5, 0.5], [0.0, 0.0]).set_bound([0.6, 100.0])
    n = 400
    x = torch.tensor([[[1.0, 0.0]] * n])
    y = torch.ones(1, n)
    inp = UpdateInputs(x=x, y=y, reward=torch.ones(1, n), answer=y, next_session_start=torch.zeros(1, n))
    ws, _ = rule.rollout(torch.zeros(1, K), rule.initial_state(1), rule.precompute(inp))
    assert 0.55 < float(ws[-1, 0, 0].detach()) <= 0.6  # always rewarded, and still never past the bound
    assert (ws[1:, 0, 0] >= ws[:-1, 0, 0]).all()


def test_forgetting_shrinks_the_weights_only_into_a_new_session():
    alpha, base, f = [0.05, 0.02], [0.4, 0.7], [0.3, 0.0]
    rule = ForgettingReinforceRule(K).set_parameters(alpha, base).set_forgetting(f)
    plain = ReinforceRule(K).set_parameters(alpha, base)
    w = torch.tensor([[1.0, -0.4]])
    for boundary in (0.0, 1.0):
        inp = one_trial([0.8, 1.0], 1.0, 1.0, 1.0)
        inp = UpdateInputs(inp.x, inp.y, inp.reward, inp.answer, torch.full((1, 1), boundary))
        w_new, _ = rule.step(w, rule.initial_state(1), rule.precompute(inp)[0], rule.context())
        w_plain, _ = plain.step(w, plain.initial_state(1), plain.precompute(inp)[0], plain.context())
        keep = torch.tensor([1 - f[0] * boundary, 1.0])
        torch.testing.assert_close(w_new, w_plain * keep, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# DNN and RNN: the precompute split reproduces the plain networks; small updates at init


def test_dnn_step_equals_plain_mlp():
    torch.manual_seed(0)
    rule = make_rule("dnn", K, NetworkConfig(hidden_size=6, scale_init=0.5))
    inp = random_inputs(b=3, t=4, seed=1)
    u = inp.standard_vector()
    w = torch.randn(3, K, generator=torch.Generator().manual_seed(2))
    pre, ctx = rule.precompute(inp), rule.context()
    for t in range(4):
        z = torch.cat([w, u[:, t]], -1)
        ref = w + rule.log_scale.exp() * rule.fc3(torch.relu(rule.fc2(torch.relu(rule.fc1(z)))))
        w_new, _ = rule.step(w, rule.initial_state(3), pre[t], ctx)
        torch.testing.assert_close(w_new, ref, rtol=1e-5, atol=1e-6)
        w = w_new.detach()


def test_rnn_step_equals_torch_gru_cell():
    torch.manual_seed(0)
    rule = make_rule("rnn", K, NetworkConfig(hidden_size=5, scale_init=0.5))
    inp = random_inputs(b=3, t=6, seed=1)
    u = inp.standard_vector()
    w = torch.randn(3, K, generator=torch.Generator().manual_seed(2))
    h = torch.randn(3, 5, generator=torch.Generator().manual_seed(3)) * 0.5
    pre, ctx = rule.precompute(inp), rule.context()
    for t in range(6):
        h_ref = rule.gru(torch.cat([w, u[:, t]], -1), h)
        w_ref = w + rule.log_scale.exp() * rule.head2(torch.relu(rule.head1(h_ref)))
        w_new, h_new = rule.step(w, h, pre[t], ctx)
        torch.testing.assert_close(h_new, h_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w_new, w_ref, rtol=1e-5, atol=1e-6)
        w, h = w_new.detach(), h_new.detach()


@pytest.mark.parametrize("name", ["dnn", "rnn"])
def test_network_rules_make_tiny_updates_at_init(name):
    rule = make(name, seed=0, hidden_size=32)  # scale_init 1e-3, hidden 32
    inp = random_inputs(b=4, t=30, seed=1)
    w0 = torch.randn(4, K, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ws, _ = rule.rollout(w0, rule.initial_state(4), rule.precompute(inp))
    dw = torch.diff(torch.cat([w0.unsqueeze(0), ws]), dim=0).abs()
    assert dw.max() < 1e-2
    assert dw.max() > 0
    assert torch.allclose(rule.log_scale.exp(), torch.full((K,), 1e-3))


@pytest.mark.parametrize("name", LEARNING_RULES)
def test_gradients_reach_every_parameter(name):
    rule = make(name, seed=0, scale_init=0.1)
    inp = random_inputs(b=4, t=10, seed=1)
    w0 = torch.randn(4, K, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    ws, h = rule.rollout(w0, rule.initial_state(4), rule.precompute(inp))
    # log-likelihood of the choices under the weights in force (the loss a fit uses)
    w_used = torch.cat([w0.unsqueeze(0), ws[:-1]]).transpose(0, 1)
    z = (w_used * inp.x).sum(-1)
    loss = nn.functional.binary_cross_entropy_with_logits(z, inp.y)
    loss.backward()
    params = dict(rule.named_parameters())
    assert params
    for pname, p in params.items():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert w0.grad is not None and w0.grad.abs().sum() > 0


def test_dnn_delta_updates_are_proportional_to_the_inputs():
    """Without its drift, dnn_delta moves a weight only as far as its input is non-zero."""
    torch.manual_seed(0)
    rule = make_rule("dnn_delta", 2, DNNDeltaConfig(hidden_size=8))
    b = 6
    x = torch.randn(b, 1, 2)
    x[:3, 0, 0] = 0.0  # no stimulus on half the trials
    y = torch.randint(0, 2, (b, 1)).float()
    inp = UpdateInputs(x, y, y, y, torch.zeros(b, 1))
    w = torch.randn(b, 2)
    pre = rule.precompute(inp)[0]
    w1w, w1p, w2, b2, wg, bg, wd, bd = rule.context()
    no_drift = (w1w, w1p, w2, b2, wg, bg, torch.zeros_like(wd), torch.zeros_like(bd))
    delta = rule.step(w, torch.zeros(b, 0), pre, no_drift)[0] - w
    assert torch.all(delta[:3, 0] == 0) and torch.all(delta[3:, 0] != 0)
    with torch.no_grad():
        rule.fc3.weight.zero_()
        rule.fc3.bias.zero_()
    assert torch.equal(rule.step(w, torch.zeros(b, 0), pre, rule.context())[0], w)  # zero gain and drift: no change


def _one_trial(rule_model, w, contrast, choice_right, rewarded):
    """Δw of a LearnerModel's rule after one trial per row (stimulus + bias features)."""
    n = w.shape[0]
    c = torch.as_tensor(contrast, dtype=torch.float32).expand(n)
    x = rule_model.spec.features.compute((-c).clamp(min=0), c.clamp(min=0))
    y = torch.full((n,), float(choice_right))
    r = torch.full((n,), float(rewarded))
    answer = y if rewarded else 1 - y
    inp = UpdateInputs(x.unsqueeze(1), y.unsqueeze(1), r.unsqueeze(1), answer.unsqueeze(1), torch.zeros(n, 1))
    rule = rule_model.rule
    w_new, _ = rule.step(w, rule.initial_state(n), rule.precompute(inp)[0], rule.context())
    return w_new - w


@pytest.mark.parametrize("within_session_drift", [True, False])
def test_mirror_symmetric_dnn_delta_is_mirror_equivariant(within_session_drift):
    """The update after a trial is the mirror image of the mirrored animal's update after the
    mirrored trial; the unconstrained rule is not."""
    from twin.models.learner import LearnerModel, ModelSpec

    torch.manual_seed(0)
    cfg = DNNDeltaConfig(hidden_size=8, scale_init=1.0, mirror_symmetric=True, within_session_drift=within_session_drift)
    sym = LearnerModel(ModelSpec("dnn_delta", rule_config=cfg))
    free = LearnerModel(ModelSpec("dnn_delta", rule_config=DNNDeltaConfig(hidden_size=8, scale_init=1.0)))
    mirror = sym.spec.features.mirror()
    w = torch.randn(20, 2)
    for contrast, right, rewarded in [(0.5, 1, 1), (0.25, 0, 0), (-1.0, 0, 1), (0.0, 1, 0)]:
        d = _one_trial(sym, w, contrast, right, rewarded)
        d_mirrored = _one_trial(sym, mirror.weights(w), -contrast, 1 - right, rewarded)
        torch.testing.assert_close(d, mirror.weights(d_mirrored), atol=1e-6, rtol=1e-5)
        assert d.abs().max() > 1e-3  # not trivially zero
    d = _one_trial(free, w, 0.5, 1, 1)
    assert not torch.allclose(d, mirror.weights(_one_trial(free, mirror.weights(w), -0.5, 0, 1)), atol=1e-4)


def test_mirror_symmetric_dnn_delta_needs_its_features_mirror():
    rule = make_rule("dnn_delta", 2, DNNDeltaConfig(hidden_size=4, mirror_symmetric=True))
    inp = UpdateInputs(torch.zeros(1, 3, 2), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mirror"):
        rule.precompute(inp)


def test_dnn_delta_without_within_session_drift_moves_only_input_weights_within_a_session():
    """With ``within_session_drift=False`` a zero input leaves its weight unchanged within a
    session; into a new session the drift acts."""
    torch.manual_seed(0)
    rule = make_rule("dnn_delta", 2, DNNDeltaConfig(hidden_size=8, scale_init=1.0, within_session_drift=False))
    b = 4
    x = torch.tensor([[[0.0, 1.0]]] * b)  # zero-contrast trials: stimulus input 0
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    nss = torch.tensor([[0.0], [0.0], [1.0], [1.0]])  # the last two updates go into a new session
    inp = UpdateInputs(x, y, y, y, nss)
    w = torch.randn(b, 2)
    delta = rule.step(w, rule.initial_state(b), rule.precompute(inp)[0], rule.context())[0] - w
    assert torch.all(delta[:2, 0] == 0)  # within the session: stimulus weight untouched
    assert torch.all(delta[2:, 0] != 0)  # overnight: the drift moves it
