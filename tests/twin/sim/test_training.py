"""Training-to-criterion simulation: exact trial accounting, masks, per-row protocols, seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from twin.sim.agents import PACED_TRUTHS, Family
from twin.analysis.criteria import TRAINED_1A, TRAINED_1B
from twin.models.learner import LearnerModel, ModelSpec
from twin.protocol import IBL_DEFAULT, Curriculum, StimulusSchedule
from twin.sim.training import contrast_bins, simulate_training

FULL_SET = Curriculum(stimulus=StimulusSchedule.single((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), session_trials=(250, 300))


def static(w: list[float]) -> LearnerModel:
    m = LearnerModel(ModelSpec("static"))
    with torch.no_grad():
        m.w0.copy_(torch.tensor(w))
    return m.eval()


def test_an_expert_is_trained_after_exactly_three_sessions():
    run = simulate_training(static([12.0, 0.0]), [FULL_SET] * 6, max_sessions=8, seed=0)
    assert run.reached.all() and torch.all(run.criterion_session == 2)
    n = run.stats.n_trials
    assert torch.equal(run.trials_to_criterion, n[:, :3].sum(1).long())
    assert torch.all((n[:, :3] >= 250) & (n[:, :3] <= 300))
    assert torch.all(run.stats.n_sessions == 3)  # stopped once trained
    assert torch.equal(run.sessions_to_criterion, torch.full((6,), 3))


def test_a_guesser_never_reaches_the_criterion_and_counts_every_trial():
    run = simulate_training(static([0.0, 0.0]), [FULL_SET] * 4, max_sessions=5, seed=1)
    assert not run.reached.any() and torch.all(run.criterion_session == -1)
    assert torch.equal(run.trials_to_criterion, run.stats.n_trials.sum(1).long())
    assert torch.all(run.stats.n_sessions == 5)


def test_a_biased_expert_passes_1a_only_when_the_bias_is_small():
    run = simulate_training(static([12.0, 9.0]), [FULL_SET] * 4, max_sessions=5, seed=2)
    assert not run.reached.any()  # a right bias of about 20 % contrast breaks |bias| < 16 %
    ok = simulate_training(static([12.0, 0.2]), [FULL_SET] * 4, max_sessions=5, seed=2, criterion=TRAINED_1B)
    assert not ok.reached.any()  # 1b needs > 400 trials per session
    long = replace(FULL_SET, session_trials=(450, 500))
    assert simulate_training(static([12.0, 0.2]), [long] * 4, max_sessions=5, seed=2, criterion=TRAINED_1B).reached.all()


def test_rows_follow_their_own_protocol_and_runs_are_seeded():
    short = replace(FULL_SET, session_trials=(210, 220))
    protos = [FULL_SET] * 3 + [short] * 3
    run = simulate_training(static([12.0, 0.0]), protos, max_sessions=4, seed=3)
    assert torch.all(run.trials_to_criterion[3:] < run.trials_to_criterion[:3])
    again = simulate_training(static([12.0, 0.0]), protos, max_sessions=4, seed=3)
    assert torch.equal(run.stats.n, again.stats.n)
    other = simulate_training(static([12.0, 0.0]), protos, max_sessions=4, seed=4)
    assert not torch.equal(run.stats.n, other.stats.n)


def test_a_learner_improves_and_is_trained_under_the_default_protocol():
    truth = PACED_TRUTHS[Family.REINFORCE].build()
    run = simulate_training(truth, [IBL_DEFAULT] * 16, max_sessions=40, seed=5)
    assert run.reached.float().mean() > 0.8
    acc = run.stats.easy_accuracy()
    first, last = acc[:, 0], acc[torch.arange(16), (run.stats.n_sessions - 1)]
    assert torch.all(last > first)
    assert torch.all(run.end_phase[run.reached] >= 3)  # trained animals saw the low contrasts (0.0625 from phase 3)


def test_contrast_bins():
    levels, signed, side = contrast_bins([IBL_DEFAULT, Curriculum(stimulus=StimulusSchedule.single((0.3,)))])
    assert levels.tolist() == pytest.approx([0.0, 0.0625, 0.125, 0.25, 0.3, 0.5, 1.0])
    assert signed.tolist()[:4] == [0.0, 0.0, -6.25, 6.25] and side.tolist()[:4] == [0, 1, 0, 1]
    assert TRAINED_1A.window == 3


def test_a_session_plan_sets_each_rows_session_lengths_and_count():
    from twin.sim.training import SessionPlan

    lengths = torch.tensor([[300, 250, 0], [260, 270, 280]])
    run = simulate_training(static([0.0, 0.0]), [FULL_SET] * 2, max_sessions=10, seed=0, stop_when_trained=False, plan=SessionPlan(lengths))
    assert torch.equal(run.stats.n_sessions, torch.tensor([2, 3]))
    assert torch.equal(run.stats.n_trials[:, :3].long(), lengths)


def test_a_session_plan_with_protocols_runs_each_sessions_contrast_set():
    from twin.sim.training import SessionPlan

    easy = Curriculum(stimulus=StimulusSchedule.single((1.0,)), session_trials=(100, 100))
    hard = Curriculum(stimulus=StimulusSchedule.single((0.0625,)), session_trials=(100, 100))
    plan = SessionPlan(torch.full((3, 2), 100), ((easy,) * 3, (hard,) * 3))
    run = simulate_training(static([5.0, 0.0]), [easy] * 3, max_sessions=2, seed=0, stop_when_trained=False, plan=plan)
    shown = run.stats.n > 0  # [B, S, K]
    level = run.stats.contrast.abs()
    assert torch.all(level[shown[:, 0].any(0)] == 100.0)
    assert torch.all(level[shown[:, 1].any(0)] == 6.25)


def test_a_session_plan_rejects_a_session_after_an_empty_one():
    from twin.sim.training import SessionPlan

    with pytest.raises(ValueError, match="prefix"):
        SessionPlan(torch.tensor([[100, 0, 100]]))
