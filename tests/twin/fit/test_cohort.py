"""Cohort fitting into the store, and twin updates when a new session arrives."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.fit.cohort import SERVING_ALIAS, CohortFitConfig, fit_cohort, update_twin
from twin.errors import TwinError
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.sim.simulate import simulate
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT
from twin.models.params import Adaptation


@pytest.fixture(scope="module")
def trials():
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 4, 2400, seed=4).trials


def test_fit_cohort_stores_one_serving_twin_per_animal(trials, tmp_path):
    store = TwinStore(tmp_path)
    rep = fit_cohort(trials, store, CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=5, patience=3)), progress=False)
    assert store.subjects() == sorted(trials["subject"].unique())
    assert rep.adaptation in set(Adaptation) and rep.adaptation_table is not None
    assert set(rep.adaptation_table["adaptation"]) == {"none", "w0", "w0+rate"}
    for v in rep.versions:
        assert v.version == 1 and v.aliases == (SERVING_ALIAS,)
        assert v.trained_through_session == int(trials.loc[trials.subject == v.subject, "session"].max())
        assert v.hyperparameters.adaptation is rep.adaptation and v.hyperparameters.spec == ModelSpec("reinforce")
        assert v.metrics.val_ll is not None and v.metrics.population_val_ll == pytest.approx(rep.population_val_ll)
        model, meta = store.load(v.subject, alias=SERVING_ALIAS)
        assert model.spec.rule == "reinforce" and meta == v
        state = store.load_twin(v.subject).state
        assert state is not None and state.through_session == v.trained_through_session
        assert state.w.shape == (model.n_weights,) and torch.isfinite(state.w).all()


def test_new_session_updates_twin_as_new_version(trials, tmp_path):
    store = TwinStore(tmp_path)
    subject = trials["subject"].iloc[0]
    last = int(trials.loc[trials.subject == subject, "session"].max())
    before = trials[~((trials.subject == subject) & (trials.session == last))]
    fit_cohort(before, store, CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=3, patience=3), adaptation=Adaptation.INITIAL_WEIGHTS), progress=False)
    old_model, old = store.load(subject)
    v2 = update_twin(store, subject, trials, FitConfig(learning_rate=0.02, epochs=5, patience=3))
    assert (old.version, v2.version) == (1, 2)
    assert v2.trained_through_session == last and old.trained_through_session == last - 1
    assert v2.hyperparameters.warm_start_from == 1 and v2.hyperparameters.adaptation is Adaptation.INITIAL_WEIGHTS
    assert v2.hyperparameters.fit == old.hyperparameters.fit and v2.metrics.population_val_ll is None
    assert store.get(subject, alias=SERVING_ALIAS).version == 2
    assert store.load_twin(subject).state.through_session == last
    again, meta1 = store.load(subject, version=1)
    assert meta1.aliases == () and replace(meta1, aliases=old.aliases) == old  # only the alias moved
    assert torch.equal(again.w0, old_model.w0)
    with pytest.raises(TwinError, match="up to date"):
        update_twin(store, subject, trials)


def test_convergence_warnings_reach_the_stored_versions(trials, tmp_path):
    """A population fit and an adaptation stopped at their epoch caps while improving: every
    version records both, labelled, and keeps them in the store; an update records its own."""
    store = TwinStore(tmp_path)
    subject = trials["subject"].iloc[0]
    last = int(trials.loc[trials.subject == subject, "session"].max())
    before = trials[~((trials.subject == subject) & (trials.session == last))]
    cfg = CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=1, patience=3), adaptation=Adaptation.INITIAL_WEIGHTS)
    rep = fit_cohort(before, store, cfg, progress=False)
    for v in rep.versions:
        assert "population fit: best epoch 1 is the epoch cap 1: the fit was still improving (raise --epochs)" in v.metrics.warnings
        stored = store.get(v.subject)
        assert stored.metrics.warnings == v.metrics.warnings
    v2 = update_twin(store, subject, trials, FitConfig(learning_rate=0.02, epochs=1, patience=3))
    # the same population rule: its warnings stay; the update's own adaptation warns too
    assert v2.metrics.population_warnings == rep.versions[0].metrics.population_warnings
    assert any("epoch cap 1" in m for m in v2.metrics.adaptation_warnings)
    assert store.get(subject).metrics.warnings == v2.metrics.warnings
