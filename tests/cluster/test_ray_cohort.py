"""Cohort twin fitting on local Ray (loopback): same twins as in-process, retries, failures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
import cluster.ray_env  # noqa: E402,F401  (sets Ray's environment, loopback included, before ray loads)
import ray  # noqa: E402

from cluster.cohort import fit_cohort_ray  # noqa: E402
from cluster.ray_env import init_ray  # noqa: E402
from twin.sim.agents import DEFAULT_TRUTHS, Family  # noqa: E402
from twin.fit.cohort import CohortFitConfig, adapt_animals, fit_cohort  # noqa: E402
from twin.fit.train import FitConfig  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402
from twin.persist.store import TwinStore  # noqa: E402
from twin.protocol import IBL_DEFAULT  # noqa: E402
from twin.models.params import Adaptation  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
CFG = CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=4, patience=3), adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE)


@pytest.fixture(scope="module")
def local_ray():
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trials():
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 6, 1300, seed=1).trials


def test_ray_twins_match_in_process(local_ray, trials, tmp_path):
    a = fit_cohort(trials, TwinStore(tmp_path / "a"), CFG, progress=False, animals_per_batch=3)
    b = fit_cohort_ray(trials, TwinStore(tmp_path / "b"), CFG, animals_per_batch=3, progress=False)
    assert b.failed == {} and b.n_tasks == 2
    assert [v.subject for v in a.versions] == [v.subject for v in b.report.versions]
    for va, vb in zip(a.versions, b.report.versions):
        assert vb.metrics.val_ll == pytest.approx(va.metrics.val_ll, abs=1e-6)
    assert len(TwinStore(tmp_path / "b").subjects()) == 6


def _dies_once(population, part, device):
    marker = Path(os.environ["TWIN_TEST_MARKER_DIR"]) / f"{part['subject'].iloc[0]}.attempted"
    if not marker.exists():
        marker.touch()
        os._exit(1)  # the worker process dies mid-task
    return adapt_animals(population, part, device)


def _always_fails(population, part, device):
    if "sim-000" in set(part["subject"]):
        raise RuntimeError("simulated failure of this batch")
    return adapt_animals(population, part, device)


def test_worker_killed_mid_fit_is_retried(local_ray, trials, tmp_path, monkeypatch):
    # the env var reaches the workers through the runtime environment of the task's job
    (tmp_path / "m").mkdir()
    os.environ["TWIN_TEST_MARKER_DIR"] = str(tmp_path / "m")
    try:
        ray.shutdown()
        init_ray(num_cpus=2)
        res = fit_cohort_ray(trials, TwinStore(tmp_path / "s"), CFG, animals_per_batch=3, progress=False, task_fn=_dies_once, max_retries=2)
    finally:
        del os.environ["TWIN_TEST_MARKER_DIR"]
    assert res.failed == {}
    assert len(list((tmp_path / "m").iterdir())) == 2  # each batch's first attempt died
    assert len(TwinStore(tmp_path / "s").subjects()) == 6


def test_failing_batch_is_reported_not_silently_missing(local_ray, trials, tmp_path):
    res = fit_cohort_ray(trials, TwinStore(tmp_path / "s"), CFG, animals_per_batch=3, progress=False, task_fn=_always_fails, max_retries=1)
    assert set(res.failed) == {"sim-000", "sim-001", "sim-002"}
    assert all("simulated failure" in msg for msg in res.failed.values())
    assert TwinStore(tmp_path / "s").subjects() == ["sim-003", "sim-004", "sim-005"]
