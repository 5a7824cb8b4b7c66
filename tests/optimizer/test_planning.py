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
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(max_trials=800), _fc(0.1), propose=lambda t, s, c, g: proposal)
    assert plan.source is PlanSource.OPTIMIZER and not plan.fallback and plan.protocol == EASY and plan.n_trials == 800
    assert plan.protocol.feedback.reward_volume_ul == 2.5 and "easier start" in plan.explanation
    calls = []

    def forecast(twin, state, p):
        calls.append(p.protocol)
        return _fc(0.5 if p.protocol == EASY else 0.1)(twin, state, p)

    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), forecast, propose=lambda t, s, c, g: proposal)
    assert plan.fallback_reason is FallbackReason.LOW_CONFIDENCE and plan.protocol == IBL_DEFAULT and calls == [EASY, IBL_DEFAULT]
    assert plan.forecast.accuracy.hi - plan.forecast.accuracy.lo == pytest.approx(0.1)  # the default's own forecast
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=lambda t, s, c, g: None)
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


# -- stage awareness --------------------------------------------------------------------------

from twin.analysis.criteria import READY_FOR_RECORDING, TRAINED_1A, TRAINED_1B  # noqa: E402
from twin.analysis.stage import StageAssessment, TrainingStage  # noqa: E402
from twin.protocol import IBL_BIASED, IBLRIG_BIASED, IBLRIG_TRAINING  # noqa: E402


def _stage(stage: TrainingStage, **sessions) -> StageAssessment:
    return StageAssessment("m", stage, 10, **sessions)


def test_each_stage_is_planned_towards_the_next_stage_criterion():
    asked = []

    def propose(t, s, c, target):
        asked.append(target)
        return Proposal(EASY, 500, 0, f"easier, to {target.label}", expected_trials=Interval(1200, 900, 1500), max_sessions=15)

    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=propose, stage=_stage(TrainingStage.TRAINING))
    assert plan.target is TRAINED_1A and plan.stage.stage is TrainingStage.TRAINING and plan.protocol == EASY
    assert plan.expected_trials == Interval(1200, 900, 1500) and plan.max_sessions == 15 and "trained_1a" in plan.explanation
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=propose, stage=_stage(TrainingStage.TRAINED_1A, trained_1a_session=7))
    assert plan.target is TRAINED_1B and "aimed at trained_1b" in plan.explanation and "trained_1a at session 7" in plan.explanation
    assert asked == [TRAINED_1A, TRAINED_1B]
    for st in (TrainingStage.TRAINED_1B, TrainingStage.BIASED):
        plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=propose, stage=_stage(st, biased_session=4))
        # never a training-phase plan: biasedChoiceWorld, aimed at ready_for_recording, no trials-to-criterion claim
        assert plan.protocol == IBL_BIASED and plan.start_phase == 0 and plan.target is READY_FOR_RECORDING
        assert plan.expected_trials is None and plan.max_sessions is None and plan.forecast is not None
        assert "ready_for_recording" in plan.explanation and "no trials-to-criterion forecast" in plan.explanation
        assert IBLRIG_BIASED.runs(plan.protocol) and not IBLRIG_TRAINING.runs(plan.protocol)
    assert len(asked) == 2  # the proposer (training criteria only) is not asked for trained animals
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=propose, stage=_stage(TrainingStage.READY_FOR_RECORDING, ready_session=9))
    assert plan.protocol == IBL_BIASED and plan.target is None and plan.expected_trials is None
    assert "ready for recording" in plan.explanation and "no criterion left" in plan.explanation


def test_a_trained_animal_without_a_twin_still_gets_biased_blocks():
    plan = plan_next_session("m", None, None, PlanConstraints(max_reward_volume_ul=1.0), _fc(0.1), phase_without_twin=5, stage=_stage(TrainingStage.BIASED, biased_session=4))
    assert plan.fallback_reason is FallbackReason.NO_TWIN and plan.protocol.stimulus == IBL_BIASED.stimulus and plan.start_phase == 0
    assert plan.protocol.feedback.reward_volume_ul == 1.0 and plan.target is READY_FOR_RECORDING
    plan = plan_next_session("m", None, None, PlanConstraints(), _fc(0.1))  # no stage given: a new animal
    assert plan.stage.stage is TrainingStage.TRAINING and plan.target is TRAINED_1A and plan.protocol == IBL_DEFAULT


def test_the_biased_plan_exports_only_what_stock_iblrig_runs():
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(max_trials=650), _fc(0.1), stage=_stage(TrainingStage.BIASED, biased_session=4))
    out = plan.protocol.export(IBLRIG_BIASED, plan.start_phase, plan.n_trials)
    assert out["task"] == "_iblrig_tasks_biasedChoiceWorld" and out["session_arguments"] == {}
    params = out["task_parameters"]
    # only keys stock iblrig v8 reads: biasedChoiceWorld's block keys and contrast set, and the base keys we set
    assert set(params) == {"BLOCK_INIT_5050", "BLOCK_LEN_FACTOR", "BLOCK_LEN_MAX", "BLOCK_LEN_MIN", "BLOCK_PROBABILITY_SET", "CONTRAST_SET", "CONTRAST_SET_PROBABILITY_TYPE", "REWARD_AMOUNT_UL", "FEEDBACK_ERROR_DELAY_SECS", "NTRIALS"}
    assert params["BLOCK_PROBABILITY_SET"] == [0.2, 0.8] and params["CONTRAST_SET"] == [1.0, 0.25, 0.125, 0.0625, 0.0] and params["NTRIALS"] == 550
    assert plan.protocol.to_iblrig(0, plan.n_trials) == out  # a biased-blocks curriculum exports as biasedChoiceWorld
    with pytest.raises(Exception, match="feedback.debias"):
        IBLRIG_BIASED.check(replace(IBL_BIASED, feedback=replace(IBL_BIASED.feedback, debias=True)))
    with pytest.raises(Exception, match="feedback.block_probs"):
        IBLRIG_BIASED.check(replace(IBL_BIASED, feedback=replace(IBL_BIASED.feedback, block_probs=(0.1, 0.9))))
    with pytest.raises(Exception, match="stimulus.phases"):
        IBL_BIASED.export(IBLRIG_TRAINING)  # stock trainingChoiceWorld cannot run it


def test_an_optimizer_plan_carries_its_changes_and_sessions_cap():
    from optimizer.attribution import ChangeEffect

    change = ChangeEffect("debias", True, False, "repeat-on-error debiasing switched off", Interval(0.05, 0.01, 0.09), Interval(0.04, 0.0, 0.08), True, "helps")
    proposal = Proposal(EASY, 500, 0, "easier start", max_sessions=15, changes=(change,))
    plan = plan_next_session("m", _Twin(), STATE, PlanConstraints(), _fc(0.1), propose=lambda t, s, c, target: proposal)
    assert plan.source is PlanSource.OPTIMIZER and plan.changes == (change,) and plan.max_sessions == 15
    fallback = plan_next_session("m", _Twin(), STATE, PlanConstraints(max_interval_width=0.2), _fc(0.5), propose=lambda t, s, c, target: proposal)
    assert fallback.changes == () and fallback.max_sessions is None  # the lab default makes no change
