"""Cohort-level ensemble fits: several rules (and seeds or bootstraps of each) per animal, weighted
by stacking on held-out future sessions, stored as one ensemble twin version per animal.

The protocol, for each component (a rule's spec, a seed, optionally a bootstrap of the animals):

1. **Stacking phase.** Split every animal at session ``k`` (:func:`twin.data.splits.split_sessions`):
   fit the population rule on sessions ``< k`` (session ``k`` for early stopping), adapt each
   animal's twin the same way, and score each twin teacher-forced on its animal's sessions
   ``> k``: per-trial held-out log-likelihoods, the use a twin is for. Stacking
   (:func:`twin.fit.stacking.stack`) turns them into cohort and per-animal weights.

   **New animals** are used differently: the rule was not fitted on them, and each starts from
   a state inferred from its own first ``c`` sessions (:func:`twin.fit.adapt.infer_start`), not
   from an adaptation to many sessions. So a fraction of the animals (``new_animal_fraction``,
   the same seeded draw for every component) is held out of this phase's population fit and
   scored *that* way: each held-out animal's start inferred from its first ``c`` sessions under
   the prior of the fitted animals' first sessions (:func:`twin.fit.adapt.cohort_start_prior`),
   then teacher-forced on its sessions ``> c``. Stacking those gives the **new-animal weights**;
   the cohort weights come from the fitted animals. The two differ where a flexible rule
   forecasts the animals it was fitted on well but generalises poorly to other animals
   (measured on the perseveration family, ``experiments/simulator_fidelity.py``: ``dnn_delta``
   took 0.29 of the cohort weight and scored an LL-gain ratio of −2.71 on new animals; scoring
   the *fitted* animals from inferred starts gave it 0.33, so it is the animals, not the starts).
2. **Final phase.** By default (``refit=False``) the stacking phase's population rule is kept
   and every animal's twin is re-adapted on all its sessions; the stacking split is then late
   (``k`` = the smallest animal's session count − 1), so the rules see all but the last
   sessions. With ``refit=True`` the split is at half the sessions and each population rule is
   refitted on all sessions (each animal's last session validates) before the adaptation.

**Why no refit by default** (measured, ``experiments/simulator_fidelity.py``, 30 fitting + 20
held-out animals × 5,000 trials, 60 epochs, patience 10): the weights are chosen for the rules
they are used with. The refitted flexible rules scored −1.8 to −2.7 (LL-gain ratio) on new
animals where the stacking phase had scored them well: ensemble 0.55 with a refit, 0.91 without
on perseveration; on forgetting 0.00 with, 0.58 without (and the generative check passing), at
half the cost. The refitted ``dnn`` had stopped at epoch 4; over four seeds such early stops
come from the short patience under every validation split, not from the refit's
(``experiments/results/refit_diagnostic.md``), and a refit is a second chance of one.

A bootstrap component fits its population rule on the animals resampled with replacement
(seeded), so its spread across bootstraps is parameter uncertainty; every twin is then adapted to
its own animal's real sessions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from twin.data.batch import TrialBatch, make_batch
from twin.data.features import FeatureSpec
from twin.data.splits import split_last_sessions, split_sessions
from twin.errors import TwinError
from twin.fit.adapt import adapt, cohort_start_prior, default_adapt_config, infer_start
from twin.fit.cohort import SERVING_ALIAS, AnimalTwin, CohortFitConfig, PopulationFit, adapt_animals, animal_batches, fit_population, twin_end_state
from twin.fit.stacking import StackingConfig, StackingResult, stack
from twin.fit.train import FitConfig, fit
from twin.models.ensemble import TwinEnsemble, mixture_log_likelihood
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import Adaptation, TwinModel, stack_params
from twin.models.rules import make_config
from twin.persist.records import TwinHyperparameters, TwinMetrics
from twin.persist.store import InTransaction, NewVersion, TwinStore, TwinVersion, hash_trials

DEFAULT_ENSEMBLE_RULES = ("static", "reinforce", "dnn", "dnn_delta", "rnn")
"""The rule families of the default ensemble."""


@dataclass(frozen=True)
class ComponentConfig:
    """One component of an ensemble fit.

    Attributes:
        spec: the population model's structure.
        seed: seeds its initialisation (and, with ``bootstrap``, the resampling of animals).
        bootstrap: fit the population rule on the animals resampled with replacement.
    """

    spec: ModelSpec
    seed: int = 0
    bootstrap: bool = False

    @property
    def label(self) -> str:
        """``rule/seedN`` or ``rule/bootN``."""
        return f"{self.spec.rule}/{'boot' if self.bootstrap else 'seed'}{self.seed}"


def ensemble_components(
    rules: Sequence[str] = DEFAULT_ENSEMBLE_RULES, features: FeatureSpec = FeatureSpec(), seeds: int = 1, bootstraps: int = 0, **rule_options: object
) -> tuple[ComponentConfig, ...]:
    """Components of ``rules``: ``seeds`` seeds and ``bootstraps`` bootstraps of each (``static``,
    whose fit is convex, gets one component: its seeds would be copies).

    Raises:
        ValueError: no rules, or no seeds and no bootstraps.
    """
    if not rules or seeds + bootstraps < 1 or seeds < 0 or bootstraps < 0:
        raise ValueError("an ensemble needs at least one rule and at least one seed or bootstrap of each")
    out = []
    for rule in rules:
        spec = ModelSpec(rule, features, make_config(rule, **rule_options))
        if rule == "static":
            out.append(ComponentConfig(spec))
            continue
        out += [ComponentConfig(spec, s) for s in range(seeds)] + [ComponentConfig(spec, b, True) for b in range(bootstraps)]
    return tuple(out)


@dataclass(frozen=True)
class EnsembleFitConfig:
    """How a cohort's ensemble twins are made.

    Attributes:
        components: the ensemble's components (their specs must share the features).
        fit: population optimisation settings (each component's ``seed`` replaces ``fit.seed``).
        adaptation: what each component twin fits to its animal.
        stacking: how the weights are fitted.
        choose_at: session ``k`` of the stacking split (fit < k, validate k, score > k); None:
            the smallest animal's session count − 1 without a refit, half of it with one.
        refit: refit each population rule on all sessions after stacking (else, the default,
            keep the stacking phase's rule, fitted on all but the last sessions, and re-adapt the
            animals only: see the module docstring for why).
        new_animal_sessions: ``c``, the first sessions a new animal's start is inferred from
            when the new-animal weights are stacked; None: no new-animal weights (every animal
            is in the stacking phase's fit, and new animals get the cohort weights).
        new_animal_fraction: fraction of the animals held out of the stacking phase's fit to
            stack the new-animal weights on (at least 1 and at most all but 2 of them; cohorts of
            fewer than 3 animals get none).
    """

    components: tuple[ComponentConfig, ...] = field(default_factory=ensemble_components)
    fit: FitConfig = FitConfig()
    adaptation: Adaptation = Adaptation.INITIAL_WEIGHTS_AND_RATE
    stacking: StackingConfig = StackingConfig()
    choose_at: int | None = None
    refit: bool = False
    new_animal_sessions: int | None = 2
    new_animal_fraction: float = 1 / 3

    def __post_init__(self) -> None:
        if self.new_animal_sessions is not None and self.new_animal_sessions < 1:
            raise ValueError(f"new_animal_sessions must be >= 1 or None, got {self.new_animal_sessions}")
        if not 0 < self.new_animal_fraction < 1:
            raise ValueError(f"new_animal_fraction must lie in (0, 1), got {self.new_animal_fraction}")
        if not self.components:
            raise ValueError("an ensemble needs at least one component")
        if len({c.spec.features for c in self.components}) > 1:
            raise ValueError("the components of an ensemble must share their policy features")
        labels = [c.label for c in self.components]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate ensemble components: {labels}")

    @property
    def features(self) -> FeatureSpec:
        return self.components[0].spec.features

    @property
    def population_fits(self) -> int:
        """How many population fits the ensemble runs: one per component (the stacking phase's
        rule is kept), two with a refit."""
        return len(self.components) * (2 if self.refit else 1)

    def new_animals(self, subjects: Sequence[str]) -> tuple[str, ...]:
        """The animals held out of the stacking phase's fit as new animals (none when
        ``new_animal_sessions`` is None or there are fewer than 3): a seeded draw (``fit.seed``)
        of ``round(new_animal_fraction × n)`` of them, at least 1 and at most ``n − 2``, the same
        for every component."""
        n = len(subjects)
        if self.new_animal_sessions is None or n < 3:
            return ()
        m = min(max(1, round(self.new_animal_fraction * n)), n - 2)
        pick = np.random.default_rng(self.fit.seed).permutation(n)[:m]
        return tuple(subjects[i] for i in sorted(pick.tolist()))


@dataclass(frozen=True)
class ComponentReport:
    """How one component did.

    Attributes:
        label: its name.
        heldout_ll: teacher-forced log-likelihood per trial on the held-out future sessions (nats).
        weight: its cohort stacking weight.
        population_val_ll: the final population fit's validation log-likelihood per trial.
        seconds: wall time of both phases.
        warnings: convergence warnings of its population fits.
        new_animal_ll: teacher-forced log-likelihood per trial on the same sessions from
            starts inferred from the animals' first sessions (nats; NaN when not computed).
        new_animal_weight: its new-animal stacking weight (NaN when not computed).
    """

    label: str
    heldout_ll: float
    weight: float
    population_val_ll: float
    seconds: float
    warnings: tuple[str, ...] = ()
    new_animal_ll: float = float("nan")
    new_animal_weight: float = float("nan")


@dataclass(frozen=True)
class AnimalEnsemble:
    """One animal's ensemble twin and what the store records about it.

    Attributes:
        subject: the animal.
        ensemble: its components (with their end states) and weights.
        trained_through_session: the last session it was fitted on.
        data_hash: hash of the animal's trials.
        val_ll: the mixture's log-likelihood per trial on the animal's last session (nats).
    """

    subject: str
    ensemble: TwinEnsemble
    trained_through_session: int
    data_hash: str
    val_ll: float


@dataclass(frozen=True)
class EnsembleFit:
    """A cohort's ensemble fit.

    Attributes:
        animals: one ensemble twin per animal, in the table's order.
        stacking: the weights and held-out scores.
        components: per-component reports, in the config's order.
        choose_at: the stacking split's session ``k``.
        seconds: wall time.
        new_animal: the new-animal weights (cohort weights only, ``per_animal`` their copies)
            and scores; None when ``new_animal_sessions`` is None.
    """

    animals: tuple[AnimalEnsemble, ...]
    stacking: StackingResult
    components: tuple[ComponentReport, ...]
    choose_at: int
    seconds: float
    new_animal: StackingResult | None = None

    @property
    def new_animal_weights(self) -> torch.Tensor:
        """``[M]`` the weights of an ensemble twin for an animal outside the cohort: the
        new-animal stacking weights, or the cohort's when they were not computed."""
        return (self.new_animal or self.stacking).cohort

    def table(self) -> pd.DataFrame:
        """One row per component (label, held-out LL, cohort weight, new-animal LL and weight,
        ...), then the ensemble's."""
        rows = [
            {"component": c.label, "heldout_ll_nats": c.heldout_ll, "weight": c.weight, "new_animal_ll_nats": c.new_animal_ll, "new_animal_weight": c.new_animal_weight,
             "population_val_ll": c.population_val_ll, "seconds": c.seconds}
            for c in self.components
        ]
        na = self.new_animal.ensemble_ll if self.new_animal is not None else float("nan")
        rows.append({"component": "ensemble", "heldout_ll_nats": self.stacking.ensemble_ll, "weight": 1.0, "new_animal_ll_nats": na, "new_animal_weight": 1.0 if self.new_animal else float("nan"),
                     "population_val_ll": float("nan"), "seconds": self.seconds})
        return pd.DataFrame(rows)


def bootstrap_animals(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The cohort's animals resampled with replacement (as many as there are), each draw renamed
    ``subject#i`` so repeated animals stay separate rows of a batch."""
    names = list(dict.fromkeys(df["subject"]))
    rng = np.random.default_rng(seed)
    by = {s: g for s, g in df.groupby("subject", sort=False)}
    parts = [by[names[j]].assign(subject=f"{names[j]}#{i}") for i, j in enumerate(rng.integers(0, len(names), len(names)))]
    return pd.concat(parts, ignore_index=True)


def component_log_likelihood(twins: Sequence[TwinModel], batch: TrialBatch) -> torch.Tensor:
    """``[B, T]`` per-trial log-likelihood of each animal's twin (row ``i`` is ``twins[i]``) on its
    own trials; one batched run when the twins share their population rule."""
    if len({id(t.population) for t in twins}) == 1:
        w0, log_rate = stack_params([t.params for t in twins])
        with torch.no_grad():
            return twins[0].population.log_likelihood(batch, w0, log_rate)
    with torch.no_grad():
        return torch.cat([t.model.log_likelihood(batch.select([i])) for i, t in enumerate(twins)])


def new_animal_log_likelihood(population: LearnerModel, fitted_first: TrialBatch, new: TrialBatch, first_sessions: int) -> torch.Tensor:
    """``[B, T]`` per-trial log-likelihood of ``population`` on animals it was not fitted on,
    used as for new animals: each one's start (``w0`` and rates) inferred from its own first
    ``first_sessions`` sessions (:func:`twin.fit.adapt.infer_start`) under the prior of the
    fitted animals' first sessions ``fitted_first`` (:func:`twin.fit.adapt.cohort_start_prior`),
    then teacher-forced from trial 1 and read on ``new``'s sessions after the first ones (0
    elsewhere).

    Args:
        population: the rule, fitted without the animals of ``new``.
        fitted_first: the first sessions of (some of) the animals it was fitted on (at least two).
        new: the new animals' trials, ``[B, T]``.
        first_sessions: sessions each start is inferred from.
    """
    last = torch.full((new.n_animals,), first_sessions, dtype=torch.long)
    starts = infer_start(population, new.truncate_sessions(last), cohort_start_prior(population, fitted_first), fit_rate=True)
    return component_log_likelihood([starts[s] for s in new.subjects], new.with_mask(new.sessions_mask(first_sessions + 1)))


def _fit_split(
    comp: ComponentConfig, df: pd.DataFrame, batch: TrialBatch, k: int, config: EnsembleFitConfig, progress: bool
) -> tuple[torch.Tensor, torch.Tensor | None, PopulationFit, list[str]]:
    """The stacking phase of one component: ``[B, T]`` held-out LL of its twins of the fitted
    animals (0 on the new animals' rows), the new animals' (0 on the others; None without new
    animals), its population fit, its warnings."""
    cfg = replace(config.fit, seed=comp.seed)
    new_subjects = set(config.new_animals(batch.subjects))
    fitted = [i for i, s in enumerate(batch.subjects) if s not in new_subjects]
    fb = batch.select(fitted) if new_subjects else batch
    split = split_sessions(fb, k)
    if comp.bootstrap:
        fdf = df[~df["subject"].isin(new_subjects)] if new_subjects else df
        fit_split = split_sessions(make_batch(bootstrap_animals(fdf, comp.seed), comp.spec.features), k)
    else:
        fit_split = split
    pop = fit(comp.spec, fit_split.train, fit_split.val, cfg, progress=progress, description=f"ensemble {comp.label} (sessions < {k})")
    res = adapt(pop.model, split.train, split.val, config.adaptation, default_adapt_config(config.adaptation))
    ll = torch.zeros(batch.mask.shape, dtype=torch.float32)
    ll[fitted] = component_log_likelihood([res.twins[s] for s in fb.subjects], split.test).to(ll.dtype)
    new = None
    if new_subjects:
        c = int(config.new_animal_sessions or 1)
        idx = [i for i, s in enumerate(batch.subjects) if s in new_subjects]
        first = fb.truncate_sessions(torch.full((fb.n_animals,), c, dtype=torch.long))
        new = torch.zeros(batch.mask.shape, dtype=torch.float32)
        new[idx] = new_animal_log_likelihood(pop.model, first, batch.select(idx), c).to(new.dtype)
    return ll, new, PopulationFit(pop.model, pop.best_val_ll, config.adaptation, None), [w.message for w in pop.warnings]


@dataclass(frozen=True)
class ComponentFit:
    """One component fitted through both phases (what :func:`fit_component` returns).

    Attributes:
        label: the component's name.
        heldout_ll: ``[B, T]`` per-trial held-out log-likelihoods of its stacking-phase twins
            (the cohort batch's animals and trials; 0 outside the held-out sessions and on the
            new animals' rows).
        twins: its final twin of every animal, by subject.
        population_val_ll: the final population fit's validation log-likelihood per trial.
        seconds: wall time of both phases.
        warnings: convergence warnings of its population fits.
        new_animal_ll: ``[B, T]`` the new animals' log-likelihoods after their first sessions
            (:func:`new_animal_log_likelihood`; 0 on the other rows), or None.
    """

    label: str
    heldout_ll: torch.Tensor
    twins: dict[str, AnimalTwin]
    population_val_ll: float
    seconds: float
    warnings: tuple[str, ...]
    new_animal_ll: torch.Tensor | None = None


def stacking_session(df: pd.DataFrame, config: EnsembleFitConfig) -> int:
    """Session ``k`` of the stacking split: ``config.choose_at``, else (at least 2) the smallest
    animal's session count − 1 without a refit (the kept rules see all but the last sessions),
    half of it with a refit."""
    if config.choose_at:
        return config.choose_at
    fewest = int(df.groupby("subject", sort=False)["session"].max().min())
    return max(2, fewest // 2 if config.refit else fewest - 1)


@dataclass(frozen=True)
class StackingPhase:
    """A component's stacking phase (:func:`fit_component_stacking`).

    Attributes:
        heldout_ll: ``[B, T]`` held-out log-likelihoods of its twins fitted before session ``k``
            (0 on the new animals' rows).
        population: its population fit on those sessions.
        warnings: convergence warnings of that fit.
        seconds: wall time.
        new_animal_ll: ``[B, T]`` the new animals' log-likelihoods (0 elsewhere), or None.
    """

    heldout_ll: torch.Tensor
    population: PopulationFit
    warnings: tuple[str, ...]
    seconds: float
    new_animal_ll: torch.Tensor | None = None


@dataclass(frozen=True)
class FinalPhase:
    """A component's final phase (:func:`fit_component_final`).

    Attributes:
        twins: its twin of every animal, by subject.
        population_val_ll: the population fit's validation log-likelihood per trial.
        seconds: wall time.
    """

    twins: dict[str, AnimalTwin]
    population_val_ll: float
    seconds: float


def fit_component_stacking(comp: ComponentConfig, df: pd.DataFrame, config: EnsembleFitConfig, k: int, progress: bool = False) -> StackingPhase:
    """The stacking phase of one component: fitted on sessions before ``k``, its twins' held-out
    log-likelihoods on the later ones (the module docstring's protocol, step 1)."""
    c0 = time.perf_counter()
    batch = make_batch(df, config.features)
    ll, new, pop, warns = _fit_split(comp, df, batch, k, config, progress)
    return StackingPhase(ll, pop, tuple(warns), time.perf_counter() - c0, new)


def fit_component_final(
    comp: ComponentConfig, df: pd.DataFrame, config: EnsembleFitConfig, animals_per_batch: int = 32, progress: bool = False,
    stacking: StackingPhase | None = None,
) -> FinalPhase:
    """The final phase of one component: its population rule refitted on all sessions (or, with
    ``config.refit`` False, the stacking phase's, which must then be given) and adapted to every
    animal. With ``config.refit`` it does not depend on the stacking phase, so both phases of
    a component may run at once (:mod:`cluster.ensemble`)."""
    c0 = time.perf_counter()
    if config.refit:
        fit_df = bootstrap_animals(df, comp.seed) if comp.bootstrap else df
        cfg = CohortFitConfig(spec=comp.spec, fit=replace(config.fit, seed=comp.seed), adaptation=config.adaptation)
        pop = fit_population(fit_df, cfg, progress)
    elif stacking is None:
        raise ValueError("without refit the final phase adapts the stacking phase's population rule: pass it")
    else:
        pop = stacking.population
    twins = [t for part in animal_batches(df, animals_per_batch) for t in adapt_animals(pop, part)]
    return FinalPhase({t.subject: t for t in twins}, pop.val_ll, time.perf_counter() - c0)


def component_fit(comp: ComponentConfig, stacking: StackingPhase, final: FinalPhase) -> ComponentFit:
    """One component's two phases as one :class:`ComponentFit` (``seconds``: both phases' sum)."""
    return ComponentFit(comp.label, stacking.heldout_ll, final.twins, final.population_val_ll, stacking.seconds + final.seconds, stacking.warnings, stacking.new_animal_ll)


def fit_component(comp: ComponentConfig, df: pd.DataFrame, config: EnsembleFitConfig, k: int, animals_per_batch: int = 32, progress: bool = False) -> ComponentFit:
    """Both phases of one component (the module docstring's protocol), one after the other: the
    unit of work that :func:`fit_ensemble` maps over the components, in this process or
    elsewhere (Ray tasks: :mod:`cluster.ensemble`, which may also run the two phases apart); it
    depends on nothing but its arguments.

    Args:
        comp: the component.
        df: canonical trials of the cohort.
        config: the ensemble fit's settings.
        k: the stacking split's session (:func:`stacking_session`).
        animals_per_batch: animals adapted per batch.
        progress: progress bars of its population fits.
    """
    stacking = fit_component_stacking(comp, df, config, k, progress)
    return component_fit(comp, stacking, fit_component_final(comp, df, config, animals_per_batch, progress, stacking))


FitComponents = Callable[[Sequence[ComponentConfig], pd.DataFrame, EnsembleFitConfig, int, int, bool], list[ComponentFit]]
"""``(components, df, config, k, animals_per_batch, progress) → one ComponentFit per component,
in order``: how :func:`fit_ensemble` runs its components."""


def fit_components_here(
    components: Sequence[ComponentConfig], df: pd.DataFrame, config: EnsembleFitConfig, k: int, animals_per_batch: int = 32, progress: bool = False
) -> list[ComponentFit]:
    """:func:`fit_component` for each component, one after the other in this process."""
    return [fit_component(c, df, config, k, animals_per_batch, progress) for c in components]


def fit_ensemble(
    df: pd.DataFrame, config: EnsembleFitConfig = EnsembleFitConfig(), progress: bool = True, animals_per_batch: int = 32, fit_components: FitComponents = fit_components_here
) -> EnsembleFit:
    """Fit every component on the cohort, stack them on held-out future sessions, and make one
    ensemble twin per animal (see the module docstring for the protocol).

    Args:
        df: canonical trials of the cohort.
        config: components, optimisation, adaptation, stacking.
        progress: progress bars of the population fits.
        animals_per_batch: animals adapted per batch.
        fit_components: how the components run (default one after the other here; the
            components are independent, so :func:`cluster.ensemble.fit_components_ray` runs them
            as parallel Ray tasks with the same results).

    Raises:
        ValueError: an animal with too few sessions for the split (it needs more than ``k``).
    """
    t0 = time.perf_counter()
    batch = make_batch(df, config.features)
    k = stacking_session(df, config)
    new_subjects = set(config.new_animals(batch.subjects))
    is_new = torch.tensor([s in new_subjects for s in batch.subjects]).reshape(-1, 1)
    split_mask = split_sessions(batch, k).test.mask & ~is_new
    fits = fit_components(config.components, df, config, k, animals_per_batch, progress)
    if [f.label for f in fits] != [c.label for c in config.components]:
        raise TwinError("the component fits do not match the ensemble's components")
    weights = stack(torch.stack([f.heldout_ll for f in fits]), split_mask, config.stacking)
    new_lls = [f.new_animal_ll for f in fits]
    new = None
    if new_subjects and all(x is not None for x in new_lls):
        new_mask = batch.sessions_mask(int(config.new_animal_sessions or 1) + 1) & is_new
        new = stack(torch.stack(new_lls), new_mask, replace(config.stacking, shrinkage=None))  # type: ignore[arg-type]
    _, val = split_last_sessions(batch)
    val_ll = torch.stack([component_log_likelihood([f.twins[s].twin for s in batch.subjects], val) for f in fits])  # [M, B, T]
    labels = tuple(c.label for c in config.components)
    animals = []
    for i, s in enumerate(batch.subjects):
        members = [f.twins[s] for f in fits]
        ens = TwinEnsemble.of([m.twin for m in members], weights.per_animal[i], labels, [m.state for m in members])  # type: ignore[misc]
        sel = val.mask[i]
        v = float(mixture_log_likelihood(val_ll[:, i, sel], ens.weights).mean()) if bool(sel.any()) else float("nan")
        animals.append(AnimalEnsemble(s, ens, members[0].trained_through_session, members[0].data_hash, v))
    nan = float("nan")
    comps = tuple(
        ComponentReport(
            f.label, float(weights.component_ll[j]), float(weights.cohort[j]), f.population_val_ll, f.seconds, f.warnings,
            float(new.component_ll[j]) if new is not None else nan, float(new.cohort[j]) if new is not None else nan,
        )
        for j, f in enumerate(fits)
    )
    return EnsembleFit(tuple(animals), weights, comps, k, time.perf_counter() - t0, new)


def ensemble_hyperparameters(config: EnsembleFitConfig, cohort: str | None = None, new_animal_weights: torch.Tensor | None = None) -> TwinHyperparameters:
    """What an ensemble version records of how it was made (the components and the animal's
    weights are in its twin file; the cohort's new-animal weights here)."""
    naw = tuple(float(w) for w in new_animal_weights) if new_animal_weights is not None else None
    return TwinHyperparameters(spec=None, fit=asdict(config.fit), adaptation=config.adaptation, cohort=cohort, new_animal_weights=naw)


def store_ensembles(store: TwinStore, result: EnsembleFit, config: EnsembleFitConfig, in_transaction: InTransaction | None = None) -> tuple[TwinVersion, ...]:
    """Store every animal's ensemble as a new version and move the ``serving`` alias to them,
    in one transaction (each component's rule is stored once); each records the cohort's
    new-animal weights, which animals that join the cohort later get (:mod:`twin.fit.join`)."""
    hyper = ensemble_hyperparameters(config, uuid.uuid4().hex, result.new_animal.cohort if result.new_animal is not None else None)
    items = [NewVersion(a.subject, a.ensemble, a.trained_through_session, a.data_hash, TwinMetrics(val_ll=a.val_ll), hyper) for a in result.animals]
    return store.put_many(items, alias=SERVING_ALIAS, in_transaction=in_transaction)


def fit_ensemble_cohort(
    df: pd.DataFrame,
    store: TwinStore,
    config: EnsembleFitConfig = EnsembleFitConfig(),
    progress: bool = True,
    animals_per_batch: int = 32,
    fit_components: FitComponents = fit_components_here,
) -> tuple[EnsembleFit, tuple[TwinVersion, ...]]:
    """:func:`fit_ensemble`, then :func:`store_ensembles`."""
    result = fit_ensemble(df, config, progress, animals_per_batch, fit_components)
    return result, store_ensembles(store, result, config)


def update_ensemble(
    store: TwinStore, subject: str, trials: pd.DataFrame, config: FitConfig | None = None, in_transaction: InTransaction | None = None
) -> TwinVersion:
    """Warm-start every component of the subject's latest ensemble twin on all its sessions (the
    newest validates), keep the weights, and store the result as a new ensemble version.

    Raises:
        TwinError: the latest twin is not an ensemble, the subject has no trials, or no session
            after the twin's last one.
    """
    loaded = store.load_twin(subject)
    ens, meta = loaded.ensemble, loaded.meta
    if ens is None:
        raise TwinError(f"subject {subject!r}: the latest twin is not an ensemble")
    sub = trials[trials["subject"] == subject]
    if sub.empty:
        raise TwinError(f"no trials of subject {subject!r} in the update")
    if int(sub["session"].max()) <= meta.trained_through_session:
        raise TwinError(f"subject {subject!r}: no session after {meta.trained_through_session}, the twin is up to date")
    batch = make_batch(sub, ens.features)
    train, val = split_last_sessions(batch)
    adaptation = meta.hyperparameters.adaptation or Adaptation.INITIAL_WEIGHTS_AND_RATE
    if adaptation is Adaptation.NONE:
        adaptation = Adaptation.INITIAL_WEIGHTS
    twins, states, vals = [], [], []
    for c in ens.components:
        twin = adapt(c.model, train, val, adaptation, config).twins[subject]
        twins.append(twin)
        states.append(twin_end_state(twin.model, sub))
        vals.append(component_log_likelihood([twin], val)[0, val.mask[0]])
    new = TwinEnsemble.of(twins, ens.weights, ens.labels, states)
    v = float(mixture_log_likelihood(torch.stack(vals), new.weights).mean()) if bool(val.mask.any()) else None
    item = NewVersion(
        subject, new, int(sub["session"].max()), hash_trials(sub), TwinMetrics(val_ll=v),
        replace(meta.hyperparameters, adaptation=adaptation, warm_start_from=meta.version),
    )
    return store.put_many([item], alias=SERVING_ALIAS, in_transaction=in_transaction)[0]


__all__ = [
    "AnimalEnsemble",
    "ComponentConfig",
    "ComponentFit",
    "ComponentReport",
    "DEFAULT_ENSEMBLE_RULES",
    "EnsembleFit",
    "EnsembleFitConfig",
    "bootstrap_animals",
    "component_log_likelihood",
    "ensemble_components",
    "ensemble_hyperparameters",
    "FinalPhase",
    "FitComponents",
    "StackingPhase",
    "component_fit",
    "fit_component",
    "fit_component_final",
    "fit_component_stacking",
    "fit_components_here",
    "fit_ensemble",
    "fit_ensemble_cohort",
    "new_animal_log_likelihood",
    "stacking_session",
    "store_ensembles",
    "update_ensemble",
]
