"""Scoring curricula through twins: grouping, trial accounting, paired speed-ups, range warnings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from trial_tables import random_trials_table
from twin.protocol import IBL_DEFAULT, Curriculum, StimulusSchedule
from optimizer.objective import FitRange, TwinPool, bootstrap_mean, score_curricula, speedup
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel

FULL = StimulusSchedule.single((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0))


def expert_model(bias: float = 0.0, rule: str = "static") -> LearnerModel:
    m = LearnerModel(ModelSpec(rule))
    with torch.no_grad():
        m.w0.copy_(torch.tensor([12.0, bias]))
    return m.eval()


def expert(bias: float = 0.0, rule: str = "static") -> TwinModel:
    return TwinModel.of(expert_model(bias, rule))


def test_twins_over_one_population_rule_are_one_batch():
    population = expert_model(rule="reinforce")
    ref = expert(rule="reinforce").params.rule
    a, b = (TwinModel(population, replace(TwinModel.of(population, ref).params, w0=torch.tensor([12.0, bias]))) for bias in (0.1, -0.1))
    pool = TwinPool.from_twins({"x": [a], "y": [b], "z": [expert()]})
    assert len(pool.members) == 2 and pool.n_models == 3
    assert sorted(len(m.index) for m in pool.members) == [1, 2]
    shared = next(m for m in pool.members if len(m.index) == 2)
    assert shared.index.tolist() == [0, 1] and torch.equal(shared.w0[:, 1], torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="no twin"):
        TwinPool.from_twins({"x": []})


def test_shorter_sessions_take_fewer_trials_and_the_speedup_is_paired():
    pool = TwinPool.from_twins({f"s{i}": [expert(0.05 * i)] for i in range(6)})
    long = Curriculum(name="long", stimulus=FULL, session_trials=(500, 500))
    short = Curriculum(name="short", stimulus=FULL, session_trials=(250, 250))
    s_long, s_short = score_curricula(pool, [long, short], n_rollouts=2, max_sessions=5)
    assert s_long.mean_trials.mean == pytest.approx(1500.0) and s_short.mean_trials.mean == pytest.approx(750.0)
    assert s_long.reached == 1.0 and s_long.mean_sessions == pytest.approx(3.0)
    assert s_long.per_twin.shape == (6,)
    sp = speedup(s_long, s_short)
    assert sp.mean == pytest.approx(0.5) and sp.lo == pytest.approx(0.5) and sp.hi == pytest.approx(0.5)


def test_a_curriculum_outside_the_fitted_range_is_flagged():
    df = random_trials_table({"a": [300, 300]}, contrasts=(1.0, 0.5, 0.25))
    twin = expert()
    fr = FitRange.from_trials({"a": twin.model}, df)
    assert fr.contrasts == (1.0, 0.5, 0.25) and fr.session_trials == (300, 300)
    pool = TwinPool.from_twins({"a": [twin]}, fr)
    inside = Curriculum(name="in", stimulus=StimulusSchedule.single((1.0, 0.5, 0.25)), session_trials=(300, 300))
    (s_in, s_out) = score_curricula(pool, [inside, IBL_DEFAULT], n_rollouts=1, max_sessions=3)
    assert s_in.warnings == ()
    assert any("never shown" in w for w in s_out.warnings) and any("session lengths" in w for w in s_out.warnings)


def test_bootstrap_mean_interval():
    iv = bootstrap_mean(np.arange(100.0), 0.95, 2000, 0)
    assert iv.mean == 49.5 and 43 < iv.lo < 49.5 < iv.hi < 56


def test_an_ensemble_twin_is_scored_by_its_weights():
    """An animal whose ensemble is 70% an expert (trained in 3 sessions) and 30% a twin that never
    learns (the 5-session cap) expects 0.7 * 1500 + 0.3 * 2500 trials; a 0.5% component is left out."""
    from twin.models.ensemble import TwinEnsemble

    never = TwinModel.of(LearnerModel(ModelSpec("static")).eval())  # w = 0: chance forever
    lapsing = expert(rule="reinforce")
    ens = TwinEnsemble.of([expert(), never, lapsing], [0.7, 0.295, 0.005], ["expert", "never", "tiny"])
    pool = TwinPool.from_ensembles({"a": ens, "b": TwinEnsemble.of([expert()], [1.0], ["expert"])})
    assert pool.n_models == 3  # the tiny component is not simulated
    cur = Curriculum(name="long", stimulus=FULL, session_trials=(500, 500))
    (score,) = score_curricula(pool, [cur], n_rollouts=4, max_sessions=5)
    w_expert = 0.7 / 0.995
    assert score.per_twin[0] == pytest.approx(w_expert * 1500 + (1 - w_expert) * 2500)
    assert score.per_twin[1] == pytest.approx(1500.0)
    assert score.reached == pytest.approx((w_expert + 1.0) / 2)
    assert score.median_trials == pytest.approx(1500.0)
    with pytest.raises(ValueError, match="weights"):
        TwinPool.from_twins({"a": [expert(), never]}, weights={"a": [1.0]})
