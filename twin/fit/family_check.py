"""The generative check on a synthetic family: simulate a cohort, fit a rule, run it free.

A cohort of one ground-truth family (animals differing in starting weights and learning-rate
multipliers, :class:`~twin.sim.agents.Individuality`) trains under a known protocol; a population
rule is fitted on the fitting animals (each one's last session validates); the held-out animals'
twins then run free under the same protocol (:func:`twin.sim.check.run_check`) and are scored
against what those animals did (:func:`twin.analysis.generative.generative_check`):

* ``twin``: the fitted population rule, from scratch (cut-off 0), with the population ``w0`` and
  rate (what a new animal gets without per-animal starting state);
* ``twin-future``: the same twin from each held-out animal's session ``cutoff`` on, continuing
  from its teacher-forced state there (only when ``cutoff > 0``);
* ``twin-map-future``: as ``twin-future``, but each animal's ``w0`` and rate multipliers are first inferred from its
  own sessions before the cut-off (:func:`twin.fit.adapt.infer_start`, MAP under a prior whose
  mean is the population ``w0`` and whose SD is the spread of the fitting animals' starts, inferred
  the same way from their first sessions), so the state at the cut-off comes from its own data;
* ``truth``: the true rule with each animal's true ``w0`` and rate — the oracle, whose check
  measures what rollout noise alone allows (its coverage should be near nominal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from twin.analysis.generative import GenerativeCheck, generative_check
from twin.data.batch import make_batch
from twin.data.splits import split_animals, split_last_sessions
from twin.fit.adapt import cohort_start_prior, infer_start
from twin.fit.train import FitConfig, FitResult, fit
from twin.models.learner import ModelSpec
from twin.models.params import TwinModel, TwinParams
from twin.models.rules import make_config
from twin.protocol import IBL_DEFAULT, Curriculum
from twin.sim.agents import DEFAULT_TRUTHS, Family, GroundTruth, Individuality, draw_individuals
from twin.sim.check import CheckRun, run_check, twin_starts
from twin.sim.simulate import simulate


@dataclass(frozen=True)
class FamilyCheckConfig:
    """One generative check on a synthetic family.

    Attributes:
        n_animals: cohort size (fitting + held-out).
        n_test: held-out animals.
        n_trials: trials per animal.
        rule: the rule fitted.
        fit: optimisation settings.
        n_rollouts: free runs per held-out animal.
        cutoff: sessions each held-out animal's future-sessions check consumes first (0: none).
        individuality: how the animals differ.
        protocol: the protocol the cohort trains under (and the twins run).
        seed: seeds the cohort, the split and the rollouts.
        rule_options: structural options of the fitted rule.
    """

    n_animals: int = 24
    n_test: int = 8
    n_trials: int = 4000
    rule: str = "reinforce"
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=60, patience=10))
    n_rollouts: int = 100
    cutoff: int = 0
    individuality: Individuality = field(default_factory=Individuality)
    protocol: Curriculum = IBL_DEFAULT
    seed: int = 0
    rule_options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FamilyCheck:
    """Checks of one family: label (``twin``, ``twin-future``, ``truth``) → check and its rollouts."""

    family: Family
    checks: dict[str, GenerativeCheck]
    runs: dict[str, CheckRun]
    fit: FitResult
    trials: pd.DataFrame


def check_family(family: Family, config: FamilyCheckConfig = FamilyCheckConfig(), truth: GroundTruth | None = None, progress: bool = False) -> FamilyCheck:
    """Simulate a cohort of ``family``, fit ``config.rule`` on the fitting animals and run the
    generative check on the held-out ones (see the module docstring)."""
    gt = truth or DEFAULT_TRUTHS[family]
    true_model = gt.build()
    w0, log_rate = draw_individuals(gt, config.n_animals, config.individuality, seed=config.seed)
    sim = simulate(true_model, config.protocol, config.n_animals, config.n_trials, seed=config.seed, subject_prefix=family.value, w0=w0, log_rate=log_rate)
    batch = make_batch(sim.trials)
    split = split_animals(batch.n_animals, config.n_test, 0.0, seed=config.seed)
    fitting = batch.select(list(split.train) + list(split.val))
    train, val = split_last_sessions(fitting)
    spec = ModelSpec(config.rule, rule_config=make_config(config.rule, **config.rule_options))
    res = fit(spec, train, val, config.fit, progress=progress, description=f"{family.value}: {config.rule}")
    test = [batch.subjects[i] for i in split.test]
    trials = sim.trials[sim.trials["subject"].isin(test)]
    pop_twin = TwinModel.of(res.model)
    oracle = [TwinModel(true_model, TwinParams(w0[i], log_rate[i], "truth")) for i in split.test]
    cases = {"twin": ([pop_twin] * len(test), res.model, 0), "truth": (oracle, true_model, 0)}
    if config.cutoff > 0:
        cases["twin-future"] = ([pop_twin] * len(test), res.model, config.cutoff)
        # the prior: the spread of the fitting animals' own starts, each inferred the same way from
        # its first sessions under a wide prior (estimation noise included: a conservative prior)
        first = lambda df: df[df.groupby("subject")["session"].rank(method="dense") <= config.cutoff]  # noqa: E731
        fitting = sim.trials[~sim.trials["subject"].isin(test)]
        prior = cohort_start_prior(res.model, make_batch(first(fitting)))
        mapped = infer_start(res.model, make_batch(first(trials)), prior, fit_rate=True)
        cases["twin-map-future"] = ([mapped[s] for s in test], res.model, config.cutoff)
    checks, runs = {}, {}
    for label, (twins, population, cut) in cases.items():
        start = twin_starts(twins, trials, test, [cut] * len(test), config.protocol)
        run = run_check(population, start, trials, config.protocol, config.n_rollouts, seed=config.seed + 1)
        runs[label] = run
        checks[label] = generative_check(run.subjects, run.observed, run.predicted, run.cutoff, run.n_rollouts)
    return FamilyCheck(family, checks, runs, res, trials)


__all__ = ["FamilyCheck", "FamilyCheckConfig", "check_family"]
