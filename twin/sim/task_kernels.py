"""Compiled per-trial kernels of the task environment (:class:`twin.sim.task.TaskEnv`) and of the
per-session counts (:class:`twin.sim.training.CriterionRecorder`), batched over rows.

The torch form of the environment spends some 300 small tensor operations per trial on a few
integers and flags per row (advanced-index gathers of per-phase tables, ``torch.where`` of every
state tensor, dtype casts), each one a dispatch and a fresh buffer. These kernels do the same
work row by row in one pass over preallocated state, in place, with the state's own dtypes:

* :func:`draw_pre`: the session reset, the advancement check (iblrig's ``check_training_phase``)
  and whether the trial will be a debiasing one (which decides whether a normal draw is taken);
* :func:`draw_post`: given the trial's uniform (and normal) draws, the block prior, the side, the
  contrast (inverse CDF of the phase's proportions) and the debiasing repeat;
* :func:`observe`: the outcome into the debiasing flag, the session's choice counts and the
  performance ring buffers;
* :func:`count_trials`: a trial into the per-session counts by (contrast, rewarded side).

Every random number is still drawn by torch, in the order and shapes of the torch form, and every
floating-point value the kernels compute is exact (counts, comparisons, products by 0 and 1) or
computed in float32 as torch does, so both forms give identical results for the same seed
(``tests/twin/sim/test_engine_golden.py``, ``tests/twin/sim/test_task_kernels.py``). Thresholds
that torch computes in float32 (``threshold * window + 1e-4``, ``debias_min - 1e-9``) are
computed once by torch and passed in. The tables are per protocol (``U`` distinct ones, row ``i``
following protocol ``which[i]``), so they stay in cache however many rows share them. Rows where ``active`` is False keep their state; their
outputs are computed as the torch form computes them.

Shapes: ``B`` rows, ``P`` phases, ``W`` the widest phase, ``L`` the contrast levels the
performance rules look at, ``K = 2 L`` level-side pairs, ``M`` the longest window. The ring
buffers of outcomes are bits (``perf_buf`` ``[B, K, ceil(M / 64)]`` int64, slot ``j`` in bit
``j % 64`` of word ``j // 64``): a 50-trial window per level and side is one word, so the
buffers of 10,000 rows stay in cache.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import numpy as np

from twin.models import batch1

try:  # numba is a dependency, but the torch form must keep working without it
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]

AVAILABLE = numba is not None
"""Whether the kernels are compiled (else the environment runs its torch form)."""

_force = threading.local()


def usable() -> bool:
    """Whether new environments (and criterion counts) take the kernels now: numba is present and
    running them compiles nothing, i.e. not in a server whose warm-up has not compiled them yet
    (:func:`twin.models.batch1.kernels_ready`; until then the torch form, with identical results,
    so no request waits seconds on a compiler), or inside :func:`compiling`."""
    return AVAILABLE and (getattr(_force, "on", False) or batch1.kernels_ready())


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Take the kernels in this thread even before they are marked ready (the warm-up compiles
    them this way)."""
    prev = getattr(_force, "on", False)
    _force.on = True
    try:
        yield
    finally:
        _force.on = prev


def _compiled(fn: Callable) -> Callable:  # type: ignore[type-arg]
    """``fn`` as an exact (no fast-math) numba function, cached on disk where possible."""
    if numba is None:  # pragma: no cover
        return fn
    try:
        return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # no writable cache folder
        return numba.njit(cache=False, nogil=True, boundscheck=False)(fn)


@_compiled
def draw_pre(  # type: ignore[no-untyped-def]
    ss, active, has_active, has_levels, window_m, which,
    phase, count, perf_buf, perf_ptr, perf_n, perf_sum, pending, n_left, n_resp,
    is_perf, is_count, trials, cut, needs, window_i, debias_in, against_bias,
    scratch_phase, scratch_rep,
):
    """Session reset and advancement of every active row (in place); for every row, the phase
    the trial is drawn in (``scratch_phase``) and whether it repeats (``scratch_rep``). Returns
    whether any row repeats against the bias (then a normal draw is taken)."""
    b = phase.shape[0]
    n_k = perf_sum.shape[1]
    m = window_m
    need_normal = False
    for i in range(b):
        u = which[i]
        act = (not has_active) or active[i]
        fresh = ss[i]
        c = 1 if fresh else count[i] + 1
        pend = pending[i] and not fresh
        ph = phase[i]
        go = is_count[u, ph] and c >= trials[u, ph]
        if has_levels and is_perf[u, ph] and not go:
            ok = True
            thr = cut[u, ph]
            for k in range(n_k):
                if needs[u, ph, k // 2]:
                    s = np.float32(0.0) if fresh else perf_sum[i, k]
                    if not s > thr:
                        ok = False
                        break
            go = ok
        if go:
            ph += 1
            c = 0
        if act:
            count[i] = c
            pending[i] = pend
            if fresh:
                n_left[i] = 0.0
                n_resp[i] = 0.0
                for k in range(n_k):
                    perf_n[i, k] = 0
                    perf_ptr[i, k] = 0
                    perf_sum[i, k] = 0.0
            if go:
                phase[i] = ph
                if has_levels:  # the new phase's rule may look at another window
                    w = window_i[u, ph]
                    for k in range(n_k):
                        ptr, n = perf_ptr[i, k], perf_n[i, k]
                        tot = np.float32(0.0)
                        for j in range(m):
                            age = (ptr - 1 - j) % m  # 0 = the newest
                            if age < w and age < n:
                                tot += np.float32((perf_buf[i, k, j >> 6] >> (j & 63)) & 1)
                        perf_sum[i, k] = tot
        rep = pend and debias_in[u, ph]
        scratch_phase[i] = ph
        scratch_rep[i] = rep
        if rep and against_bias[u]:
            need_normal = True
    return need_normal


@_compiled
def draw_post(  # type: ignore[no-untyped-def]
    ss, active, has_active, any_biased, need_normal, which,
    u_pick, block_len, u_side, u_idx, z,
    p_left, block_left, last_side, last_contrast, last_level, debias_trial, n_left, n_resp,
    scratch_phase, scratch_rep,
    biased, unbiased, p0, p1, cum, counts, table, level_of, against_bias, zero_left,
    out_left, out_right, out_side, out_prob_left,
):
    """The block prior, side, contrast and debiasing repeat of every row's trial (state of the
    active rows updated in place); writes ``(contrast_left, contrast_right, answer, prob_left)``."""
    b = p_left.shape[0]
    width = cum.shape[2]
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for i in range(b):
        u = which[i]
        act = (not has_active) or active[i]
        ph = scratch_phase[i]
        pl = p_left[i]
        bl = block_left[i]
        if any_biased:
            if ss[i] and biased[u]:
                pl = half
                bl = unbiased[u]
            switch = bl <= 0 and biased[u]
            first = switch and pl == half
            if first:
                pl = p0[u] if u_pick[i] < half else p1[u]
            elif switch:
                pl = p1[u] if pl == p0[u] else p0[u]
            if switch:
                bl = block_len[i]
            if biased[u]:
                bl = np.float32(bl - one)
        side = one if u_side[i] >= pl else zero
        x = u_idx[i]
        idx = 0
        for j in range(width):
            if x >= cum[u, ph, j]:
                idx += 1
        top = counts[u, ph] - 1
        if idx > top:
            idx = top
        contrast = table[u, ph, idx]
        level = level_of[u, ph, idx]
        rep = scratch_rep[i]
        prob_left = pl
        if rep:
            rep_side = last_side[i]
            if need_normal and against_bias[u]:
                nl = zero if ss[i] else n_left[i]
                nr = zero if ss[i] else n_resp[i]
                if nr < one:
                    nr = one
                f_left = np.float32(nl / nr)
                rep_side = one if np.float32(f_left + np.float32(half * z[i])) >= half else zero
            side = rep_side
            contrast = last_contrast[i]
            level = last_level[i]
            if not against_bias[u]:
                prob_left = np.float32(one - last_side[i])
        if contrast == zero and zero_left[u]:
            side = zero
        out_left[i] = np.float32(contrast * np.float32(one - side))
        out_right[i] = np.float32(contrast * side)
        out_side[i] = side
        out_prob_left[i] = prob_left
        if act:
            p_left[i] = pl
            block_left[i] = bl
            debias_trial[i] = rep
            last_side[i] = side
            last_contrast[i] = contrast
            last_level[i] = level


@_compiled
def observe(  # type: ignore[no-untyped-def]
    correct, active, has_active, has_levels, window_m, which,
    phase, last_side, last_contrast, last_level, pending, n_left, n_resp,
    perf_buf, perf_ptr, perf_n, perf_sum, window_i, debias_cut,
):
    """The outcome ``correct`` of every active row's trial into its state, in place."""
    b = phase.shape[0]
    m = window_m
    for i in range(b):
        if has_active and not active[i]:
            continue
        u = which[i]
        ok = correct[i]
        pending[i] = (not ok) and last_contrast[i] >= debias_cut[u]
        if (last_side[i] == 0.0) == ok:
            n_left[i] += 1.0
        n_resp[i] += 1.0
        level = last_level[i]
        if has_levels and level >= 0:
            k = 2 * level + (1 if last_side[i] != 0.0 else 0)
            ptr, n = perf_ptr[i, k], perf_n[i, k]
            w = window_i[u, phase[i]]
            back = ptr - w  # (ptr - w) mod m, without an integer division (0 <= ptr < m, 1 <= w <= m)
            if back < 0:
                back += m
            leaving = np.float32((perf_buf[i, k, back >> 6] >> (back & 63)) & 1) if n >= w else np.float32(0.0)
            new = np.float32(1.0) if ok else np.float32(0.0)
            word, bit = perf_buf[i, k, ptr >> 6], ptr & 63
            one_bit = np.int64(1) << bit
            perf_buf[i, k, ptr >> 6] = (word | one_bit) if ok else (word & ~one_bit)
            perf_ptr[i, k] = ptr + 1 if ptr + 1 < m else 0
            perf_n[i, k] = n + 1 if n + 1 < m else m
            perf_sum[i, k] = perf_sum[i, k] + np.float32(new - leaving)


@_compiled
def count_trials(contrast_left, contrast_right, answer, choice, active, has_active, levels, n_bins, sn, sr):  # type: ignore[no-untyped-def]
    """Add each (active) row's trial to its session counts ``sn`` and right choices ``sr``
    (``[B * n_bins]`` float64) in bin ``2 l + answer``, ``l`` the first level ``>=`` the contrast."""
    b = contrast_left.shape[0]
    n_lv = levels.shape[0]
    for i in range(b):
        c = np.float32(contrast_left[i] + contrast_right[i])
        lv = 0
        while lv < n_lv and levels[lv] < c:
            lv += 1
        k = i * n_bins + 2 * lv + int(answer[i])
        if has_active:
            a = 1.0 if active[i] else 0.0
            sn[k] += a
            sr[k] += a * np.float64(choice[i])
        else:
            sn[k] += 1.0
            sr[k] += np.float64(choice[i])


__all__ = ["AVAILABLE", "count_trials", "draw_post", "draw_pre", "observe"]
