"""Curriculum search: finds the better curriculum, resumes from its database, CMA-ES runs."""

from __future__ import annotations

import torch

from twin.protocol import Curriculum, StimulusSchedule
from optimizer.objective import TwinPool
from optimizer.search import SamplerKind, SearchConfig, search_curricula
from optimizer.space import Constraints, CurriculumSpace
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel

BASE = Curriculum(name="lab-default", stimulus=StimulusSchedule.single((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), session_trials=(500, 520))


def _expert_models() -> list[LearnerModel]:
    out = []
    for i in range(4):
        m = LearnerModel(ModelSpec("static"))
        with torch.no_grad():
            m.w0.copy_(torch.tensor([12.0, 0.05 * i]))
        out.append(m.eval())
    return out


def pool() -> TwinPool:
    return TwinPool.from_twins({f"s{i}": [TwinModel.of(m)] for i, m in enumerate(_expert_models())})


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


def _store(tmp_path):
    """A twin store holding the pool's four static twins (serving), without sessions."""
    from twin.persist.store import TwinStore

    store = TwinStore(tmp_path / "twins")
    for i, member in enumerate(_expert_models()):
        store.put(f"s{i}", TwinModel.of(member), trained_through_session=3, data_hash="x", alias="serving")
    return store


def test_search_store_loads_the_twins_searches_and_keeps_the_result(tmp_path):
    from optimizer.search import load_pool, search_store
    from twin.persist.store import ResultKind

    store = _store(tmp_path)
    assert load_pool(store).subjects == ("s0", "s1", "s2", "s3") and load_pool(store).fit_range is None  # no stored sessions: no range checks
    space = CurriculumSpace(Constraints(session_trials=(210, 520)), base=BASE)
    cfg = SearchConfig(n_trials=2, batch_size=2, n_rollouts=1, max_sessions=3, rescore_top=1, rescore_rollouts=1)
    seen = []
    res, stored = search_store(store, space, cfg, subjects=["s0", "s2"], result_name="t", on_pool=seen.append)
    assert seen[0].subjects == ("s0", "s2") and res.kind is ResultKind.CURRICULUM_SEARCH
    assert stored is not None and store.get_result(ResultKind.CURRICULUM_SEARCH, "t").payload == stored.payload
    assert set(stored.payload) == {"best", "default", "predicted_speedup", "criterion", "criterion_description", "max_sessions", "objective", "robust", "attribution"}
    assert stored.payload["criterion"] == "trained_1a" and stored.payload["max_sessions"] == 3 and stored.payload["best"]["max_sessions"] == 3
    again, none = search_store(store, space, cfg, subjects=["s0", "s2"])
    assert none is None and again.best.mean_trials == res.best.mean_trials  # same seeds, same search; nothing stored


def test_load_pool_of_an_empty_store_names_the_store(tmp_path):
    import pytest

    from twin.protocol import CurriculumError
    from optimizer.search import load_pool
    from twin.persist.store import TwinStore

    with pytest.raises(CurriculumError, match="no twins"):
        load_pool(TwinStore(tmp_path / "empty"))
