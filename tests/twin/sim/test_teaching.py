"""The trial-by-trial teacher: the lookahead matches the twin's own rule, the choice stays within
the allowed set and the constraints, prefers informative stimuli, and is deterministic by seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twin.data.features import FeatureSpec
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import UpdateInputs
from twin.protocol import IBL_DEFAULT
from twin.sim.rollout import Carry, Schedule, run_trials
from twin.sim.teaching import (
    Candidates,
    SideHistory,
    TeachingConstraints,
    TwinTeacher,
    choose,
    constraint_mask,
    lookahead,
)


def _model(rule: str, history: bool = True, seed: int = 0) -> LearnerModel:
    torch.manual_seed(seed)
    m = LearnerModel(ModelSpec(rule, FeatureSpec(history=history))).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.mark.parametrize("rule", ["dnn", "rnn", "reinforce"])
def test_lookahead_matches_the_rules_own_step(rule):
    m = _model(rule)
    torch.manual_seed(1)
    w = torch.randn(1, m.n_weights)
    h = torch.randn(1, m.rule.state_size)
    rate = torch.rand(m.n_weights) + 0.5
    cands = Candidates.of((1.0, 0.25, 0.0), zero_left=False)
    pc, pr = torch.tensor([1.0]), torch.tensor([0.0])
    look = lookahead(m, w, h, pc, pr, cands, rate=rate)
    # reference: each candidate and choice as its own one-trial rollout of the torch loop
    from twin.sim.teaching import TeachingObjective, criterion_test_set

    x_test, s_test = criterion_test_set(m, TeachingObjective())
    for n in range(cands.n):
        c, s = float(cands.contrast[n]), float(cands.side[n])
        x = m.spec.features.compute(torch.tensor([c * (1 - s)]), torch.tensor([c * s]), pc, pr)
        p = torch.sigmoid((w * x).sum(-1))
        exp = 0.0
        for y in (0.0, 1.0):
            yt = torch.tensor([[y]])
            inp = UpdateInputs(x[:, None], yt, (yt == s).float(), torch.tensor([[s]]), torch.zeros(1, 1))
            ws, _ = m.rollout(w, h, m.rule.precompute(inp), rate.log(), fused=False)
            pt = torch.sigmoid(ws[0] @ x_test.T)
            acc = torch.where(s_test > 0.5, pt, 1 - pt).mean()
            exp = exp + (p if y == 1.0 else 1 - p) * acc
        base = torch.where(s_test > 0.5, torch.sigmoid(w @ x_test.T), 1 - torch.sigmoid(w @ x_test.T)).mean()
        assert float(look.gain[0, n]) == pytest.approx(float(exp - base), abs=1e-5)
        assert float(look.p_correct[0, n]) == pytest.approx(float(p if s == 1 else 1 - p), abs=1e-6)


def test_prefers_an_informative_stimulus_over_one_already_answered():
    """A REINFORCE twin that answers full contrast almost perfectly gains least from it: the teacher
    picks a contrast where the policy is still uncertain."""
    m = _model("reinforce", history=False)
    m.rule.set_parameters(alpha=[0.5, 0.5], baseline=[0.5, 0.5])
    w = torch.tensor([[6.0, 0.0]])  # p(correct) > 0.99 at contrast 1, ~0.86 at .0625
    cands = Candidates.of((1.0, 0.0625), zero_left=False)
    look = lookahead(m, w, torch.zeros(1, 0), torch.zeros(1), torch.zeros(1), cands)
    full = cands.contrast == 1.0
    assert float(look.p_correct[0, full].min()) > 0.99
    assert float(look.gain[0, ~full].max()) > float(look.gain[0, full].max())
    idx = choose(look.gain, torch.ones(1, cands.n, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert float(cands.contrast[idx]) == 0.0625


def test_constraints_side_runs_balance_and_easy_share():
    cands = Candidates.of((1.0, 0.25), zero_left=False)  # (1, L), (1, R), (.25, L), (.25, R)
    c = TeachingConstraints(max_same_side=3, window=10, max_side_imbalance=4, min_easy_fraction=0.5, cover_window=0)
    allowed = torch.ones(1, cands.n, dtype=torch.bool)
    hist = SideHistory(1, c.window)
    for _ in range(3):
        hist.push(torch.tensor([1.0]), torch.tensor([True]))
    m = constraint_mask(cands, allowed, hist, c)
    assert not bool(m[0, cands.side == 1].any()) and bool(m[0, cands.side == 0].all())
    # hard trials only so far: easy ones are required
    hist = SideHistory(1, c.window)
    for s in (0.0, 1.0, 0.0, 1.0):
        hist.push(torch.tensor([s]), torch.tensor([False]))
    m = constraint_mask(cands, allowed, hist, c)
    assert bool(m[0, cands.contrast == 1.0].all()) and not bool(m[0, cands.contrast < 1.0].any())
    # never outside the allowed set, even when that leaves only a constrained side
    only_right_hard = (cands.side == 1) & (cands.contrast < 1.0)
    m = constraint_mask(cands, only_right_hard.unsqueeze(0), hist, c)
    assert torch.equal(m[0], only_right_hard)


def _session(seed: int, n: int = 120, rule: str = "dnn") -> tuple[list[tuple[float, float]], TwinTeacher]:
    m = _model(rule)
    w, h = m.initial(1)
    g = torch.Generator().manual_seed(seed)
    c = TeachingConstraints(max_same_side=3, window=20, max_side_imbalance=6, allowed_contrasts=(1.0, 0.5, 0.25))
    t = TwinTeacher(m, w.clone(), h, IBL_DEFAULT, g, start_phase=4, constraints=c)
    shown = []
    run = 0
    last = None
    for i in range(n):
        cl, cr, ans, _ = t.draw(torch.tensor([i == 0]))
        contrast, side = float(cl + cr), float(ans)
        shown.append((contrast, side))
        run = run + 1 if side == last else 1
        last = side
        assert run <= 3
        assert contrast in (1.0, 0.5, 0.25)  # the lab's set within phase 4's {1, .5, .25, .125, .0625, 0}
        t.observe(torch.rand(1, generator=g) < 0.7)
    return shown, t


def test_teacher_session_is_deterministic_and_within_constraints():
    a, _ = _session(3)
    b, _ = _session(3)
    assert a == b
    # a static twin gains nothing from any stimulus: every choice is a seeded tie-break
    a, _ = _session(3, rule="static")
    b, _ = _session(3, rule="static")
    c, _ = _session(4, rule="static")
    assert a == b
    assert a != c


def test_teacher_runs_as_an_environment_of_run_trials():
    twin, animal = _model("dnn", seed=0), _model("dnn", seed=1)
    b, n = 3, 60
    w, h = twin.initial(b)
    g = torch.Generator().manual_seed(0)
    teacher = TwinTeacher(twin, w.clone(), h, IBL_DEFAULT, g, start_phase=2)
    starts = torch.zeros(b, n, dtype=torch.bool)
    starts[:, 0] = True
    wa, ha = animal.initial(b)
    out = run_trials(animal, teacher, Schedule.from_starts(starts), torch.Generator().manual_seed(1), Carry.start(wa, ha))
    assert out.w.shape == (b, animal.n_weights)
    assert teacher.history.n.tolist() == [40, 40, 40]  # the history keeps max(window, cover_window) trials
    assert not torch.equal(teacher.w, w)  # the twin learned from the outcomes


@pytest.mark.parametrize("rule", ["dnn", "rnn", "reinforce", "reinforce_history"])
def test_compiled_decision_matches_the_torch_lookahead(rule):
    m = _model(rule)
    torch.manual_seed(2)
    w = torch.randn(1, m.n_weights)
    h = torch.rand(1, m.rule.state_size)
    rate = torch.rand(m.n_weights) + 0.5
    t = TwinTeacher(m, w, h, IBL_DEFAULT, torch.Generator().manual_seed(0), start_phase=4, rate=rate)
    assert t.compiled()
    for pc, pr in ((0.0, 0.0), (1.0, 1.0), (-1.0, 0.0)):
        t.prev_choice, t.prev_reward = torch.tensor([pc]), torch.tensor([pr])
        gain, p = t._compiled_lookahead()
        look = lookahead(m, t.w, t.h, t.prev_choice, t.prev_reward, t.candidates, rate=rate)
        assert gain == pytest.approx(look.gain[0].numpy(), abs=1e-5)
        assert p == pytest.approx(look.p_correct[0].numpy(), abs=1e-5)
    # the compiled twin update matches the torch step
    t.fallback_draw(torch.tensor([False]))
    t.show(torch.tensor([0.25]), torch.tensor([1.0]))
    ref = TwinTeacher(m, t.w, t.h, IBL_DEFAULT, torch.Generator().manual_seed(0), start_phase=4, rate=rate)
    ref._tables = None
    ref.prev_choice, ref.prev_reward = t.prev_choice.clone(), t.prev_reward.clone()
    ref.fallback_draw(torch.tensor([False]))
    ref.show(torch.tensor([0.25]), torch.tensor([1.0]))
    for teacher in (t, ref):
        teacher.record_twin(torch.tensor([0.0]), torch.tensor([0.0]))
    assert t.w.numpy() == pytest.approx(ref.w.numpy(), abs=1e-5)
    assert t.h.numpy() == pytest.approx(ref.h.numpy(), abs=1e-5)


def test_coverage_shows_every_allowed_stimulus_within_its_window():
    """A greedy teacher would show full contrast only (its gain is the largest); the coverage
    rule makes every stimulus of the phase due once it has not been shown for cover_window trials."""
    cands = Candidates.of((1.0, 0.5), zero_left=False)
    c = TeachingConstraints(cover_window=8, max_same_side=8, max_side_imbalance=8, min_easy_fraction=0.0)
    hist = SideHistory(1, max(c.window, c.cover_window))
    allowed = torch.ones(1, cands.n, dtype=torch.bool)
    gain = (cands.contrast == 1.0).float().unsqueeze(0)  # full contrast always looks best
    g = torch.Generator().manual_seed(0)
    shown = []
    for _ in range(40):
        m = constraint_mask(cands, allowed, hist, c)
        i = int(choose(gain, m, g)[0])
        shown.append((float(cands.contrast[i]), float(cands.side[i])))
        hist.push(cands.side[i : i + 1].numpy(), np.array([True]), cands.contrast[i : i + 1].numpy())
    for lo in range(8, 40 - 8):
        window = set(shown[lo : lo + 9])
        assert {(0.5, 0.0), (0.5, 1.0)} <= window, (lo, shown)
    assert sum(s[0] == 1.0 for s in shown) > 25  # the free trials still follow the gain


def test_fill_advancement_shows_the_rules_contrasts_until_their_windows_fill():
    """In phase 0 iblrig's rule judges the last 50 trials of each of ±1 and ±0.5 (more than 80%
    correct): a static twin gains nothing from any stimulus, and the teacher still shows those
    four until they pass, so the phase advances as soon as it can."""
    m = _model("static", history=False)
    w, h = m.initial(1)
    t = TwinTeacher(m, w.clone(), h, IBL_DEFAULT, torch.Generator().manual_seed(0), constraints=TeachingConstraints(cover_window=0, min_easy_fraction=0.0))
    counts: dict[tuple[float, float], int] = {}
    for i in range(400):
        cl, cr, ans, _ = t.draw(torch.tensor([i == 0]))
        if int(t.phase[0]) == 1:
            break
        key = (float(cl + cr), float(ans))
        counts[key] = counts.get(key, 0) + 1
        t.observe(torch.tensor([True]))
    assert int(t.phase[0]) == 1, counts
    assert set(counts) == {(1.0, 0.0), (1.0, 1.0), (0.5, 0.0), (0.5, 1.0)}
    assert all(41 <= n <= 50 for n in counts.values()), counts
    assert i <= 4 * 50 + 10
