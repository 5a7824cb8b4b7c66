"""Cohort ensemble fits: components stacked on held-out future sessions, stored, updated."""

from __future__ import annotations

import pytest
import torch

from twin.fit.cohort import SERVING_ALIAS, update_twin
from twin.data.batch import make_batch
from twin.data.splits import split_sessions
from twin.fit.adapt import cohort_start_prior, infer_start
from twin.fit.ensemble_cohort import (
    EnsembleFitConfig, bootstrap_animals, component_log_likelihood, ensemble_components, fit_component_stacking, fit_ensemble, fit_ensemble_cohort,
    new_animal_log_likelihood,
)
from twin.fit.train import FitConfig
from twin.models.ensemble import ENSEMBLE_RULE
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.simulate import simulate


@pytest.fixture(scope="module")
def trials():
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 4, 2400, seed=4).trials


def _fit(trials, tmp_path, components):
    subject = trials["subject"].iloc[0]
    last = int(trials.loc[trials.subject == subject, "session"].max())
    before = trials[~((trials.subject == subject) & (trials.session == last))]
    config = EnsembleFitConfig(components=components, fit=FitConfig(epochs=15, patience=3), refit=False)
    store = TwinStore(tmp_path)
    res, versions = fit_ensemble_cohort(before, store, config, progress=False)
    return store, res, versions, subject, last


def test_the_generating_rule_gets_most_of_the_weight_and_the_ensemble_is_stored(trials, tmp_path):
    """REINFORCE data: stacking the static GLM against REINFORCE puts the weight on REINFORCE,
    and the stored ensemble versions load as ensembles."""
    comps = ensemble_components(("static", "reinforce"))
    store, res, versions, subject, last = _fit(trials[trials["subject"].isin(sorted(trials["subject"].unique())[:3])], tmp_path, comps)
    table = res.table()
    assert list(table["component"]) == ["static/seed0", "reinforce/seed0", "ensemble"]
    assert float(res.stacking.cohort[1]) > 0.8, table
    # new-animal weights: stacked on the same future sessions from starts inferred from 2 sessions
    assert res.new_animal is not None and float(res.new_animal.cohort.sum()) == pytest.approx(1.0)
    assert torch.equal(res.new_animal_weights, res.new_animal.cohort) and float(res.new_animal_weights[1]) > 0.5, table
    assert table["new_animal_ll_nats"].notna().all() and (table["new_animal_ll_nats"] < 0).all()
    assert res.stacking.ensemble_ll >= float(res.stacking.component_ll.max()) - 1e-9
    assert all(v.rule == ENSEMBLE_RULE for v in versions) and len(versions) == 3
    loaded = store.load_twin(subject, alias=SERVING_ALIAS)
    assert loaded.ensemble is not None and loaded.ensemble.labels == ("static/seed0", "reinforce/seed0")
    assert loaded.twin.population.spec.rule == "reinforce" and loaded.meta.metrics.val_ll is not None
    assert all(st.through_session == last - 1 for st in loaded.ensemble.states)
    # an update warm-starts every component on the new session and keeps the weights
    v2 = update_twin(store, subject, trials, FitConfig(learning_rate=0.02, epochs=3, patience=3))
    again = store.load_twin(subject)
    assert v2.version == 2 and v2.rule == ENSEMBLE_RULE and again.ensemble is not None
    assert torch.allclose(again.ensemble.weights, loaded.ensemble.weights)
    assert all(st.through_session == last for st in again.ensemble.states)


@pytest.mark.slow
def test_a_bootstrap_component_and_an_update_of_the_ensemble(trials, tmp_path):
    """Seeds and bootstraps of REINFORCE share the weight."""
    comps = ensemble_components(("static", "reinforce"), seeds=1, bootstraps=1)
    assert [c.label for c in comps] == ["static/seed0", "reinforce/seed0", "reinforce/boot0"]
    store, res, versions, subject, last = _fit(trials, tmp_path, comps)
    w = res.stacking.cohort
    assert float(w[1] + w[2]) > 0.8, res.table()
    assert {v.subject for v in versions} == set(trials["subject"])
    assert store.load_twin(subject).ensemble.labels == tuple(c.label for c in comps)


def test_bootstrap_resamples_whole_animals(trials):
    boot = bootstrap_animals(trials, seed=1)
    names = sorted(trials["subject"].unique())
    assert boot["subject"].nunique() == len(names)
    for s, g in boot.groupby("subject"):
        orig = s.rsplit("#", 1)[0]
        assert orig in names and len(g) == int((trials.subject == orig).sum())
    assert bootstrap_animals(trials, seed=1).equals(boot)


def test_new_animal_scores_are_teacher_forced_from_starts_inferred_from_the_first_sessions(trials):
    """The new-animal log-likelihood is exactly: starts inferred from the new animals' first
    sessions under the prior of the fitted animals' first sessions, the rule teacher-forced from
    trial 1, read on the sessions after the first ones; a start from more sessions changes it."""
    from twin.fit.train import fit
    from twin.models.learner import ModelSpec

    batch = make_batch(trials)
    fitted, new = batch.select([0, 1, 2]), batch.select([3])
    split = split_sessions(fitted, 3)
    pop = fit(ModelSpec("reinforce"), split.train, split.val, FitConfig(epochs=3, patience=2), progress=False).model
    first = fitted.truncate_sessions(torch.full((3,), 2))
    got = new_animal_log_likelihood(pop, first, new, 2)
    starts = infer_start(pop, new.truncate_sessions(torch.full((1,), 2)), cohort_start_prior(pop, first), fit_rate=True)
    scored = new.with_mask(new.sessions_mask(3))
    want = component_log_likelihood([starts[s] for s in new.subjects], scored)
    assert got.shape == new.mask.shape and torch.allclose(got, want)
    assert bool((got[~scored.mask] == 0).all()) and bool((got[scored.mask] < 0).all())
    assert not torch.allclose(new_animal_log_likelihood(pop, fitted.truncate_sessions(torch.full((3,), 1)), new, 1)[scored.mask], got[scored.mask])


def test_new_animals_are_a_seeded_share_held_out_of_the_stacking_fit(trials):
    config = EnsembleFitConfig(components=ensemble_components(("static",)), fit=FitConfig(epochs=2, patience=2, seed=3), refit=False)
    names = [f"m{i}" for i in range(30)]
    new = config.new_animals(names)
    assert len(new) == 10 and new == config.new_animals(names) and set(new) <= set(names)
    assert new != EnsembleFitConfig(components=config.components, fit=FitConfig(seed=4)).new_animals(names)
    assert len(config.new_animals(names[:3])) == 1 and config.new_animals(names[:2]) == ()
    assert EnsembleFitConfig(new_animal_sessions=None).new_animals(names) == ()
    # the stacking phase scores the new animals only as new animals, the others only as fitted
    phase = fit_component_stacking(config.components[0], trials, config, 3)
    batch = make_batch(trials)
    rows = torch.tensor([s in set(config.new_animals(batch.subjects)) for s in batch.subjects])
    assert int(rows.sum()) == 1 and phase.new_animal_ll is not None
    assert bool((phase.heldout_ll[rows] == 0).all()) and bool((phase.new_animal_ll[~rows] == 0).all())
    assert bool((phase.heldout_ll[~rows] < 0).any()) and bool((phase.new_animal_ll[rows] < 0).any())


def test_without_new_animal_sessions_new_animals_get_the_cohort_weights(trials):
    config = EnsembleFitConfig(components=ensemble_components(("static", "reinforce")), fit=FitConfig(epochs=2, patience=2), refit=False, new_animal_sessions=None)
    res = fit_ensemble(trials, config, progress=False)
    assert res.new_animal is None and torch.equal(res.new_animal_weights, res.stacking.cohort)
    assert res.table()["new_animal_ll_nats"].isna().all()


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="new_animal_sessions"):
        EnsembleFitConfig(new_animal_sessions=0)
    with pytest.raises(ValueError, match="new_animal_fraction"):
        EnsembleFitConfig(new_animal_fraction=1.0)
    with pytest.raises(ValueError, match="duplicate"):
        EnsembleFitConfig(components=ensemble_components(("static", "static")))
    with pytest.raises(ValueError, match="at least one"):
        ensemble_components((), seeds=1)


@pytest.mark.parametrize("refit", [False, True])
def test_population_fits_counts_the_population_fits_the_ensemble_runs(trials, monkeypatch, refit):
    """What a cost limit charges for an ensemble (``population_fits``) is what ``fit_ensemble`` runs."""
    import twin.fit.cohort as cohort_mod
    import twin.fit.ensemble_cohort as ens_mod

    calls: list[str] = []

    def counting(real):
        def wrapped(*args, **kwargs):
            calls.append(args[0].rule)
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(ens_mod, "fit", counting(ens_mod.fit))
    monkeypatch.setattr(cohort_mod, "fit", counting(cohort_mod.fit))
    config = EnsembleFitConfig(components=ensemble_components(("static", "reinforce")), fit=FitConfig(epochs=2, patience=2), refit=refit, new_animal_sessions=None)
    fit_ensemble(trials, config, progress=False)
    assert len(calls) == config.population_fits == (4 if refit else 2)
