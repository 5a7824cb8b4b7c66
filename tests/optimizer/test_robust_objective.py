"""The robust objective: speed-ups over every model of the ensemble, per rule family, a
risk-aware choice, intervals that carry model disagreement, and the sessions cap in every output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optimizer.objective import (
    CurriculumScore,
    ModelGrid,
    RiskStatistic,
    RobustConfig,
    TwinPool,
    bootstrap_mean,
    lower_quantile_speedup,
    paired_reduction,
    paired_speedup,
    robust_speedup,
)
from optimizer.search import SearchConfig, objective_value, rescore
from optimizer.space import Constraints, CurriculumSpace
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel
from twin.protocol import Curriculum, StimulusSchedule

BASE = Curriculum(name="lab", stimulus=StimulusSchedule.single((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), session_trials=(500, 520))


def two_family_grid(n: int = 10) -> ModelGrid:
    return ModelGrid.of(np.repeat(np.arange(n), 2), np.tile([0.5, 0.5], n), ("dnn", "gru") * n, n)


def test_per_family_speedups_on_a_hand_made_grid():
    # 4 animals; animals 0-2 have a dnn and a gru model, animal 3 only a gru model
    g = ModelGrid.of(np.array([0, 0, 1, 1, 2, 2, 3]), np.array([0.75, 0.25, 0.5, 0.5, 0.5, 0.5, 1.0]), ("dnn", "gru", "dnn", "gru", "dnn", "gru", "gru"), 4)
    ref = np.full(7, 1000.0)
    fam = {"dnn": 0.6, "gru": 1.1}  # dnn: 40% faster, gru: 10% slower
    other = np.array([1000.0 * fam[f] for f in g.family])
    r = robust_speedup(g, ref, other, max_sessions=40, config=RobustConfig(n_boot=300))
    by = {f.family: f for f in r.by_family}
    assert by["dnn"].speedup.mean == pytest.approx(0.4) and by["dnn"].n_units == 3
    assert by["gru"].speedup.mean == pytest.approx(-0.1) and by["gru"].n_units == 4
    # the pooled speed-up weighs each animal's models: (0.75*0.4 - 0.25*0.1 + 2*0.15 - 0.1) / 4
    assert r.speedup.mean == pytest.approx((0.275 + 0.15 + 0.15 - 0.1) / 4)
    assert r.lower_quantile == pytest.approx(-0.1) and r.max_sessions == 40
    assert r.to_dict()["max_sessions"] == 40 and len(r.to_dict()["by_family"]) == 2


def test_a_candidate_only_one_model_likes_wins_on_the_mean_but_not_on_the_lower_decile():
    g = two_family_grid()
    ref = np.full(20, 1000.0)
    one_model = np.array([600.0 if f == "dnn" else 1050.0 for f in g.family])  # dnn: 40% faster, gru: 5% slower
    both = np.full(20, 920.0)  # everyone: 8% faster
    mean, robust = RobustConfig(RiskStatistic.MEAN), RobustConfig(RiskStatistic.LOWER_QUANTILE, quantile=0.1)
    assert objective_value(g, ref, one_model, mean) > objective_value(g, ref, both, mean)
    assert objective_value(g, ref, one_model, robust) < 0 < objective_value(g, ref, both, robust)
    assert lower_quantile_speedup(g, ref, both, 0.1) == pytest.approx(0.08)


def test_model_disagreement_widens_the_interval():
    rng = np.random.default_rng(0)
    g = two_family_grid(30)
    ref = rng.uniform(900, 1100, 60)
    agree = ref * 0.8
    disagree = ref * np.array([0.5 if f == "dnn" else 1.1 for f in g.family])  # same mean speed-up, 20%
    a = paired_speedup(g, ref, agree, 0.9, 1000, 1)
    d = paired_speedup(g, ref, disagree, 0.9, 1000, 1)
    assert a.mean == pytest.approx(0.2) and d.mean == pytest.approx(0.2, abs=0.01)
    assert a.hi - a.lo < 1e-9 and d.hi - d.lo > 0.05


def test_one_model_per_animal_is_the_plain_paired_bootstrap():
    rng = np.random.default_rng(2)
    ref, other = rng.uniform(800, 1200, 40), rng.uniform(600, 1100, 40)
    g = ModelGrid.units(40)
    two = paired_speedup(g, ref, other, 0.95, 4000, 3)
    one = paired_reduction(ref, other, 0.95, 4000, 3)
    assert two.mean == pytest.approx(one.mean) and two.lo == pytest.approx(one.lo, abs=0.02) and two.hi == pytest.approx(one.hi, abs=0.02)
    assert [f.family for f in robust_speedup(g, ref, other, 10).by_family] == [""]


def _two_family_pool(n: int = 6) -> TwinPool:
    """``n`` animals with a static and a REINFORCE model each (experts; only the grid matters)."""

    def expert(rule: str) -> TwinModel:
        m = LearnerModel(ModelSpec(rule))
        with torch.no_grad():
            m.w0.copy_(torch.tensor([12.0, 0.0]))
        return TwinModel.of(m.eval())

    return TwinPool.from_twins({f"s{i}": [expert("static"), expert("reinforce")] for i in range(n)})


def _fake_scores(grid: ModelGrid, effects):
    """A ``score_curricula`` whose trials follow ``effects(curriculum, family)`` (a factor), with
    2% noise per row."""

    def score(pool, cands, n_rollouts, max_sessions, seed=0, criterion=None, **_):
        rng = np.random.default_rng(seed)
        out = []
        for c in cands:
            t = np.array([2000.0 * effects(c, f) for f in grid.family]) * np.exp(0.02 * rng.standard_normal(len(grid.family)))
            per_twin = grid.per_unit(t)
            out.append(CurriculumScore(c, bootstrap_mean(per_twin, 0.95, 200, seed), float(np.median(t)), 4.0, 1.0, per_twin, (), t, max_sessions))
        return out

    return score


def _effects(c: Curriculum, family: str) -> float:
    f = 1.0
    if c.session_trials[0] < 300:  # what only the static models believe in
        f *= 0.55 if family == "static" else 1.08
    if not c.feedback.debias:  # debias off: 10% slower on the REINFORCE family
        f *= 1.10 if family == "reinforce" else 1.0
    if 300 <= c.session_trials[0] < 480:  # both families: 12% faster
        f *= 0.88
    return f


@pytest.mark.parametrize("statistic", [RiskStatistic.MEAN, RiskStatistic.LOWER_QUANTILE])
def test_the_search_chooses_by_the_statistic_and_proposes_the_minimal_set(monkeypatch, statistic):
    pool = _two_family_pool()
    monkeypatch.setattr("optimizer.search.score_curricula", _fake_scores(pool.grid(), _effects))
    space = CurriculumSpace(Constraints(session_trials=(210, 520)), base=BASE)
    cfg = SearchConfig(rescore_rollouts=2, max_sessions=7, robust=RobustConfig(statistic, n_boot=300))
    top = [("only-static", {"session_trials_low": 220, "debias": True}), ("everyone", {"session_trials_low": 400, "debias": False})]
    res = rescore(pool, space, top, cfg, table=None)  # type: ignore[arg-type]
    assert res.attribution is not None and res.robust is not None and res.objective is cfg.robust
    if statistic is RiskStatistic.MEAN:  # mean speed-up: 1 - (0.55 + 1.08) / 2 = 18.5% beats 12%
        assert res.best.curriculum.session_trials[0] == 220
    else:  # the lower decile: -8% for the static-only bundle, so the one every model likes
        assert res.best.curriculum.session_trials[0] == 400
        # that bundle switched debiasing off, which alone slows REINFORCE animals: dropped
        by = {c.axis: c for c in res.attribution.changes}
        assert not by["debias"].kept and by["session_trials_low"].kept
        assert res.best.curriculum.feedback.debias and res.best.curriculum.name == "everyone-minimal"
        assert res.robust.lower_quantile > 0
        fam = {f.family: f.speedup.mean for f in res.robust.by_family}
        assert fam["static"] == pytest.approx(0.12, abs=0.02) and fam["reinforce"] == pytest.approx(0.12, abs=0.02)
    # the sessions cap is stated in every output
    assert res.max_sessions == 7 and res.best.max_sessions == res.default.max_sessions == 7
    s = res.summary()
    assert s["max_sessions"] == 7 and s["robust"]["max_sessions"] == 7 and s["objective"]["statistic"] == statistic.value
    lines = res.lines()
    assert all("sessions cap 7" in line for line in lines[:2]) and any("reinforce" in line and "sessions cap 7" in line for line in lines)
    assert any("repeat-on-error debiasing switched off" in line for line in lines) or statistic is RiskStatistic.MEAN


def test_a_proposal_only_one_family_believes_in_is_declined(monkeypatch):
    pool = _two_family_pool()
    monkeypatch.setattr("optimizer.search.score_curricula", _fake_scores(pool.grid(), _effects))
    space = CurriculumSpace(Constraints(session_trials=(210, 520)), base=BASE)
    cfg = SearchConfig(rescore_rollouts=2, max_sessions=7, robust=RobustConfig(RiskStatistic.LOWER_QUANTILE, n_boot=300))
    res = rescore(pool, space, [("only-static", {"session_trials_low": 220})], cfg, table=None)  # type: ignore[arg-type]
    assert res.best.curriculum.session_trials == BASE.session_trials and res.predicted_speedup.mean == 0.0
    # its one change helps on average (the attribution keeps it), but the lower decile declines it
    assert [c.axis for c in res.attribution.kept] == ["session_trials_low"] and "lower_quantile speed-up" in res.note
    fam = {f.family: f.speedup.mean for f in res.robust.by_family}  # the declined proposal's
    assert fam["static"] > 0.4 and fam["reinforce"] < 0  # one family believes in it, the other does not
    assert res.summary()["note"] == res.note and res.note in "\n".join(res.lines())
