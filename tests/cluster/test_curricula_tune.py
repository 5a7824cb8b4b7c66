"""Batch curriculum search on local Ray Tune: several candidates per trial, re-scored by the driver."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")
import cluster.ray_env  # noqa: E402,F401  (Ray environment before ray loads)
import torch  # noqa: E402

from cluster.curricula import search_curricula_tune  # noqa: E402
from twin.protocol import Curriculum, StimulusSchedule  # noqa: E402
from optimizer.objective import RiskStatistic, TwinPool  # noqa: E402
from optimizer.search import SearchConfig  # noqa: E402
from optimizer.space import Constraints, CurriculumSpace  # noqa: E402
from twin.models.learner import LearnerModel, ModelSpec  # noqa: E402
from twin.models.params import TwinModel  # noqa: E402


def test_tune_search_evaluates_several_candidates_per_trial(tmp_path):
    twins = {}
    for i in range(3):
        m = LearnerModel(ModelSpec("static"))
        with torch.no_grad():
            m.w0.copy_(torch.tensor([12.0, 0.05 * i]))
        twins[f"s{i}"] = [TwinModel.of(m.eval())]
    base = Curriculum(name="lab", stimulus=StimulusSchedule.single((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), session_trials=(500, 520))
    space = CurriculumSpace(Constraints(session_trials=(210, 520)), base=base)
    cfg = SearchConfig(n_trials=6, n_rollouts=1, max_sessions=4, rescore_top=2, rescore_rollouts=1)
    res = search_curricula_tune(TwinPool.from_twins(twins), space, cfg, tmp_path / "tune", candidates_per_trial=3, max_concurrent=2)
    assert len(res.trials) == 6 and set(res.trials["slot"]) == {0, 1, 2}
    # ranked by the local search's objective (the lower decile of the speed-ups against the base), best first
    assert res.objective is not None and res.objective.statistic is RiskStatistic.LOWER_QUANTILE
    assert res.trials["speedup_lower_quantile"].is_monotonic_decreasing and set(res.trials["max_sessions"]) == {4}
    assert res.default.curriculum.session_trials == (500, 520)
    assert res.best.mean_trials.mean <= res.default.mean_trials.mean
    assert len(res.rescored) == 3
