"""The batch-1 inference path: a learning rule's whole rollout in one compiled loop.

The torch path (:meth:`twin.models.rules.base.LearningRule.rollout`) runs one Python iteration
and a dozen small tensor ops per trial; at batch 1 that is pure dispatch (~16 µs a trial for the
DNN rule). When no gradient is needed (a served Predict, a twin's end state before a Forecast, a
teaching decision along one animal's history, and at small batches a fit's validation passes and
per-animal adaptations) :meth:`twin.models.learner.LearnerModel.rollout` hands the same
computation to a numba-compiled loop instead: the rule's own
:meth:`~twin.models.rules.base.LearningRule.precompute` and
:meth:`~twin.models.rules.base.LearningRule.context` (batched torch ops, run once) feed a kernel
that does the per-trial step of that rule in float64, for every row of the batch.

Each supported rule class has one kernel here (``_KERNELS``); a rule without one (or one that
never learns: its torch rollout has no loop), a batch
above the rule's limit in :data:`FUSED_BATCH_LIMITS` (the kernel's cost grows with the batch, the
torch path's hardly does), a tensor that needs a gradient, or a tensor off the CPU takes the
torch path. Which path ran, and why, is logged at DEBUG on ``twin.models.batch1`` and counted in
:data:`PATH_COUNTS`.

Compilation: numba compiles each kernel on its first call (seconds). :func:`warm_up` compiles
them all. A server calls :func:`defer_until_ready` and warms up in the background: until
:func:`mark_ready`, rollouts take the torch path (reason "kernels still compiling"), so no request
waits on a compiler and the server starts at once; elsewhere (CLI, scripts) a kernel compiles on
its first use. The compiled code is kept in numba's on-disk cache (``NUMBA_CACHE_DIR``, else next
to this file, else the user's cache folder), so later starts load it in about a second; a cache
folder that cannot be written only turns caching off.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from twin.cancel import checkpoint
from twin.models.rules import LearningRule
from twin.models.rules.dnn import DNNRule
from twin.models.rules.dnn_delta import DNNDeltaRule
from twin.models.rules.reinforce import AsymmetricPredictionErrorRule, ReinforceRule, RewardHistoryReinforceRule
from twin.models.rules.rnn import RNNRule
from twin.models.rules.static import StaticRule

log = logging.getLogger("twin.models.batch1")

#: Row-trials (rows of the batch x trials) per kernel call between two cancellation checkpoints.
CHUNK_TRIALS = 20_000

#: ``(path, rule name, reason)`` → number of rollouts that took it (``path`` is ``fused`` or ``torch``).
PATH_COUNTS: collections.Counter[tuple[str, str, str]] = collections.Counter()

try:  # numba is a dependency, but the torch path must keep working without it
    import numba

    _NUMBA_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]
    _NUMBA_ERROR = f"numba unavailable ({exc})"


#: LLVM may reassociate sums (vectorised dot products) and fuse multiply-adds; NaN and inf keep
#: their IEEE meaning.
_FASTMATH = {"reassoc", "contract"}


def compiled(fn: Callable) -> Callable:  # type: ignore[type-arg]
    """``fn`` as a numba ``njit`` function with the on-disk cache where a cache folder is
    writable, without it otherwise (never an error); ``fn`` itself without numba."""
    if numba is None:  # pragma: no cover
        return fn
    try:
        return numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(fn)
    except RuntimeError:  # "no locator available": no writable cache folder
        return numba.njit(cache=False, nogil=True, fastmath=_FASTMATH)(fn)


# -- kernels: one per rule class; arrays float64, C-contiguous ------------------------------------
# Shapes: w0 [B, K], h0 [B, H], pre [T, B, D], rate [B, K] (ignored unless has_rate);
# they return ws [T, B, K] (the weights after each step) and the final h [B, H]. Matrices are
# [out, in] (each output's row contiguous: the inner loops run along memory).


@compiled
def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@compiled
def _policy_logit(w: np.ndarray, u: np.ndarray, offset: int) -> float:
    """``w · x`` with the features ``x = u[offset : offset + K]``."""
    z = 0.0
    for j in range(w.shape[0]):
        z += w[j] * u[offset + j]
    return z


@compiled
def _apply(w: np.ndarray, w_next: np.ndarray, rate: np.ndarray, has_rate: bool) -> None:
    """``w ← w_next`` or ``w ← w + rate ⊙ (w_next − w)`` (in place; ``[K]``)."""
    for k in range(w.shape[0]):
        w[k] = w[k] + rate[k] * (w_next[k] - w[k]) if has_rate else w_next[k]


@compiled
def _static_kernel(w0, h0, pre, rate, has_rate):  # type: ignore[no-untyped-def]
    n, b, k = pre.shape[0], w0.shape[0], w0.shape[1]
    ws = np.empty((n, b, k))
    for t in range(n):
        ws[t] = w0
    return ws, h0.copy()


@compiled
def _target_kernel(w0, h0, pre, rate, has_rate):  # type: ignore[no-untyped-def]
    """``Δw = a ⊙ (target − p)``, ``pre = [a (K), x (K), target]`` (reinforce, pe_asymmetric)."""
    n, b, k = pre.shape[0], w0.shape[0], w0.shape[1]
    ws = np.empty((n, b, k))
    w_next = np.empty(k)
    for i in range(b):
        w = w0[i].copy()
        for t in range(n):
            u = pre[t, i]
            z = _policy_logit(w, u, k)
            g = u[2 * k] - _sigmoid(z)
            for j in range(k):
                w_next[j] = w[j] + u[j] * g
            _apply(w, w_next, rate[i], has_rate)
            ws[t, i] = w
    return ws, h0.copy()


@compiled
def _history_kernel(w0, h0, pre, rate, has_rate, kappa, neg_inv_tau):  # type: ignore[no-untyped-def]
    """reinforce_history: ``pre = [a (K), x (K), y, r]``, ``h`` the run of rewards."""
    n, b, k = pre.shape[0], w0.shape[0], w0.shape[1]
    ws = np.empty((n, b, k))
    h_out = h0.copy()
    w_next = np.empty(k)
    for i in range(b):
        w = w0[i].copy()
        c = h_out[i, 0]
        for t in range(n):
            u = pre[t, i]
            z = _policy_logit(w, u, k)
            g = (1.0 + kappa * (1.0 - np.exp(c * neg_inv_tau))) * (u[2 * k] - _sigmoid(z))
            for j in range(k):
                w_next[j] = w[j] + g * u[j]
            _apply(w, w_next, rate[i], has_rate)
            ws[t, i] = w
            c = (c + 1.0) * u[2 * k + 1]
        h_out[i, 0] = c
    return ws, h_out


@compiled
def _layer(out, bias, x, m, relu):  # type: ignore[no-untyped-def]
    """``out = bias + m x`` (ReLU'd if ``relu``), in place: ``out [O]``, ``bias [≥ O]``, ``x [I]``, ``m [O, I]``."""
    for r in range(out.shape[0]):
        s = bias[r]
        for j in range(x.shape[0]):
            s += x[j] * m[r, j]
        out[r] = (s if s > 0.0 else 0.0) if relu else s


@compiled
def _dnn_kernel(w0, h0, pre, rate, has_rate, w1, w2, b2, w3s, b3s):  # type: ignore[no-untyped-def]
    """dnn: ``a1 = relu(pre + W1 w)``, ``a2 = relu(b2 + W2 a1)``, ``w ← w + b3s + W3s a2``."""
    n, b, k = pre.shape[0], w0.shape[0], w0.shape[1]
    hd = w2.shape[0]
    ws = np.empty((n, b, k))
    a1, a2 = np.empty(hd), np.empty(hd)
    dw, w_next = np.empty(k), np.empty(k)
    for i in range(b):
        w = w0[i].copy()
        for t in range(n):
            _layer(a1, pre[t, i], w, w1, True)
            _layer(a2, b2, a1, w2, True)
            _layer(dw, b3s, a2, w3s, False)
            for m in range(k):
                w_next[m] = w[m] + dw[m]
            _apply(w, w_next, rate[i], has_rate)
            ws[t, i] = w
    return ws, h0.copy()


@compiled
def _delta_mlp(h_in, w_in, w1w, w2, b2, wg, bg, wd, bd, a1, a2, gain, drift):  # type: ignore[no-untyped-def]
    """One pass of dnn_delta's MLP: gain and drift (written in place) of ``(h_in [H], w_in [K])``."""
    _layer(a1, h_in, w_in, w1w, True)
    _layer(a2, b2, a1, w2, True)
    _layer(gain, bg, a2, wg, False)
    _layer(drift, bd, a2, wd, False)


@compiled
def _delta_kernel(w0, h0, pre, rate, has_rate, w1w, w1p, w2, b2, wg, bg, wd, bd, perm, w_sign, mirrored):  # type: ignore[no-untyped-def]
    """dnn_delta: ``pre = [hidden part (H), mirrored hidden part (H, if mirrored), x (K), where]``."""
    n, b, k = pre.shape[0], w0.shape[0], w0.shape[1]
    hd = w2.shape[0]
    xo = 2 * hd if mirrored else hd
    ws = np.empty((n, b, k))
    a1, a2, h_in = np.empty(hd), np.empty(hd), np.empty(hd)
    g1, d1, g2, d2 = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    w_m, w_next = np.empty(k), np.empty(k)
    for i in range(b):
        w = w0[i].copy()
        for t in range(n):
            u = pre[t, i]
            z = _policy_logit(w, u, xo)
            p = _sigmoid(z)
            for m in range(hd):
                h_in[m] = u[m] + p * w1p[m]
            _delta_mlp(h_in, w, w1w, w2, b2, wg, bg, wd, bd, a1, a2, g1, d1)
            if mirrored:
                for m in range(hd):
                    h_in[m] = u[hd + m] + (1.0 - p) * w1p[m]
                for j in range(k):
                    w_m[j] = w[perm[j]] * w_sign[j]
                _delta_mlp(h_in, w_m, w1w, w2, b2, wg, bg, wd, bd, a1, a2, g2, d2)
                for j in range(k):
                    g = 0.5 * (g1[j] - g2[perm[j]])
                    d = 0.5 * (d1[j] + d2[perm[j]] * w_sign[j])
                    w_next[j] = w[j] + g * u[xo + j] + d * u[xo + k]
            else:
                for j in range(k):
                    w_next[j] = w[j] + g1[j] * u[xo + j] + d1[j] * u[xo + k]
            _apply(w, w_next, rate[i], has_rate)
            ws[t, i] = w
    return ws, h0.copy()


@compiled
def _rnn_kernel(w0, h0, pre, rate, has_rate, w_iw, w_hh, b_hh, w_h1, b_h1, w_h2s, b_h2s):  # type: ignore[no-untyped-def]
    """rnn: a GRU cell on ``(pre + W_iw w, h)`` and an MLP head giving ``Δw`` from the new ``h``."""
    n, b, k = pre.shape[0], w0.shape[0], w0.shape[1]
    hd = w_hh.shape[1]
    ws = np.empty((n, b, k))
    h_out = h0.copy()
    gi, gh = np.empty(3 * hd), np.empty(3 * hd)
    h_new, a = np.empty(hd), np.empty(hd)
    dw, w_next = np.empty(k), np.empty(k)
    for i in range(b):
        w = w0[i].copy()
        h = h_out[i].copy()
        for t in range(n):
            _layer(gi, pre[t, i], w, w_iw, False)
            _layer(gh, b_hh, h, w_hh, False)
            for m in range(hd):
                r = _sigmoid(gi[m] + gh[m])
                zg = _sigmoid(gi[hd + m] + gh[hd + m])
                nn_ = np.tanh(gi[2 * hd + m] + r * gh[2 * hd + m])
                h_new[m] = nn_ + zg * (h[m] - nn_)
            _layer(a, b_h1, h_new, w_h1, True)
            _layer(dw, b_h2s, a, w_h2s, False)
            for m in range(k):
                w_next[m] = w[m] + dw[m]
            _apply(w, w_next, rate[i], has_rate)
            ws[t, i] = w
            h[:] = h_new
        h_out[i] = h
    return ws, h_out


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float64)


def _kernel_layout(t: torch.Tensor) -> np.ndarray:
    """A context tensor for a kernel: float64, matrices from the rules' ``[in, out]`` to ``[out, in]``."""
    return _f64(t.t() if t.ndim == 2 else t)


def _plain(kernel: Callable) -> Callable[[LearningRule], tuple]:  # type: ignore[type-arg]
    """Kernel arguments of a rule whose context (possibly empty) is passed as it is."""

    def args(rule: LearningRule) -> tuple:  # type: ignore[type-arg]
        return (kernel, *(_kernel_layout(c) for c in rule.context()))

    return args


def _history_args(rule: LearningRule) -> tuple:  # type: ignore[type-arg]
    kappa, neg_inv_tau = rule.context()
    return (_history_kernel, float(kappa), float(neg_inv_tau))


def _delta_args(rule: LearningRule) -> tuple:  # type: ignore[type-arg]
    ctx = rule.context()
    k = rule.n_weights
    if len(ctx) == 10:
        perm, w_sign = np.ascontiguousarray(ctx[8].numpy(), dtype=np.int64), _f64(ctx[9])
    else:
        perm, w_sign = np.arange(k, dtype=np.int64), np.ones(k)
    return (_delta_kernel, *(_kernel_layout(c) for c in ctx[:8]), perm, w_sign, len(ctx) == 10)


#: Rule class → builder of ``(kernel, *context arguments)`` from a rule instance.
_KERNELS: dict[type[LearningRule], Callable[[LearningRule], tuple]] = {  # type: ignore[type-arg]
    StaticRule: _plain(_static_kernel),
    ReinforceRule: _plain(_target_kernel),
    AsymmetricPredictionErrorRule: _plain(_target_kernel),
    RewardHistoryReinforceRule: _history_args,
    DNNRule: _plain(_dnn_kernel),
    DNNDeltaRule: _delta_args,
    RNNRule: _plain(_rnn_kernel),
}


#: Rule class → the largest batch its kernel runs; larger batches take the torch path. A kernel
#: does each row's step in scalar loops, so its time grows with the batch, while the torch path
#: is bound by per-step dispatch and hardly grows: each limit is below the measured crossover,
#: where the kernel is still >= 1.2x the torch loop (``bench/batch1_rollout.py``'s batch table,
#: no-grad rollouts, 1 thread: dnn 3.3x at 32, 1.3x at 64, 0.7x at 128; dnn_delta 4.7x at 32,
#: 1.3x at 128; rnn 1.25x at 32, 0.7x at 64; reinforce 3x at 128, 0.65x at 512; reinforce_history
#: 1.4x at 512). Fits' validation passes and per-animal adaptations (batches of up to 32 animals)
#: run here.
FUSED_BATCH_LIMITS: dict[type[LearningRule], int] = {
    StaticRule: 1,  # never learns: no loop to fuse at any batch
    ReinforceRule: 256,
    AsymmetricPredictionErrorRule: 256,
    RewardHistoryReinforceRule: 512,
    DNNRule: 64,
    DNNDeltaRule: 128,
    RNNRule: 32,
}


def max_fused_batch(rule: LearningRule) -> int:
    """The largest batch ``rule``'s kernel runs (:data:`FUSED_BATCH_LIMITS`; 0 without a kernel)."""
    return FUSED_BATCH_LIMITS.get(type(rule), 0)


#: Rule → (its parameters' identities and versions, kernel arguments): a served twin's rule is
#: converted once, not per request; any change to a parameter (an optimiser step, ``copy_``, a
#: new tensor) bumps its version or identity, and the arguments are rebuilt.
_ARGS: weakref.WeakKeyDictionary[LearningRule, tuple[tuple[tuple[int, int], ...], tuple]] = weakref.WeakKeyDictionary()  # type: ignore[type-arg]
_ARGS_LOCK = threading.Lock()


def _kernel_args(rule: LearningRule) -> tuple:  # type: ignore[type-arg]
    """``(kernel, *context arguments)`` of ``rule``, cached while its parameters are unchanged."""
    key = tuple((id(p), p._version) for p in rule.parameters())
    with _ARGS_LOCK:
        hit = _ARGS.get(rule)
    if hit is not None and hit[0] == key:
        return hit[1]
    args = _KERNELS[type(rule)](rule)
    with _ARGS_LOCK:
        _ARGS[rule] = (key, args)
    return args


def supports(rule: LearningRule) -> bool:
    """Whether the fused path has a kernel for ``rule``'s class."""
    return type(rule) in _KERNELS


_enabled = threading.local()
_DEFER = threading.Event()
_READY = threading.Event()


def defer_until_ready() -> None:
    """From now on, use compiled code only once :func:`mark_ready` says it is compiled."""
    _DEFER.set()


def mark_ready() -> None:
    """The kernels (and any other compiled code waiting on this flag) are compiled."""
    _READY.set()


def kernels_ready() -> bool:
    """Whether compiled code may run now without compiling (always, unless deferred)."""
    return not _DEFER.is_set() or _READY.is_set()


@contextmanager
def torch_path() -> Iterator[None]:
    """Within the block (this thread), every rollout takes the torch path (references, tests)."""
    prev = getattr(_enabled, "off", False)
    _enabled.off = True
    try:
        yield
    finally:
        _enabled.off = prev


def why_not(rule: LearningRule, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None) -> str | None:
    """Why a rollout cannot take the fused path (None: it can).

    Args:
        rule: the rule.
        w: ``[B, K]`` starting weights.
        h: ``[B, H]`` starting state.
        pre: ``[n, B, D]`` precomputed inputs.
        rate: optional ``[K]`` or ``[B, K]`` update multiplier.
    """
    reason = why_not_rows(rule)
    if reason is not None:
        return reason
    if w.shape[0] > max_fused_batch(rule):
        return f"batch {w.shape[0]} > {max_fused_batch(rule)}"
    tensors = (w, h, pre) + (() if rate is None else (rate,))
    if any(t.device.type != "cpu" for t in tensors):
        return "not on the CPU"
    if torch.is_grad_enabled() and (any(t.requires_grad for t in tensors) or any(p.requires_grad for p in rule.parameters())):
        return "a gradient is needed"
    return None


def rollout(rule: LearningRule, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused equivalent of ``rule.rollout(w, h, pre, rate)`` (the caller checked
    :func:`why_not`).

    Args:
        rule: a rule with a kernel (:func:`supports`).
        w: ``[B, K]`` weights before the first step.
        h: ``[B, H]`` state before the first step.
        pre: ``[n, B, D]`` the rule's precomputed inputs of ``n`` trials.
        rate: optional ``[K]`` or ``[B, K]`` multiplier of every update.

    Returns:
        ``(ws [n, B, K], h [B, H])`` in ``w``'s dtype, as the torch path returns them.
    """
    ws_all, h_np = _rollout_f64(rule, w, h, pre, rate)
    return torch.from_numpy(ws_all).to(w.dtype), torch.from_numpy(h_np).to(h.dtype)


def _rollout_f64(rule: LearningRule, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rollout`'s kernel calls: ``(ws [n, B, K], h [B, H])`` as the kernel's float64."""
    kernel, *ctx = _kernel_args(rule)
    b, k = w.shape
    w_np, h_np = _f64(w), _f64(h)
    rate_np = np.ones((b, k)) if rate is None else np.ascontiguousarray(np.broadcast_to(_f64(rate), (b, k)))
    pre_np = _f64(pre)
    n = pre_np.shape[0]
    parts = []
    chunk = max(1, CHUNK_TRIALS // max(b, 1))
    for lo in range(0, max(n, 1), chunk):  # one kernel call per chunk, a checkpoint between
        checkpoint()
        ws, h_np = kernel(w_np, h_np, pre_np[lo : lo + chunk], rate_np, rate is not None, *ctx)
        parts.append(ws)
        if ws.shape[0]:
            w_np = np.ascontiguousarray(ws[-1])
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), h_np


@compiled
def _policy_kernel(w0, ws, x, y):  # type: ignore[no-untyped-def]
    """``traj = [w0; ws[:, 0]]`` ``[T, K]``, ``p = sigmoid(traj · x)`` ``[T]`` and
    ``Σ_t log p(y_t)`` (``y`` 1 right, 0 left), with ``log p`` as ``-softplus(∓z)``. The weights
    are rounded to float32, the model's dtype, as the torch path returns them (so both paths
    give the same weights, and ``p`` within a float32 rounding)."""
    n, k = x.shape[0], x.shape[1]
    traj = np.empty((n, k))
    p = np.empty(n)
    ll = 0.0
    for t in range(n):
        z = 0.0
        for j in range(k):
            v = np.float64(np.float32(w0[j] if t == 0 else ws[t - 1, 0, j]))
            traj[t, j] = v
            z += v * x[t, j]
        p[t] = _sigmoid(z)
        m = -z if y[t] > 0.5 else z  # log p(y) = -softplus(m)
        ll -= (m + np.log1p(np.exp(-m))) if m > 0 else np.log1p(np.exp(m))
    return traj, p, ll


def policy_along(
    rule: LearningRule, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, x: torch.Tensor, y: torch.Tensor, rate: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """One animal's teacher-forced policy on the compiled path: the rollout (as
    :func:`dispatch`) and the policy along it in one more kernel, in float64 arithmetic, with no
    tensor made on the way (a served Predict's model step). None where :func:`why_not` sends the
    rollout to the torch path (the caller then runs it), counted and logged as :func:`dispatch`
    counts and logs.

    Args:
        rule: the rule.
        w: ``[1, K]`` weights before the first trial; ``h``: ``[1, H]`` its state.
        pre: ``[T - 1, 1, D]`` the rule's precomputed inputs of every trial but the last.
        x: ``[T, K]`` policy features; ``y``: ``[T]`` choices (1 right).
        rate: optional ``[K]`` or ``[1, K]`` multiplier of every update.

    Returns:
        ``(weights [T, K], p_right [T], log-likelihood)`` or None.
    """
    if _path(rule, w, h, pre, rate, fused=True) is not None:
        return None
    ws, _ = _rollout_f64(rule, w, h, pre, rate)
    x_np = np.ascontiguousarray(x.detach().numpy(), dtype=np.float64)
    y_np = np.ascontiguousarray(y.detach().numpy(), dtype=np.float64)
    traj, p, ll = _policy_kernel(_f64(w[0]), ws, x_np, y_np)
    return traj, p, float(ll)


def why_not_rows(rule: LearningRule) -> str | None:
    """Why :func:`step_rows` cannot run ``rule`` now (None: it can)."""
    if _NUMBA_ERROR is not None:
        return _NUMBA_ERROR
    if getattr(_enabled, "off", False):
        return "torch path requested"
    if not supports(rule):
        return f"no fused kernel for {type(rule).__name__}"
    if not rule.learns:
        return "no per-trial loop to fuse"
    if not kernels_ready():
        return "kernels still compiling"
    return None


def step_rows(rule: LearningRule, w: np.ndarray, h: np.ndarray, pre: np.ndarray, rate: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One step of ``rule`` for ``R`` independent rows on the compiled path, numpy in and out
    (a teaching decision's candidates x outcomes, :mod:`twin.sim.teaching`); the caller checked
    :func:`why_not_rows`. The kernels are the rollout's, called with one trial, so the compiled
    code is the one :func:`warm_up` compiled.

    Args:
        rule: a rule with a kernel.
        w: ``[R, K]`` float64 C-contiguous weights; ``h``: ``[R, H]`` float64 state.
        pre: ``[R, D]`` float64 rows of the rule's :meth:`~LearningRule.precompute`.
        rate: ``[R, K]`` float64 learning-rate multipliers (None: 1).

    Returns:
        ``(w_next [R, K], h_next [R, H])``.
    """
    kernel, *ctx = _kernel_args(rule)
    rate_np = np.ones_like(w) if rate is None else rate
    ws, h_out = kernel(w, h, pre[None], rate_np, rate is not None, *ctx)
    return ws[0], h_out


def dispatch(
    rule: LearningRule, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None = None, fused: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rule.rollout(w, h, pre, rate)``, on the compiled batch-1 path where :func:`why_not`
    allows it; the path taken is logged at DEBUG and counted in :data:`PATH_COUNTS`.
    ``fused=False`` forces the rule's own step loop (the reference of both the compiled batch-1
    path and the rule's fused training rollout)."""
    if _path(rule, w, h, pre, rate, fused):
        return rule.rollout(w, h, pre, rate=rate, fused=fused)
    return rollout(rule, w, h, pre, rate)


def _path(rule: LearningRule, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None, fused: bool) -> str | None:
    """Why this rollout takes the torch path (None: the fused one), counted and logged."""
    reason = why_not(rule, w, h, pre, rate) if fused else "reference loop requested"
    path = "torch" if reason else "fused"
    PATH_COUNTS[(path, rule.name, reason or "")] += 1
    if log.isEnabledFor(logging.DEBUG):
        log.debug("rollout path=%s rule=%s batch=%d trials=%d%s", path, rule.name, w.shape[0], pre.shape[0], f" reason={reason}" if reason else "")
    return reason


@dataclass(frozen=True)
class WarmUp:
    """What :func:`warm_up` did.

    Attributes:
        seconds: wall time it took (compiling, or loading from the on-disk cache).
        kernels: rules whose kernels are ready.
        error: why the fused path is unavailable (None: it is available).
    """

    seconds: float
    kernels: tuple[str, ...]
    error: str | None = None


def warm_up() -> WarmUp:
    """Compile (or load from numba's cache) every kernel by running it once on a tiny input of
    the dtypes and layouts real calls use, so the first real call compiles nothing."""
    t0 = time.perf_counter()
    if _NUMBA_ERROR is not None:  # pragma: no cover
        return WarmUp(0.0, (), _NUMBA_ERROR)
    from twin.data.features import FeatureSpec
    from twin.models.rules import make_config, make_rule, rule_names, get_rule, UpdateInputs

    names = []
    k = FeatureSpec().n_features
    g = torch.Generator().manual_seed(0)
    for name in rule_names():
        cls = get_rule(name)
        if cls not in _KERNELS:
            continue
        configs = [make_config(name)]
        if cls is DNNDeltaRule:
            configs.append(make_config(name, mirror_symmetric=True))
        for cfg in configs:
            with torch.random.fork_rng(devices=[]):
                rule = make_rule(name, k, cfg)
            if rule.needs_mirror:
                rule.use_mirror(FeatureSpec().mirror())
            x = torch.rand(1, 2, k, generator=g)
            y = torch.ones(1, 2)
            with torch.no_grad():
                pre = rule.precompute(UpdateInputs.from_trials(x, y, y, y, torch.zeros(1, 2)))
                for rate in (None, torch.ones(k)):
                    rollout(rule, torch.zeros(1, k), rule.initial_state(1), pre, rate)
        names.append(name)
    _policy_kernel(np.zeros(k), np.zeros((1, 1, k)), np.ones((2, k)), np.ones(2))
    took = time.perf_counter() - t0
    log.info("fused kernels ready in %.2f s: %s", took, ", ".join(names))
    return WarmUp(took, tuple(names))


__all__ = [
    "CHUNK_TRIALS",
    "FUSED_BATCH_LIMITS",
    "max_fused_batch",
    "PATH_COUNTS",
    "WarmUp",
    "policy_along",
    "compiled",
    "defer_until_ready",
    "dispatch",
    "kernels_ready",
    "mark_ready",
    "rollout",
    "step_rows",
    "supports",
    "torch_path",
    "warm_up",
    "why_not",
    "why_not_rows",
]
