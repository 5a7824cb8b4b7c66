"""Next-session proposals: they start where the animal is, stay in the space, keep the base
curriculum unless a candidate is clearly better, and come with a forecast."""

from __future__ import annotations

from dataclasses import replace

import torch

from twin.protocol import AdvanceRule, Curriculum, StimulusSchedule
from optimizer.propose import ProposalConfig, propose_next_session, sample_candidates
from optimizer.space import Constraints, CurriculumSpace
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.state import TwinState

FULL = StimulusSchedule(phases=((1.0, 0.5), (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), proportions=None, advance=(AdvanceRule(contrasts=(1.0, 0.5), window=50, threshold=0.8),))


def expert() -> tuple[LearnerModel, TwinState]:
    m = LearnerModel(ModelSpec("static"))
    with torch.no_grad():
        m.w0.copy_(torch.tensor([12.0, 0.0]))
    return m.eval(), TwinState(w=torch.tensor([12.0, 0.0]), h=torch.zeros(0), through_session=4, phase=1)


def test_candidates_are_seeded_and_inside_the_space():
    space = CurriculumSpace(Constraints(session_trials=(250, 700)))
    a, b = sample_candidates(space, 5, 0), sample_candidates(space, 5, 0)
    assert a == b and len({c.description for c in a}) == 5
    for c in a:
        space.constraints.check(c)


def test_an_expert_is_told_to_run_shorter_sessions_when_the_lab_allows():
    model, state = expert()
    base = Curriculum(name="lab", stimulus=FULL, session_trials=(600, 650))
    space = CurriculumSpace(Constraints(session_trials=(210, 650)), base=base)
    p = propose_next_session(model, state, space, ProposalConfig(n_candidates=6, n_rollouts=4, horizon_sessions=4, forecast_rollouts=16))
    assert p.changed and p.curriculum.session_trials[0] < 600
    assert p.gain.lo > 0 and p.expected_remaining.mean < p.base_expected_remaining.mean
    assert p.start_phase == 1 and p.forecast.accuracy.mean > 0.9
    assert "fewer expected trials" in p.explanation and len(p.candidates) == 7
    # the proposal is the minimal set of the best candidate's changes: only the session length helps an expert
    assert p.attribution is not None and [c.axis for c in p.attribution.kept] == ["session_trials_low"]
    assert p.max_sessions == 4 and "horizon of 4 sessions" in p.explanation


def test_the_base_is_kept_when_nothing_can_help():
    model, state = expert()
    base = Curriculum(name="lab", stimulus=FULL, session_trials=(300, 300))
    space = CurriculumSpace(Constraints(session_trials=(300, 300)), base=base)  # only session length matters to an expert
    p = propose_next_session(model, state, space, ProposalConfig(n_candidates=4, n_rollouts=4, horizon_sessions=4, forecast_rollouts=16))
    assert not p.changed and p.curriculum.name == "lab" and p.gain.mean == 0.0
    assert p.n_trials == 300 and "kept lab" in p.explanation and "horizon of 4 sessions" in p.explanation


def test_an_ensemble_twin_proposes_through_every_component():
    """Half expert, half a twin that never learns: the proposal's expectations and forecast mix both."""
    from twin.models.ensemble import TwinEnsemble
    from twin.models.params import TwinModel

    model, state = expert()
    never = LearnerModel(ModelSpec("static")).eval()
    naive = TwinState(w=torch.zeros(2), h=torch.zeros(0), through_session=4, phase=1)
    ens = TwinEnsemble.of([TwinModel.of(model), TwinModel.of(never)], [0.5, 0.5], ["expert", "never"], [state, naive])
    base = Curriculum(name="lab", stimulus=FULL, session_trials=(600, 650))
    space = CurriculumSpace(Constraints(session_trials=(600, 650)), base=base)
    cfg = ProposalConfig(n_candidates=2, n_rollouts=16, horizon_sessions=6, forecast_rollouts=64)
    alone = propose_next_session(model, state, space, cfg)
    mixed = propose_next_session(model, state, space, cfg, ensemble=ens)
    assert mixed.expected_remaining.mean > alone.expected_remaining.mean + 300  # the never-learner's capped runs
    assert mixed.expected_remaining.hi >= 6 * 600  # some rollouts ran out the 6-session horizon
    assert 0.6 < mixed.forecast.accuracy.mean < 0.9 < alone.forecast.accuracy.mean
    assert mixed.forecast.accuracy.lo < 0.6  # the interval holds the never-learner's sessions


def test_family_speedups_are_per_rule_family_of_the_rollouts():
    import numpy as np
    import pytest

    from optimizer.propose import family_speedups

    fams = ("dnn", "dnn", "dnn", "reinforce", "reinforce")
    base = np.array([100.0, 200.0, 300.0, 100.0, 100.0])
    other = np.array([50.0, 100.0, 150.0, 100.0, 110.0])
    out = {f.family: f for f in family_speedups(fams, base, other, 7, 0.8, seed=0)}
    assert set(out) == {"dnn", "reinforce"}
    assert out["dnn"].speedup.mean == pytest.approx(0.5) and out["dnn"].n_units == 3
    assert out["reinforce"].speedup.mean == pytest.approx(1 - 210 / 200) and out["reinforce"].n_units == 2
    assert all(f.level == 0.8 and f.speedup.lo <= f.speedup.mean <= f.speedup.hi for f in out.values())


def test_an_ensemble_proposal_reports_the_speedup_of_each_rule_family():
    """Two experts of different rules: both gain from shorter sessions, each family's figure is
    over the rollouts drawn from its component."""
    from twin.models.ensemble import TwinEnsemble
    from twin.models.params import TwinModel
    from optimizer.propose import rollout_families

    model, state = expert()
    other = LearnerModel(ModelSpec("reinforce"))
    with torch.no_grad():
        other.w0.copy_(torch.tensor([12.0, 0.0]))
    other.eval()
    st2 = TwinState(w=torch.tensor([12.0, 0.0]), h=torch.zeros(0), through_session=4, phase=1)
    ens = TwinEnsemble.of([TwinModel.of(model), TwinModel.of(other)], [0.5, 0.5], ["static", "reinforce"], [state, st2])
    base = Curriculum(name="lab", stimulus=FULL, session_trials=(600, 650))
    space = CurriculumSpace(Constraints(session_trials=(210, 650)), base=base)
    cfg = ProposalConfig(n_candidates=6, n_rollouts=16, horizon_sessions=4, forecast_rollouts=16)
    p = propose_next_session(model, state, space, cfg, ensemble=ens)
    assert p.changed
    fams = {f.family: f for f in p.family_speedups}
    assert set(fams) == {"static", "reinforce"} and sum(f.n_units for f in fams.values()) == cfg.n_rollouts
    assert all(f.speedup.mean > 0 and f.level == cfg.level for f in fams.values())
    drawn = rollout_families(model, ens, 1000, seed=3)
    assert set(drawn) == {"static", "reinforce"} and rollout_families(model, None, 3, seed=3) == ("static",) * 3
    # the base kept: no speed-up to attribute to a family
    lab = Curriculum(name="lab", stimulus=FULL, session_trials=(300, 300))
    kept = propose_next_session(model, state, CurriculumSpace(Constraints(session_trials=(300, 300)), base=lab), replace(cfg, n_candidates=4, n_rollouts=4), ensemble=ens)
    assert not kept.changed and kept.family_speedups == ()
