"""Curriculum search: finds the better curriculum, resumes from its database, CMA-ES runs."""

from __future__ import annotations

import torch

from twin.protocol import Curriculum, StimulusSchedule
from optimizer.objective import TwinPool
from optimizer.search import SamplerKind, SearchConfig, search_curricula
from optimizer.space import Constraints, CurriculumSpace
from twin.models.learner import LearnerModel, ModelSpec

BASE = Curriculum(name="lab-default", stimulus=StimulusSchedule(phases=((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),)), session_trials=(500, 520))


def pool() -> TwinPool:
    twins = {}
    for i in range(4):
        m = LearnerModel(ModelSpec("static"))
        with torch.no_grad():
            m.w0.copy_(torch.tensor([12.0, 0.05 * i]))
        twins[f"s{i}"] = [m.eval()]
    return TwinPool.from_models(twins)


def test_search_prefers_shorter_sessions_for_experts_and_resumes(tmp_path):
    # experts are trained after 3 sessions whatever the curriculum: only session length matters
    space = CurriculumSpace(Constraints(session_trials=(210, 520)), base=BASE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = SearchConfig(n_trials=6, batch_size=3, n_rollouts=1, max_sessions=4, rescore_top=2, rescore_rollouts=1, storage=url, study_name="t")
    res = search_curricula(pool(), space, cfg, progress=False)
    assert res.default.curriculum.session_trials == (500, 520)
    assert res.best.mean_trials.mean < res.default.mean_trials.mean
    assert res.best.curriculum.session_trials[0] < 500
    assert 0 < res.predicted_speedup.mean < 1
    assert len(res.trials) == 6 and res.trials["value"].notna().all()
    more = search_curricula(pool(), space, SearchConfig(**{**cfg.__dict__, "n_trials": 9}), progress=False)
    assert len(more.trials) == 9  # resumed: three more, not nine new
    out = res.save(tmp_path / "out")
    assert Curriculum.load(out / "proposed.yaml") == res.best.curriculum
    assert (out / "trials.csv").is_file() and (out / "search.json").is_file()


def test_cmaes_sampler_runs():
    space = CurriculumSpace(Constraints(session_trials=(210, 520)), base=BASE)
    cfg = SearchConfig(n_trials=4, batch_size=2, n_rollouts=1, max_sessions=4, rescore_top=1, rescore_rollouts=1, sampler=SamplerKind.CMAES)
    res = search_curricula(pool(), space, cfg, progress=False)
    assert len(res.rescored) == 2 and len(res.trials) == 4
