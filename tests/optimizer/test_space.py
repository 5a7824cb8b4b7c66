"""The curriculum search space: the base is reachable, constraints hold, bad axes are named."""

from __future__ import annotations

import dataclasses

import pytest

from twin.protocol import CUSTOM_TASK, IBL_DEFAULT, IBLRIG_TRAINING, AdvanceKind, CurriculumError, ZeroContrastSide
from optimizer.space import Constraints, CurriculumSpace, ParamKind


def test_base_values_rebuild_the_base():
    space = CurriculumSpace()
    built = space.build(space.base_values())
    assert (built.stimulus, built.feedback, built.session_trials) == (IBL_DEFAULT.stimulus, IBL_DEFAULT.feedback, IBL_DEFAULT.session_trials)
    names = {p.name for p in space.params}
    assert "session_trials_low" not in names  # the default bounds leave no room: a fixed axis is not searched
    assert {"advance_threshold", "advance_window", "advance_trials", "easy_weight", "zero_weight", "keep_half", "debias"} <= names


def test_axes_move_the_rules_they_name():
    space = CurriculumSpace()
    cur = space.build({"advance_threshold": 0.7, "advance_window": 30, "advance_trials": 120, "zero_weight": 2.0, "keep_half": True})
    s, ibl = cur.stimulus, IBL_DEFAULT.stimulus
    assert [(r.kind, r.contrasts) for r in s.advance] == [(r.kind, r.contrasts) for r in ibl.advance]  # what each rule looks at stays
    assert all((r.threshold, r.window) == (0.7, 30) for r in s.advance if r.kind is AdvanceKind.PERFORMANCE)
    assert all(r.trials == 120 for r in s.advance if r.kind is AdvanceKind.TRIAL_COUNT)
    assert 0.5 in s.phases[-1] and len(s.phases) == 6 and cur.feedback.debias_phases == (0, 1, 2, 3, 4)  # phase 5 keeps 0.5 but stays without debiasing
    assert s.proportions is None  # IBL's half weight for zero, doubled: every contrast equally often
    half = space.build({"zero_weight": 0.5}).stimulus
    assert [w for ph, ws in zip(half.phases, half.proportions) for c, w in zip(ph, ws) if c == 0.0] == [0.25, 0.25]


def test_the_space_is_cut_to_the_rig_profile():
    space = CurriculumSpace(Constraints(session_trials=(300, 800)), profile=IBLRIG_TRAINING)
    assert {p.name for p in space.params} == {"session_trials_low", "debias"}
    assert IBLRIG_TRAINING.runs(space.build(space.base_values()))
    for v in ({"debias": False, "session_trials_low": 350}, {"debias": True, "session_trials_low": 500}):
        assert IBLRIG_TRAINING.runs(space.build(v))
    with pytest.raises(CurriculumError) as err:
        space.build({"advance_window": 20})
    assert err.value.field == "advance_window"
    custom = dataclasses.replace(IBL_DEFAULT, stimulus=dataclasses.replace(IBL_DEFAULT.stimulus, zero_contrast_side=ZeroContrastSide.RANDOM))
    with pytest.raises(CurriculumError) as err:
        CurriculumSpace(base=custom, profile=IBLRIG_TRAINING)
    assert err.value.field == "base.stimulus.zero_contrast_side"
    assert CurriculumSpace(base=custom, profile=CUSTOM_TASK).params  # the custom task searches it


def test_every_candidate_respects_the_constraints():
    cons = Constraints(session_trials=(250, 800), allowed_contrasts=(1.0, 0.5, 0.25, 0.125, 0.0625), allow_no_debias=False)
    space = CurriculumSpace(cons)
    assert "debias" not in {p.name for p in space.params}
    lo = next(p for p in space.params if p.name == "session_trials_low")
    assert (lo.low, lo.high, lo.kind) == (250, 500, ParamKind.INT)
    cur = space.build({"session_trials_low": 250, "easy_weight": 2.0, "keep_half": True, "advance_window": 120})
    assert cur.session_trials == (250, 550)
    assert 0.0 not in cur.contrasts  # not allowed on this rig
    assert 0.5 in cur.stimulus.phases[-1]
    assert all(w == (2.0 if c >= 0.5 else 1.0) for ph, ws in zip(cur.stimulus.phases, cur.stimulus.proportions) for c, w in zip(ph, ws))
    assert cur.feedback.debias and not cur.feedback.biased_blocks
    cons.check(cur)


def test_violations_and_unknown_axes_are_named():
    space = CurriculumSpace()
    with pytest.raises(CurriculumError) as err:
        space.build({"reward": 2.0})
    assert err.value.field == "reward"
    with pytest.raises(CurriculumError, match="feedback.biased_blocks"):
        Constraints().check(IBL_DEFAULT.__class__(feedback=IBL_DEFAULT.feedback.__class__(biased_blocks=True)))
    with pytest.raises(CurriculumError, match="session_trials"):
        Constraints(session_trials=(100, 300)).check(IBL_DEFAULT)
    with pytest.raises(CurriculumError, match="constraints.advance_threshold"):
        Constraints(advance_threshold=(0.9, 0.5))


def test_the_hyperparameter_space_uses_the_same_axes():
    from optimizer.hparams import HYPERPARAMETER_SPACE, HyperParams
    from optimizer.space import Param

    axes = {p.name: p for p in HYPERPARAMETER_SPACE}
    assert list(axes) == ["hidden_size", "learning_rate", "tbptt", "history"]  # one per field, in sampling order
    assert set(axes) == set(HyperParams().to_dict())
    assert axes["hidden_size"].kind is ParamKind.LOG_INT and axes["tbptt"].values() == (100, 200, 500, 1000)
    assert axes["history"].values() == (False, True)
    assert all(p.contains(v) for p, v in zip(HYPERPARAMETER_SPACE, HyperParams().to_dict().values()))
    assert not axes["tbptt"].contains(300) and not axes["learning_rate"].contains(0.1)
    with pytest.raises(ValueError):
        Param("x", ParamKind.CHOICE)
    with pytest.raises(ValueError):
        axes["learning_rate"].values()
