"""Next-session planning: the lab default as fallback (no twin, low confidence, no proposal),
optimizer proposals when confident, constraints."""

from __future__ import annotations

from dataclasses import replace

import pytest

from optimizer.planning import FallbackReason, LabDefault, PlanConstraints, PlanSource, Proposal, plan_next_session
from twin.sim.forecast import Interval, SessionForecast
from twin.models.state import TwinState
from twin.protocol import IBL_DEFAULT, Curriculum, FeedbackPolicy, StimulusSchedule


class _Meta:
    version = 4


class _Twin:
    meta = _Meta()


STATE = TwinState(w=None, h=None, through_session=5, phase=2)  # type: ignore[arg-type]
EASY = Curriculum(name="easy", stimulus=StimulusSchedule.single((1.0,)), feedback=FeedbackPolicy(debias=False, reward_volume_ul=2.5, error_timeout_s=1.0))


def _fc(width: float, n: int = 550):
    def forecast(twin, state, p: Proposal) -> SessionForecast:
        acc = Interval(0.7, 0.7 - width / 2, 0.7 + width / 2)
        return SessionForecast(acc, (), (), (), Interval(2, 2, 2), p.n_trials, 10, 0.9)

    return forecast


def test_no_twin_falls_back_to_the_lab_default():
    plan = plan_next_session("m", None, None, PlanConstraints(), _fc(0.1), phase_without_twin=3)
    assert plan.fallback and plan.fallback_reason is FallbackReason.NO_TWIN and plan.source is PlanSource.DEFAULT_PROTOCOL
    assert plan.protocol == IBL_DEFAULT and plan.start_phase == 3 and plan.forecast is None and plan.twin is None
    assert (plan.protocol.feedback.reward_volume_ul, plan.protocol.feedback.error_timeout_s) == (3.0, 2.0) and plan.n_trials == 550
    assert sum(p for _, p in plan.contrast_proportions()) == pytest.approx(1.0)


def test_default_protocol_with_a_confident_twin_is_no_fallback():
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1))
    assert not plan.fallback and plan.source is PlanSource.DEFAULT_PROTOCOL and plan.start_phase == 2 and plan.forecast is not None


def test_uncertain_forecast_is_flagged():
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(max_interval_width=0.2), _fc(0.5))
    assert plan.fallback_reason is FallbackReason.LOW_CONFIDENCE and "too uncertain" in plan.explanation


def test_optimizer_proposal_used_when_confident_else_default():
    proposal = Proposal(EASY, 900, 0, "easier start")
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(max_trials=800), _fc(0.1), propose=lambda t, s, c: proposal)
    assert plan.source is PlanSource.OPTIMIZER and not plan.fallback and plan.protocol == EASY and plan.n_trials == 800
    assert plan.protocol.feedback.reward_volume_ul == 2.5 and "easier start" in plan.explanation
    calls = []

    def forecast(twin, state, p):
        calls.append(p.protocol)
        return _fc(0.5 if p.protocol == EASY else 0.1)(twin, state, p)

    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), forecast, propose=lambda t, s, c: proposal)
    assert plan.fallback_reason is FallbackReason.LOW_CONFIDENCE and plan.protocol == IBL_DEFAULT and calls == [EASY, IBL_DEFAULT]
    assert plan.forecast.accuracy.hi - plan.forecast.accuracy.lo == pytest.approx(0.1)  # the default's own forecast
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=lambda t, s, c: None)
    assert plan.fallback_reason is FallbackReason.NO_PROPOSAL and plan.protocol == IBL_DEFAULT


def test_constraints():
    c = PlanConstraints(min_trials=600, max_reward_volume_ul=2.0)
    lab = LabDefault(replace(IBL_DEFAULT, feedback=replace(IBL_DEFAULT.feedback, error_timeout_s=4.0)))
    plan = plan_next_session("m", None, None, c, _fc(0.1), lab=lab)
    assert plan.n_trials == 600 and (plan.protocol.feedback.reward_volume_ul, plan.protocol.feedback.error_timeout_s) == (2.0, 4.0)
    assert plan.protocol.stimulus == IBL_DEFAULT.stimulus  # only the reward volume is capped
    with pytest.raises(ValueError, match="at least 0.5"):
        PlanConstraints(max_reward_volume_ul=0.3)  # below what a protocol may give
    with pytest.raises(ValueError):
        PlanConstraints(min_trials=5, max_trials=2)
    with pytest.raises(ValueError):
        PlanConstraints(max_interval_width=0)


def test_an_optimizer_plan_carries_its_changes_and_sessions_cap():
    from optimizer.attribution import ChangeEffect

    change = ChangeEffect("debias", True, False, "repeat-on-error debiasing switched off", Interval(0.05, 0.01, 0.09), Interval(0.04, 0.0, 0.08), True, "helps")
    proposal = Proposal(EASY, 500, 0, "easier start", (change,), 15)
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=lambda t, s, c: proposal)
    assert plan.source is PlanSource.OPTIMIZER and plan.changes == (change,) and plan.max_sessions == 15
    fallback = plan_next_session("m", _Twin(), STATE, PlanConstraints(max_interval_width=0.2), _fc(0.5), propose=lambda t, s, c: proposal)
    assert fallback.changes == () and fallback.max_sessions == 0  # the lab default makes no change
