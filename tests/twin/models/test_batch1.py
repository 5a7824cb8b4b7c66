"""The fused batch-1 rollout against the torch path, for every registered rule."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from twin.data.features import FeatureSpec
from twin.models import batch1
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import UpdateInputs, get_rule, make_config, rule_names


def _inputs(n: int, k: int, seed: int) -> UpdateInputs:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, k, generator=g)
    y = (torch.rand(1, n, generator=g) < 0.5).float()
    ans = (torch.rand(1, n, generator=g) < 0.5).float()
    ss = torch.zeros(1, n)
    ss[0, :: max(n // 3, 1)] = 1.0
    return UpdateInputs.from_trials(x, y, (y == ans).float(), ans, ss)


def _cases() -> list[tuple[str, dict[str, object], bool]]:
    out = []
    for name in rule_names():
        if not batch1.supports(get_rule(name)(3)):
            continue  # see test_rules_without_a_kernel_take_the_torch_path
        out.append((name, {}, False))
        if name == "dnn_delta":
            out.append((name, {"mirror_symmetric": True}, False))
            out.append((name, {"within_session_drift": False}, False))
    out += [("dnn", {}, True), ("rnn", {}, True), ("reinforce_history", {}, True)]
    return out


def _model(name: str, options: dict[str, object], features: FeatureSpec, seed: int) -> LearnerModel:
    torch.manual_seed(seed)
    m = LearnerModel(ModelSpec(name, features, make_config(name, **options)))
    with torch.no_grad():  # non-trivial parameters: updates large enough to move the weights
        for p in m.rule.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if hasattr(m.rule, "log_scale"):
            m.rule.log_scale.fill_(np.log(0.003))
        m.w0.copy_(torch.randn_like(m.w0))
    return m.eval()


# the ground-truth variants of REINFORCE (perseveration, soft bounds, forgetting) have no kernel yet
WITHOUT_KERNEL = {"reinforce_perseveration", "reinforce_bounded", "reinforce_forgetting"}


def test_every_registered_rule_but_the_listed_ones_has_a_kernel():
    assert {name for name in rule_names() if not batch1.supports(get_rule(name)(3))} == WITHOUT_KERNEL


@pytest.mark.parametrize("name", sorted(WITHOUT_KERNEL))
def test_rules_without_a_kernel_take_the_torch_path(name):
    m = _model(name, {}, FeatureSpec(history=True), seed=1)
    pre = m.rule.precompute(_inputs(50, m.spec.features.n_features, seed=2)).detach()
    w, h = m.initial(1)
    with torch.no_grad():
        assert batch1.why_not(m.rule, w, h, pre, None) == f"no fused kernel for {type(m.rule).__name__}"
        ws, _ = m.rollout(w, h, pre)
        ref, _ = m.rule.rollout(w, h, pre)
    torch.testing.assert_close(ws, ref, rtol=0, atol=0)


@pytest.mark.parametrize("name,options,with_rate", _cases())
def test_fused_matches_torch(name, options, with_rate):
    features = FeatureSpec(history=True)
    m = _model(name, options, features, seed=1)
    k = features.n_features
    pre = m.rule.precompute(_inputs(400, k, seed=2)).detach()
    log_rate = torch.linspace(-0.5, 0.5, k) if with_rate else None
    w, h = m.initial(1)
    with torch.no_grad():
        h = h + 0.1 * torch.randn(h.shape, generator=torch.Generator().manual_seed(3))
        ref_ws, ref_h = m.rule.rollout(w, h, pre, rate=m.rate(log_rate))
        assert batch1.why_not(m.rule, w, h, pre, m.rate(log_rate)) == (None if m.rule.learns else "no per-trial loop to fuse")
        ws, h_out = batch1.rollout(m.rule, w, h, pre, m.rate(log_rate))
    assert ws.dtype == ref_ws.dtype and ws.shape == ref_ws.shape and h_out.shape == ref_h.shape
    if m.rule.learns:  # the weights did move: the comparison is not of constants
        assert float((ref_ws[-1] - ref_ws[0]).abs().max()) > 1e-3
    torch.testing.assert_close(ws, ref_ws, rtol=0, atol=1e-5)
    torch.testing.assert_close(h_out, ref_h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,options,with_rate", _cases())
def test_policy_along_matches_the_torch_policy(name, options, with_rate):
    """The compiled rollout-and-policy of a served Predict against the torch rollout followed by
    the policy in torch: the same weights, ``p`` and log-likelihood."""
    features = FeatureSpec(history=True)
    m = _model(name, options, features, seed=1)
    k = features.n_features
    inp = _inputs(300, k, seed=2)
    log_rate = torch.linspace(-0.5, 0.5, k) if with_rate else None
    w, h = m.initial(1)
    with torch.no_grad():
        pre = m.rule.precompute(inp)
        got = batch1.policy_along(m.rule, w, h, pre[:-1], inp.x[0], inp.y[0], rate=m.rate(log_rate))
        if not m.rule.learns:
            assert got is None  # no loop to fuse: the caller runs the torch path
            return
        ws, _ = m.rule.rollout(w, h, pre[:-1], rate=m.rate(log_rate))
        traj = torch.cat([w.unsqueeze(0), ws], 0)[:, 0]
        logits = (traj * inp.x[0]).sum(-1)
        ll = -torch.nn.functional.binary_cross_entropy_with_logits(logits, inp.y[0], reduction="sum")
    assert got is not None
    weights, p, ll_got = got
    assert weights.shape == (300, k) and p.shape == (300,) and weights.dtype == p.dtype == np.float64
    assert float(np.abs(weights[-1] - weights[0]).max()) > 1e-3  # the weights moved
    np.testing.assert_allclose(weights, traj.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(p, torch.sigmoid(logits).numpy(), rtol=0, atol=1e-5)
    assert ll_got == pytest.approx(float(ll), abs=1e-3)


def test_policy_along_leaves_gradients_and_requested_torch_paths_to_the_caller():
    m = _model("dnn", {}, FeatureSpec(), seed=4)
    inp = _inputs(50, 2, seed=5)
    w, h = m.initial(1)
    pre = m.rule.precompute(inp)
    assert batch1.policy_along(m.rule, w, h, pre[:-1], inp.x[0], inp.y[0]) is None  # a gradient is needed
    with torch.no_grad(), batch1.torch_path():
        assert batch1.policy_along(m.rule, w, h, pre[:-1].detach(), inp.x[0], inp.y[0]) is None


def test_learner_takes_fused_path_without_gradient_and_torch_path_with_one(caplog):
    m = _model("dnn", {}, FeatureSpec(), seed=4)
    inp = _inputs(50, 2, seed=5)
    batch1.PATH_COUNTS.clear()
    with caplog.at_level(logging.DEBUG, logger="twin.models.batch1"):
        with torch.no_grad():
            pre = m.rule.precompute(inp)
            w, h = m.initial(1)
            fast, _ = m.rollout(w, h, pre)
            with batch1.torch_path():
                slow, _ = m.rollout(w, h, pre)
        ws, _ = m.rollout(*m.initial(1), m.rule.precompute(inp))  # gradient needed
    assert ws.requires_grad
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)
    torch.testing.assert_close(ws.detach(), slow, rtol=0, atol=1e-5)
    assert batch1.PATH_COUNTS[("fused", "dnn", "")] == 1
    assert batch1.PATH_COUNTS[("torch", "dnn", "torch path requested")] == 1
    assert batch1.PATH_COUNTS[("torch", "dnn", "a gradient is needed")] == 1
    assert any("path=fused rule=dnn" in r.getMessage() for r in caplog.records)
    assert any("reason=a gradient is needed" in r.getMessage() for r in caplog.records)


def test_batches_above_the_rules_limit_keep_the_torch_path(monkeypatch):
    m = _model("rnn", {}, FeatureSpec(), seed=6)
    inp = _inputs(10, 2, seed=7)
    with torch.no_grad():
        pre = m.rule.precompute(UpdateInputs(*(t.expand(3, *t.shape[1:]) for t in (inp.x, inp.y, inp.reward, inp.answer, inp.next_session_start))))
        assert batch1.why_not(m.rule, *m.initial(3), pre, None) is None
        monkeypatch.setitem(batch1.FUSED_BATCH_LIMITS, type(m.rule), 2)
        assert batch1.why_not(m.rule, *m.initial(3), pre, None) == "batch 3 > 2"


@pytest.mark.parametrize("name", [n for n in rule_names() if n not in WITHOUT_KERNEL and n != "static"])
def test_every_kernel_runs_small_batches_and_matches_torch_row_by_row(name):
    """A batch of animals with different starts and rates (as a fit's validation pass or a
    per-animal adaptation has): the kernel's rows match the torch loop to 1e-5."""
    features = FeatureSpec(history=True)
    m = _model(name, {}, features, seed=12)
    k, b = features.n_features, 5
    g = torch.Generator().manual_seed(13)
    parts = [_inputs(300, k, seed=14 + i) for i in range(b)]
    inp = UpdateInputs(*(torch.cat([getattr(p, f) for p in parts]) for f in ("x", "y", "reward", "answer", "next_session_start")))
    with torch.no_grad():
        pre = m.rule.precompute(inp)
        w = torch.randn(b, k, generator=g)
        h = m.initial(b)[1] + 0.1 * torch.randn(b, m.rule.state_size, generator=g)
        rate = (0.3 * torch.randn(b, k, generator=g)).exp()
        assert b <= batch1.max_fused_batch(m.rule) and batch1.why_not(m.rule, w, h, pre, rate) is None
        ref_ws, ref_h = m.rule.rollout(w, h, pre, rate=rate)
        ws, h_out = m.rollout(w, h, pre, rate.log())
    assert float((ref_ws[-1] - ref_ws[0]).abs().max()) > 1e-3
    torch.testing.assert_close(ws, ref_ws, rtol=0, atol=1e-5)
    torch.testing.assert_close(h_out, ref_h, rtol=0, atol=1e-5)


def test_long_rollouts_run_in_chunks(monkeypatch):
    m = _model("reinforce_history", {}, FeatureSpec(), seed=8)
    with torch.no_grad():
        pre = m.rule.precompute(_inputs(95, 2, seed=9))
        w, h = m.initial(1)
        ref = m.rule.rollout(w, h, pre)
        monkeypatch.setattr(batch1, "CHUNK_TRIALS", 10)
        got = batch1.rollout(m.rule, w, h, pre)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-5)


def test_empty_rollout():
    m = _model("dnn", {}, FeatureSpec(), seed=10)
    with torch.no_grad():
        pre = m.rule.precompute(_inputs(3, 2, seed=11))[:0]
        ws, h = batch1.rollout(m.rule, *m.initial(1), pre)
    assert ws.shape == (0, 1, 2) and h.shape == (1, 0)


def test_warm_up_compiles_every_kernel():
    report = batch1.warm_up()
    assert report.error is None
    assert set(report.kernels) == set(rule_names()) - WITHOUT_KERNEL


def test_cached_kernel_arguments_follow_parameter_changes():
    m = _model("dnn", {}, FeatureSpec(), seed=12)
    with torch.no_grad():
        pre = m.rule.precompute(_inputs(30, 2, seed=13))
        w, h = m.initial(1)
        first, _ = batch1.rollout(m.rule, w, h, pre)
        m.rule.fc3.bias.add_(0.05)  # in place: the cached arguments must not be reused
        second, _ = batch1.rollout(m.rule, w, h, pre)
        ref, _ = m.rule.rollout(w, h, pre)
    assert float((second - first).abs().max()) > 1e-3
    torch.testing.assert_close(second, ref, rtol=0, atol=1e-5)


def test_after_warm_up_no_real_call_compiles():
    """The server warms up before it serves: no request may then wait on numba's compiler."""
    from trial_tables import random_trials_table
    from twin.analysis.predict import predict

    batch1.warm_up()
    kernels = [getattr(batch1, n) for n in dir(batch1) if n.endswith("_kernel")]
    before = [len(k.signatures) for k in kernels]
    df = random_trials_table({"a": [30, 20]}, seed=14)
    for name in rule_names():
        options = [{}] + ([{"mirror_symmetric": True}] if name == "dnn_delta" else [])
        for opt in options:
            m = _model(name, opt, FeatureSpec(), seed=15)
            predict(m, df)
            with torch.no_grad():
                m.rollout(*m.initial(1), m.rule.precompute(_inputs(5, 2, seed=16)), torch.zeros(2))
    assert [len(k.signatures) for k in kernels] == before


def test_deferred_kernels_keep_the_torch_path_until_ready(monkeypatch):
    monkeypatch.setattr(batch1, "_DEFER", threading.Event())
    monkeypatch.setattr(batch1, "_READY", threading.Event())
    m = _model("dnn", {}, FeatureSpec(), seed=17)
    with torch.no_grad():
        args = (m.rule, *m.initial(1), m.rule.precompute(_inputs(5, 2, seed=18)), None)
        assert batch1.why_not(*args) is None  # not deferred: compile on first use
        batch1.defer_until_ready()
        assert batch1.why_not(*args) == "kernels still compiling" and not batch1.kernels_ready()
        batch1.mark_ready()
        assert batch1.why_not(*args) is None and batch1.kernels_ready()


def test_no_writable_cache_folder_only_turns_caching_off(monkeypatch):
    import numba

    real = numba.njit

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x.py'")
        return real(**options)

    monkeypatch.setattr(numba, "njit", njit)

    def f(a):
        return a * 2.0

    assert batch1.compiled(f)(np.ones(2)).tolist() == [2.0, 2.0]


def test_an_unwritable_numba_cache_dir_does_not_fail(tmp_path):
    """``NUMBA_CACHE_DIR`` under /proc (unwritable even for root): the kernels still run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    code = "from twin.models import batch1; r = batch1.warm_up(); print(r.error, len(r.kernels))"
    env = {**os.environ, "NUMBA_CACHE_DIR": "/proc/twin-numba-cache", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None", str(len(set(rule_names()) - WITHOUT_KERNEL))]
