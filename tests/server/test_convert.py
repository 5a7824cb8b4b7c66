"""Protocol conversion to and from ``twin.v1.TaskProtocol``: per-phase rules, proportions and
debiasing round-trip; unset parts and the protocol-wide (older) ``advancement`` rule are read."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("grpc")

from server.convert import protocol_from_pb, protocol_pb  # noqa: E402
from service.errors import InvalidArgumentError  # noqa: E402
from twin.protocol import IBL_DEFAULT, AdvanceKind, AdvanceRule, Curriculum, DebiasSide, FeedbackPolicy, StimulusSchedule, ZeroContrastSide  # noqa: E402
from twin_proto.pb import protocol_pb2  # noqa: E402


def _same(a: Curriculum, b: Curriculum) -> bool:
    return (a.stimulus, a.feedback, a.session_trials) == (b.stimulus, b.feedback, b.session_trials)


def test_round_trips_keep_every_rule():
    custom = Curriculum(
        stimulus=StimulusSchedule(
            phases=((1.0,), (1.0, 0.25), (0.25, 0.0)),
            proportions=((1.0,), (2.0, 1.0), (1.0, 0.5)),
            advance=(AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0,), window=20, threshold=0.7), AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=150)),
            zero_contrast_side=ZeroContrastSide.RANDOM,
        ),
        feedback=FeedbackPolicy(debias_phases=(1,), debias_side=DebiasSide.REPEAT),  # reward and timeout travel in RigSettings
        session_trials=(300, 500),
    )
    for cur in (IBL_DEFAULT, custom, dataclasses.replace(custom, feedback=FeedbackPolicy(debias_phases=None))):
        assert _same(protocol_from_pb(protocol_pb(cur)), cur)
    assert _same(protocol_from_pb(protocol_pb2.TaskProtocol()), IBL_DEFAULT)  # unset: the IBL default


def test_the_protocol_wide_rule_of_older_clients():
    p = protocol_pb2.TaskProtocol(
        phases=[protocol_pb2.ContrastPhase(contrasts=[1.0, 0.5]), protocol_pb2.ContrastPhase(contrasts=[0.25]), protocol_pb2.ContrastPhase(contrasts=[0.125])],
        advancement=protocol_pb2.AdvancementRule(window=30, threshold=0.75, easy_contrasts=[1.0, 0.5]),
    )
    s = protocol_from_pb(p).stimulus
    assert s.advance == (AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=30, threshold=0.75), AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=30))
    assert s.proportions is None
    p.ClearField("advancement")
    with pytest.raises(InvalidArgumentError, match=r"protocol.phases\[1\].advance"):
        protocol_from_pb(p)
    p.phases[1].advance.after_trials = 10
    s = protocol_from_pb(p).stimulus
    assert s.advance == (IBL_DEFAULT.stimulus.advance[0], AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=10))  # an IBL phase without a rule: IBL's
    p.phases[0].contrasts.append(0.25)
    with pytest.raises(InvalidArgumentError, match=r"protocol.phases\[0\].advance"):
        protocol_from_pb(p)


def test_bad_rules_are_named():
    p = protocol_pb(IBL_DEFAULT)
    p.phases[1].advance.performance.threshold = 1.0
    with pytest.raises(InvalidArgumentError, match=r"stimulus.advance\[1\].threshold"):
        protocol_from_pb(p)
    p = protocol_pb(IBL_DEFAULT)
    p.debias.phases.append(9)
    with pytest.raises(InvalidArgumentError, match=r"feedback.debias_phases\[5\]"):
        protocol_from_pb(p)


def test_a_plan_converts_with_its_changes_and_sessions_cap():
    from optimizer.attribution import ChangeEffect
    from optimizer.planning import PlanSource, SessionPlan
    from server.convert import plan_pb
    from twin.sim.forecast import Interval

    kept = ChangeEffect("session_trials_low", 550, 420, "shortest session (trials) 550 → 420", Interval(0.12, 0.05, 0.2), Interval(0.1, 0.04, 0.16), True, "helps")
    dropped = ChangeEffect("easy_weight", 1.0, 1.7, "frequency of easy contrasts (x base) 1 → 1.7", Interval(-0.02, -0.05, 0.01), Interval(0.0, -0.03, 0.03), False, "no robust benefit")
    plan = SessionPlan("m", IBL_DEFAULT, 0, 550, PlanSource.OPTIMIZER, None, "why", None, None, changes=(kept, dropped), max_sessions=15)
    msg = plan_pb(plan)
    assert msg.max_sessions == 15 and [c.axis for c in msg.changes] == ["session_trials_low", "easy_weight"]
    c0, c1 = msg.changes
    assert (c0.base_value, c0.proposed_value, c0.kept) == ("550", "420", True) and c0.drop_one.lo == pytest.approx(0.05)
    assert (c1.base_value, c1.proposed_value, c1.kept) == ("1", "1.7", False) and c1.add_one.hi == pytest.approx(0.03)
    assert c1.reason == "no robust benefit" and "easy contrasts" in c1.description


def test_a_plan_converts_with_its_family_speedups():
    from optimizer.objective import FamilySpeedup
    from optimizer.planning import PlanSource, SessionPlan
    from server.convert import plan_pb
    from twin.sim.forecast import Interval

    fams = (FamilySpeedup("dnn", Interval(0.2, 0.1, 0.3), 12, 0.9), FamilySpeedup("reinforce", Interval(-0.05, -0.2, 0.1), 4, 0.9))
    msg = plan_pb(SessionPlan("m", IBL_DEFAULT, 0, 550, PlanSource.OPTIMIZER, None, "why", None, None, max_sessions=15, family_speedups=fams))
    assert [(f.family, f.n_units, f.interval_level) for f in msg.family_speedups] == [("dnn", 12, pytest.approx(0.9)), ("reinforce", 4, pytest.approx(0.9))]
    assert (msg.family_speedups[1].speedup.mean, msg.family_speedups[1].speedup.lo, msg.family_speedups[1].speedup.hi) == pytest.approx((-0.05, -0.2, 0.1))
    assert not plan_pb(SessionPlan("m", IBL_DEFAULT, 0, 550, PlanSource.DEFAULT_PROTOCOL, None, "why", None, None)).family_speedups


def test_a_search_result_converts_with_its_changes_criterion_cap_and_family_speedups():
    from optimizer.attribution import ChangeEffect
    from optimizer.objective import FamilySpeedup
    from optimizer.planning import CurriculumCandidate, CurriculumSearchOutcome
    from server.convert import operation_result_pb
    from twin.sim.forecast import Interval

    cand = CurriculumCandidate(IBL_DEFAULT, Interval(9000.0, 8000.0, 10000.0), 0.9)
    change = ChangeEffect("debias", True, False, "repeat-on-error debiasing on → off", Interval(-0.1, -0.15, -0.05), Interval(-0.08, -0.12, -0.04), False, "harmful")
    out = CurriculumSearchOutcome((cand,), cand, changes=(change,), criterion="trained_1a", max_sessions=40, family_speedups=(FamilySpeedup("dnn", Interval(0.1, 0.0, 0.2), 20, 0.9),))
    res = operation_result_pb(out)
    assert res.criterion == "trained_1a" and res.max_sessions == 40
    assert [(c.axis, c.base_value, c.proposed_value, c.kept, c.reason) for c in res.changes] == [("debias", "True", "False", False, "harmful")]
    assert res.changes[0].drop_one.hi == pytest.approx(-0.05)
    assert [(f.family, f.n_units) for f in res.family_speedups] == [("dnn", 20)] and res.family_speedups[0].speedup.hi == pytest.approx(0.2)
    bare = operation_result_pb(CurriculumSearchOutcome((cand,)))
    assert not bare.changes and bare.criterion == "" and bare.max_sessions == 0 and not bare.family_speedups
