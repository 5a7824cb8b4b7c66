"""An ensemble fit's components as Ray tasks (local Ray, loopback): the same ensemble as in
process, components in order."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")
import cluster.ray_env  # noqa: E402,F401  (sets Ray's environment, loopback included, before ray loads)
import ray  # noqa: E402

from cluster.ensemble import fit_components_ray  # noqa: E402
from cluster.ray_env import init_ray  # noqa: E402
from twin.fit.ensemble_cohort import EnsembleFitConfig, ensemble_components, fit_ensemble  # noqa: E402
from twin.fit.train import FitConfig  # noqa: E402
from twin.protocol import IBL_DEFAULT  # noqa: E402
from twin.sim.agents import DEFAULT_TRUTHS, Family  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_components_on_ray_make_the_in_process_ensemble(local_ray):
    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 3, 1800, seed=4).trials
    config = EnsembleFitConfig(components=ensemble_components(("static", "reinforce")), fit=FitConfig(epochs=6, patience=3), refit=False)
    here = fit_ensemble(trials, config, progress=False)
    there = fit_ensemble(trials, config, progress=False, fit_components=fit_components_ray())
    assert [c.label for c in there.components] == [c.label for c in here.components] == ["static/seed0", "reinforce/seed0"]
    assert there.choose_at == here.choose_at
    for a, b in zip(here.components, there.components):
        assert b.heldout_ll == pytest.approx(a.heldout_ll, abs=1e-6) and b.weight == pytest.approx(a.weight, abs=1e-6)
        assert b.new_animal_ll == pytest.approx(a.new_animal_ll, abs=1e-6) and b.new_animal_weight == pytest.approx(a.new_animal_weight, abs=1e-6)
    for a, b in zip(here.animals, there.animals):
        assert a.subject == b.subject and b.val_ll == pytest.approx(a.val_ll, abs=1e-6)
        assert b.ensemble.weights.tolist() == pytest.approx(a.ensemble.weights.tolist(), abs=1e-6)


def test_the_costliest_fits_are_submitted_first():
    from cluster.ensemble import submission_order

    comps = ensemble_components(("static", "reinforce", "dnn", "dnn_delta", "rnn"), seeds=2)
    order = [comps[i].label for i in submission_order(comps)]
    assert order[:2] == ["rnn/seed0", "rnn/seed1"] and order[-1] == "static/seed0"
    assert sorted(order) == sorted(c.label for c in comps)


def test_with_a_refit_both_phases_run_as_their_own_tasks_and_make_the_in_process_ensemble(local_ray):
    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 3, 1800, seed=5).trials
    config = EnsembleFitConfig(components=ensemble_components(("static", "reinforce")), fit=FitConfig(epochs=4, patience=2), refit=True)
    here = fit_ensemble(trials, config, progress=False)
    there = fit_ensemble(trials, config, progress=False, fit_components=fit_components_ray())
    assert [c.label for c in there.components] == [c.label for c in here.components]
    for a, b in zip(here.components, there.components):
        assert b.heldout_ll == pytest.approx(a.heldout_ll, abs=1e-6) and b.population_val_ll == pytest.approx(a.population_val_ll, abs=1e-6)
    for a, b in zip(here.animals, there.animals):
        assert b.val_ll == pytest.approx(a.val_ll, abs=1e-6)
        assert b.ensemble.weights.tolist() == pytest.approx(a.ensemble.weights.tolist(), abs=1e-6)


def test_without_a_refit_the_final_phase_needs_the_stacking_phase():
    from twin.fit.ensemble_cohort import fit_component_final

    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 2, 600, seed=6).trials
    config = EnsembleFitConfig(components=ensemble_components(("static",)), fit=FitConfig(epochs=2, patience=2), refit=False)
    with pytest.raises(ValueError, match="stacking phase"):
        fit_component_final(config.components[0], trials, config)
