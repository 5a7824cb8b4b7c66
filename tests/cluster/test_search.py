"""Hyperparameter search: plain Optuna (resumable study in SQLite) and Ray Tune + OptunaSearch + ASHA."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("optuna")
pytest.importorskip("ray")
import cluster.ray_env  # noqa: E402,F401  (Ray environment before ray loads)
import ray  # noqa: E402

from cluster.search import search_optuna, search_tune  # noqa: E402
from twin.sim.agents import DEFAULT_TRUTHS, Family  # noqa: E402
from optimizer.hparams import HYPERPARAMETER_SPACE, HyperParams  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402
from twin.protocol import IBL_DEFAULT  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 3, 900, seed=0).trials


def _in_space(hp: HyperParams) -> bool:
    return all(p.contains(getattr(hp, p.name)) for p in HYPERPARAMETER_SPACE)


def test_optuna_search_is_resumable(tiny, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    r1 = search_optuna(tiny, "dnn", n_trials=3, epochs=2, storage=url)
    r2 = search_optuna(tiny, "dnn", n_trials=2, epochs=2, storage=url)
    assert len(r2.trials) == 5  # the second call continued the stored study
    assert _in_space(r2.best.params) and math.isfinite(r2.best.val_ll) and r2.best.val_ll >= r1.best.val_ll
    assert math.isfinite(r2.default.val_ll)
    assert r2.save(tmp_path / "search.json").exists()


def test_tune_optuna_asha_search_runs_8_trials(tiny, tmp_path):
    try:
        res = search_tune(tiny, "dnn", n_trials=8, epochs=3, storage_path=tmp_path / "tune")
    finally:
        ray.shutdown()
    assert len(res.trials) == 8
    assert _in_space(res.best.params) and math.isfinite(res.best.val_ll)
    assert res.best.val_ll == pytest.approx(res.trials["val_ll"].max())
