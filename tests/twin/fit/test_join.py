"""A new animal joins a fitted cohort: its start inferred from its own sessions under the
cohort's prior, its ensemble weighted by the cohort's new-animal weights, stored as version 1."""

from __future__ import annotations

import pytest
import torch

from twin.data.batch import make_batch
from twin.errors import TwinError
from twin.fit.adapt import StartPrior, infer_start
from twin.fit.cohort import SERVING_ALIAS, CohortFitConfig, fit_cohort, update_twin
from twin.fit.ensemble_cohort import EnsembleFitConfig, ensemble_components, fit_ensemble_cohort
from twin.fit.join import cohort_members, join_cohort
from twin.fit.train import FitConfig
from twin.models.ensemble import ENSEMBLE_RULE
from twin.models.learner import ModelSpec
from twin.models.params import Adaptation
from twin.persist.records import TwinHyperparameters
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.simulate import simulate


@pytest.fixture(scope="module")
def trials():
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 5, 2400, seed=7).trials


def _split(trials):
    names = list(dict.fromkeys(trials["subject"]))
    new = names[-1]
    cohort = trials[trials["subject"] != new]
    early = trials[(trials["subject"] == new) & (trials["session"] <= 2)]
    return cohort, new, early


def test_a_new_animal_joins_a_single_rule_cohort_from_its_own_sessions(trials, tmp_path):
    cohort, new, early = _split(trials)
    store = TwinStore(tmp_path)
    fit_cohort(cohort, store, CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=3, patience=2), adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE), progress=False)
    member = str(cohort["subject"].iloc[0])
    cid, members = cohort_members(store, member)
    assert len(members) == 4 and members[0].meta.subject == member
    res = join_cohort(store, new, trials[trials["subject"].isin([new])].pipe(lambda d: d[d["session"] <= 2]), member)
    v = res.version
    assert (v.subject, v.version, v.trained_through_session) == (new, 1, 2) and SERVING_ALIAS in v.aliases
    assert v.hyperparameters.cohort == cid == res.cohort and res.weights is None
    # exactly the MAP start under the members' prior, not the population mean
    pop = members[0].twin.population
    prior = StartPrior.from_params([m.twin.params for m in members])
    want = infer_start(pop, make_batch(early, pop.spec.features), prior, fit_rate=True)[new]
    got = store.load_twin(new)
    assert torch.allclose(got.twin.params.w0, want.params.w0) and torch.allclose(got.twin.params.log_rate, want.params.log_rate)
    assert not torch.allclose(got.twin.params.w0, pop.w0.detach().float())
    assert got.state is not None and got.state.through_session == 2
    # then it updates like any twin, and cannot join twice
    v2 = update_twin(store, new, trials[(trials["subject"] == new) & (trials["session"] <= 4)], FitConfig(learning_rate=0.02, epochs=2, patience=2))
    assert v2.version == 2 and v2.trained_through_session == 4
    with pytest.raises(TwinError, match="already has a twin"):
        join_cohort(store, new, early, member)
    with pytest.raises(TwinError, match="no trials"):
        join_cohort(store, "nobody", early, member)


def test_a_new_animal_joins_an_ensemble_cohort_with_its_new_animal_weights(trials, tmp_path):
    cohort, new, early = _split(trials)
    store = TwinStore(tmp_path)
    config = EnsembleFitConfig(components=ensemble_components(("static", "reinforce")), fit=FitConfig(epochs=3, patience=2), refit=False)
    res, versions = fit_ensemble_cohort(cohort, store, config, progress=False)
    assert res.new_animal is not None
    stored = versions[0].hyperparameters.new_animal_weights
    assert stored == pytest.approx(res.new_animal.cohort.tolist())
    joined = join_cohort(store, new, early, versions[0].subject)
    assert joined.version.rule == ENSEMBLE_RULE and joined.weights_source == "new-animal stacking"
    assert joined.weights == pytest.approx(list(stored))
    got = store.load_twin(new)
    assert got.ensemble is not None and got.ensemble.labels == ("static/seed0", "reinforce/seed0")
    assert got.ensemble.weights.tolist() == pytest.approx(list(stored))
    assert all(st.through_session == 2 for st in got.ensemble.states)
    assert got.meta.hyperparameters.new_animal_weights == stored  # a later joiner of its cohort finds them too


def test_a_cohort_without_new_animal_weights_gives_the_members_mean(trials, tmp_path):
    cohort, new, early = _split(trials)
    store = TwinStore(tmp_path)
    config = EnsembleFitConfig(components=ensemble_components(("static", "reinforce")), fit=FitConfig(epochs=2, patience=2), refit=False, new_animal_sessions=None)
    _, versions = fit_ensemble_cohort(cohort, store, config, progress=False)
    assert versions[0].hyperparameters.new_animal_weights is None
    joined = join_cohort(store, new, early, versions[0].subject)
    mean = torch.stack([store.load_twin(v.subject).ensemble.weights.double() for v in versions]).mean(0)
    assert joined.weights_source == "members' mean" and joined.weights == pytest.approx(mean.tolist())


def test_a_fully_fine_tuned_cohort_has_no_shared_rule_to_join(trials, tmp_path):
    cohort, new, early = _split(trials)
    store = TwinStore(tmp_path)
    fit_cohort(cohort, store, CohortFitConfig(spec=ModelSpec("static"), fit=FitConfig(epochs=1, patience=1), adaptation=Adaptation.FULL), progress=False)
    with pytest.raises(TwinError, match="no shared rule"):
        join_cohort(store, new, early, str(cohort["subject"].iloc[0]))
    assert new not in store.subjects()


def test_new_animal_weights_round_trip_through_the_record():
    h = TwinHyperparameters(cohort="c1", new_animal_weights=(0.25, 0.75))
    assert TwinHyperparameters.from_json(h.to_json()) == h
    assert TwinHyperparameters.from_json({"cohort": "c1"}).new_animal_weights is None
