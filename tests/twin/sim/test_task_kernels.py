"""The compiled environment (``TaskEnv(fused=True)``, :mod:`twin.sim.task_kernels`) against its
torch form, trial by trial: the same draws, outputs and state for the same seed, with several
protocols in one batch, biased blocks, both debiasing sides, session starts and inactive rows."""

from __future__ import annotations

import golden_engine
import pytest
import torch

from twin.sim import task_kernels
from twin.sim.task import TaskEnv

pytestmark = pytest.mark.skipif(not task_kernels.AVAILABLE, reason="numba missing: only the torch form runs")

STATE = ("phase", "count", "perf_ptr", "perf_n", "perf_sum", "pending", "n_left", "n_resp", "debias_trial", "p_left", "block_left", "last_side", "last_contrast")


def _pair(rows, start_phase):
    envs = []
    for fused in (True, False):
        envs.append(TaskEnv(rows, len(rows), torch.Generator().manual_seed(4), start_phase=start_phase, fused=fused))
    assert envs[0].fused and not envs[1].fused
    return envs


def test_kernels_match_the_torch_form_trial_by_trial():
    protos = golden_engine.protocols()
    rows = [p for p in protos for _ in range(10)]
    b = len(rows)
    start = torch.tensor([i % 2 if len(p.stimulus.phases) > 1 else 0 for i, p in enumerate(rows)])
    fused, ref = _pair(rows, start)
    g = torch.Generator().manual_seed(8)
    for t in range(400):
        ss = torch.full((b,), t % 97 == 0) | (torch.rand(b, generator=g) < 0.01)
        active = None if t % 3 else torch.rand(b, generator=g) < 0.8
        out_f, out_r = fused.draw(ss, active), ref.draw(ss, active)
        for a, r in zip(out_f, out_r):
            assert torch.equal(a, r), t
        correct = torch.rand(b, generator=g) < 0.4 + 0.5 * (t / 400)
        fused.observe(correct, active)
        ref.observe(correct, active)
        for k in STATE:
            assert torch.equal(getattr(fused, k), getattr(ref, k)), (t, k)
        assert torch.equal(fused.window_correct(), ref.window_correct()), t
    assert fused.g.get_state().equal(ref.g.get_state())  # the same number of draws
    assert int(fused.phase.max()) >= 2 and bool(fused.debias_trial.any())  # the run advanced and debiased


def test_protocol_without_performance_rules():
    protos = golden_engine.protocols()
    rows = [protos[3]] * 5  # one phase, no debiasing: no levels at all
    fused, ref = _pair(rows, 0)
    for t in range(30):
        ss = torch.full((5,), t == 0)
        for a, r in zip(fused.draw(ss), ref.draw(ss)):
            assert torch.equal(a, r)
        ok = torch.arange(5) % 2 == t % 2
        fused.observe(ok)
        ref.observe(ok)
    assert torch.equal(fused.n_left, ref.n_left)


def test_shown_stimuli_and_snapshots_match_the_torch_form():
    """A teacher replaces the drawn stimulus (:meth:`TaskEnv.show`) and rewinds the environment
    (:meth:`TaskEnv.snapshot` / :meth:`TaskEnv.restore`): the compiled form, whose kernels hold
    views of the state, stays equal to the torch form."""
    protos = golden_engine.protocols()
    rows = [p for p in protos for _ in range(3)]
    b = len(rows)
    fused, ref = _pair(rows, 0)
    g = torch.Generator().manual_seed(3)
    snaps = None
    for t in range(300):
        ss = torch.full((b,), t % 101 == 0)
        for a, r in zip(fused.draw(ss), ref.draw(ss)):
            assert torch.equal(a, r), t
        if t % 4 == 0:  # the rig showed something else
            idx = torch.randint(0, fused.levels.numel() + 1, (b,), generator=g)
            contrast = torch.cat([fused.levels, torch.zeros(1)])[idx]
            side = (torch.rand(b, generator=g) < 0.5).float()
            fused.show(contrast, side)
            ref.show(contrast, side)
        if t == 150:
            snaps = (fused.snapshot(), ref.snapshot(), fused.g.get_state(), ref.g.get_state())
        correct = torch.rand(b, generator=g) < 0.7
        fused.observe(correct)
        ref.observe(correct)
        for k in STATE:
            assert torch.equal(getattr(fused, k), getattr(ref, k)), (t, k)
        assert torch.equal(fused.window_correct(), ref.window_correct()), t
    assert snaps is not None
    before = {k: getattr(fused, k).clone() for k in STATE}
    fused.restore(snaps[0])
    ref.restore(snaps[1])
    fused.g.set_state(snaps[2])
    ref.g.set_state(snaps[3])
    assert any(not torch.equal(before[k], getattr(fused, k)) for k in STATE)  # it did rewind
    for _ in range(20):  # and runs on from there identically
        ss = torch.zeros(b, dtype=torch.bool)
        for a, r in zip(fused.draw(ss), ref.draw(ss)):
            assert torch.equal(a, r)
        ok = torch.rand(b, generator=g) < 0.6
        fused.observe(ok)
        ref.observe(ok)
        for k in STATE:
            assert torch.equal(getattr(fused, k), getattr(ref, k)), k
