"""Fused rollouts (twin/models/rules/fused.py): every rule's ``rollout`` gives the same losses
and gradients as its per-step reference loop (``fused=False``), for every rule in the registry;
the network rules really take the fused path; cancellation still stops it."""

from __future__ import annotations

import pytest
import torch

from twin.cancel import cancellable
from twin.models.policy import choice_log_likelihood
from twin.models.rules import UpdateInputs, make_config, make_rule, rule_names

K, B, T = 2, 3, 40
FUSED = ("dnn", "dnn_delta", "rnn")


def _inputs(dtype: torch.dtype, seed: int = 0) -> UpdateInputs:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, K, generator=g, dtype=dtype)
    y = (torch.rand(B, T, generator=g) < 0.5).to(dtype)
    answer = (torch.rand(B, T, generator=g) < 0.5).to(dtype)
    ss = torch.zeros(B, T, dtype=dtype)
    ss[:, 0] = 1
    ss[:, 17] = 1
    return UpdateInputs.from_trials(x, y, (y == answer).to(dtype), answer, ss)


def _loss_and_grads(name: str, dtype: torch.dtype, rate_shape: tuple[int, ...] | None, fused: bool, **extra):
    torch.manual_seed(0)
    # a large update scale, so that the updates move the weights and every path carries gradient
    options = {"hidden_size": 8, "scale_init": 0.1} if name in ("dnn", "rnn", "dnn_delta") else {}
    options.update(extra)
    rule = make_rule(name, K, make_config(name, **options)).to(dtype)
    inp = _inputs(dtype)
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(B, K, generator=g, dtype=dtype).requires_grad_()
    h0 = (0.5 * torch.randn(B, rule.state_size, generator=g, dtype=dtype)).requires_grad_()
    rate = None if rate_shape is None else (0.3 * torch.randn(*rate_shape, generator=g, dtype=dtype)).exp().requires_grad_()
    pre = rule.precompute(inp)
    ws, h = rule.rollout(w0, h0, pre, rate, fused=fused)
    w_used = torch.cat([w0.unsqueeze(0), ws[:-1]], 0).transpose(0, 1)
    loss = -choice_log_likelihood(w_used, inp.x, inp.y).sum() + ws[-1].square().sum() + h.sin().sum()
    leaves = [p for p in rule.parameters() if p.requires_grad] + [w0, h0] + ([rate] if rate is not None else [])
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if gr is None else gr for p, gr in zip(leaves, grads)], ws.detach(), h.detach()


@pytest.mark.parametrize("rate_shape", [None, (K,), (B, K)], ids=["no-rate", "rate-K", "rate-BK"])
@pytest.mark.parametrize("name", rule_names())
def test_fused_rollout_matches_the_step_loop_in_float64(name, rate_shape):
    ref = _loss_and_grads(name, torch.float64, rate_shape, fused=False)
    new = _loss_and_grads(name, torch.float64, rate_shape, fused=True)
    assert abs(float(ref[0] - new[0])) <= 1e-10
    torch.testing.assert_close(new[2], ref[2], rtol=0, atol=1e-10)
    torch.testing.assert_close(new[3], ref[3], rtol=0, atol=1e-10)
    for a, b in zip(new[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", rule_names())
def test_fused_rollout_matches_the_step_loop_in_float32(name):
    ref = _loss_and_grads(name, torch.float32, (B, K), fused=False)
    new = _loss_and_grads(name, torch.float32, (B, K), fused=True)
    scale = max(1.0, float(ref[0].abs()))
    assert abs(float(ref[0] - new[0])) <= 1e-6 * scale
    for a, b in zip(new[1], ref[1]):
        if b.numel() == 0:
            continue
        # float32 sums in a different order (and the CPU's vectorised exp differs by an ulp
        # between hosts): 16 float32 epsilons (1.9e-6) of the largest gradient entry; the float64
        # test above is the one that pins the two paths to each other
        assert float((a - b).abs().max()) <= 16 * torch.finfo(torch.float32).eps * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("name", rule_names())
def test_only_the_network_rules_have_a_fused_form_and_it_carries_a_graph(name):
    rule = make_rule(name, K, make_config(name, **({"hidden_size": 8} if name in ("dnn", "rnn", "dnn_delta") else {})))
    pre = rule.precompute(_inputs(torch.float32))
    w, h = torch.zeros(B, K), rule.initial_state(B)
    out = rule.fused_rollout(w, h, pre, None)
    assert (out is not None) == (name in FUSED)
    if out is not None:
        assert out[0].shape == (T, B, K) and out[1].shape == (B, rule.state_size)
        assert out[0].grad_fn is not None and "Rollout" in type(out[0].grad_fn).__name__


@pytest.mark.parametrize("name", FUSED)
def test_without_a_gradient_the_step_loop_runs_and_agrees(name):
    rule = make_rule(name, K, make_config(name, hidden_size=8, scale_init=0.1))
    pre = rule.precompute(_inputs(torch.float32))
    w, h = torch.randn(B, K), rule.initial_state(B)
    with torch.no_grad():
        ws, hn = rule.rollout(w, h, pre)
        assert ws.grad_fn is None
    ws_f, hn_f = rule.rollout(w, h, pre)
    torch.testing.assert_close(ws_f.detach(), ws, rtol=1e-6, atol=1e-6)  # float32 rounding only
    torch.testing.assert_close(hn_f.detach(), hn, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", FUSED)
def test_a_cancelled_caller_stops_the_fused_rollout(name):
    rule = make_rule(name, K, make_config(name, hidden_size=8))
    pre = rule.precompute(_inputs(torch.float32))
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise TimeoutError("deadline")

    with pytest.raises(TimeoutError), cancellable(check):
        rule.rollout(torch.zeros(B, K), rule.initial_state(B), pre)
    assert calls == 6


@pytest.mark.parametrize("name", FUSED)
def test_batches_above_the_limit_take_the_step_loop(name, monkeypatch):
    from twin.models.rules import base

    rule = make_rule(name, K, make_config(name, hidden_size=8))
    pre = rule.precompute(_inputs(torch.float32))
    w, h = torch.zeros(B, K), rule.initial_state(B)
    assert "Rollout" in type(rule.rollout(w, h, pre)[0].grad_fn).__name__
    monkeypatch.setattr(base, "FUSED_MAX_BATCH", B - 1)
    assert "Rollout" not in type(rule.rollout(w, h, pre)[0].grad_fn).__name__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", FUSED)
def test_fused_rollout_on_cuda_matches_the_step_loop(name):
    rule = make_rule(name, K, make_config(name, hidden_size=8, scale_init=0.1)).double().cuda()
    inp = _inputs(torch.float64)
    inp = UpdateInputs(*(t.cuda() for t in (inp.x, inp.y, inp.reward, inp.answer, inp.next_session_start)))
    out = []
    for fused in (False, True):
        rule.zero_grad()
        ws, h = rule.rollout(torch.zeros(B, K, dtype=torch.float64, device="cuda"), rule.initial_state(B, device=torch.device("cuda"), dtype=torch.float64), rule.precompute(inp), fused=fused)
        (ws.sin().sum() + h.cos().sum()).backward()
        out.append([p.grad.clone() for p in rule.parameters()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("rate_shape", [None, (B, K)], ids=["no-rate", "rate-BK"])
def test_dnn_delta_with_overnight_drift_only_matches_the_step_loop(rate_shape):
    # the drift's factor c_t is the next-session flag, not 1 at every trial
    ref = _loss_and_grads("dnn_delta", torch.float64, rate_shape, fused=False, within_session_drift=False)
    new = _loss_and_grads("dnn_delta", torch.float64, rate_shape, fused=True, within_session_drift=False)
    assert abs(float(ref[0] - new[0])) <= 1e-10
    for a, b in zip(new[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_a_mirror_symmetric_dnn_delta_takes_the_step_loop():
    from twin.data.features import Mirror

    rule = make_rule("dnn_delta", K, make_config("dnn_delta", hidden_size=8, mirror_symmetric=True))
    rule.use_mirror(Mirror(perm=(0, 1), x_sign=(1.0, -1.0), w_sign=(-1.0, 1.0)))
    pre = rule.precompute(_inputs(torch.float32))
    assert rule.fused_rollout(torch.zeros(B, K), rule.initial_state(B), pre, None) is None
    ws, _ = rule.rollout(torch.zeros(B, K), rule.initial_state(B), pre)
    assert ws.shape == (T, B, K) and "Rollout" not in type(ws.grad_fn).__name__
