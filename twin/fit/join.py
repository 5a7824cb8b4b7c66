"""A new animal joins a fitted cohort: its twin from the cohort's rule(s) and its own first
sessions, without refitting the cohort.

A cohort fit (:mod:`twin.fit.cohort`, :mod:`twin.fit.ensemble_cohort`) makes twins of the animals
it saw. An animal that starts training later gets its twin here: the cohort's population rule
(each component's, for an ensemble) is kept, and the animal's starting state, ``w0`` and the
log learning-rate multipliers ``ρ``, is the MAP from its own sessions under a prior that is the
spread of the cohort's fitted twins (:meth:`twin.fit.adapt.StartPrior.from_params`,
:func:`twin.fit.adapt.infer_start`), never the population mean. An ensemble twin weights its
components by the cohort's **new-animal weights**, stacked on animals held out of the cohort's
stacking fit and started the same way (:attr:`twin.fit.ensemble_cohort.EnsembleFit.new_animal`);
a store written before those weights were kept gives the mean of the members' weights, and says
so. The twin continues from its end state after the animal's last session; later sessions update
it as any twin (:func:`twin.fit.cohort.update_twin`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import pandas as pd
import torch

from twin.data.batch import make_batch
from twin.errors import TwinError
from twin.fit.adapt import StartPrior, infer_start
from twin.fit.cohort import SERVING_ALIAS, twin_end_state
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel
from twin.models.params import Adaptation, TwinModel, TwinParams
from twin.persist.records import TwinMetrics
from twin.persist.store import NewVersion, Twin, TwinStore, TwinVersion, hash_trials

log = logging.getLogger("twin.fit.join")


@dataclass(frozen=True)
class JoinResult:
    """A new animal's twin, joined to a cohort.

    Attributes:
        version: the stored twin version (the subject's first).
        cohort: id of the cohort fit it joined.
        members: the cohort's animals whose twins made the start prior.
        weights: ``[M]`` its ensemble weights (None for a single-rule twin).
        weights_source: where they came from (``new-animal stacking`` or ``members' mean``).
    """

    version: TwinVersion
    cohort: str
    members: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    weights_source: str = ""


def cohort_members(store: TwinStore, member: str, alias: str = SERVING_ALIAS) -> tuple[str, tuple[Twin, ...]]:
    """The cohort fit that ``member``'s ``alias`` twin descends from, and every animal's twin
    under ``alias`` from that same fit (``member`` first).

    Raises:
        TwinError: ``member`` has no such twin, or it records no cohort fit.
    """
    own = store.load_twin(member, alias=alias)
    cohort = own.meta.hyperparameters.cohort
    if not cohort:
        raise TwinError(f"subject {member!r}: its twin v{own.meta.version} records no cohort fit to join")
    out = [own]
    for s in store.subjects():
        if s == member:
            continue
        try:
            meta = store.get(s, alias=alias)
        except TwinError:
            continue
        if meta.hyperparameters.cohort == cohort:
            out.append(store.load_twin(s, alias=alias))
    return cohort, tuple(out)


def _start(population: LearnerModel, members: list[TwinParams], trials: pd.DataFrame) -> TwinModel:
    """The new animal's twin over ``population``: MAP ``w0`` and ``ρ`` from its trials under the
    prior of the members' parameters."""
    prior = StartPrior.from_params(members)
    batch = make_batch(trials, population.spec.features)
    return infer_start(population, batch, prior, fit_rate=True)[str(trials["subject"].iloc[0])]


def join_cohort(store: TwinStore, subject: str, trials: pd.DataFrame, member: str, alias: str = SERVING_ALIAS) -> JoinResult:
    """Give ``subject``, which has no twin yet, a twin from the cohort fit of ``member``'s twin
    and the subject's own sessions (module docstring), stored as its first version under
    ``alias``.

    Args:
        store: the twin store.
        subject: the new animal.
        trials: its canonical trials (other subjects' rows are ignored); every session it has.
        member: any animal of the cohort to join.
        alias: the alias read (the members' twins) and moved (to the new twin).

    Raises:
        TwinError: the subject already has a twin (update it instead), has no trials, the
            cohort has fewer than two members to make the prior from, or its twins are fully
            fine-tuned (no shared rule).
    """
    if subject in store.subjects():
        raise TwinError(f"subject {subject!r} already has a twin (v{store.get(subject).version}); update it with its new sessions instead")
    sub = trials[trials["subject"] == subject]
    if sub.empty:
        raise TwinError(f"no trials of subject {subject!r} to start its twin from")
    cohort, members = cohort_members(store, member, alias)
    if len(members) < 2:
        raise TwinError(f"the cohort of {member!r} has {len(members)} animal(s) with a twin under {alias!r}; a start prior needs at least two")
    first = members[0]
    if first.meta.hyperparameters.adaptation is Adaptation.FULL:
        raise TwinError(f"the cohort of {member!r} fine-tuned each animal's own rule (adaptation full): there is no shared rule to join; fit the cohort again with the new animal")
    last, digest = int(sub["session"].max()), hash_trials(sub)
    hyper = replace(first.meta.hyperparameters, warm_start_from=None)
    names = tuple(m.meta.subject for m in members)
    if first.ensemble is None:
        twin = _start(first.twin.population, [m.twin.params for m in members if m.ensemble is None], sub)
        item = NewVersion(subject, twin, last, digest, TwinMetrics(population_val_ll=first.meta.metrics.population_val_ll), hyper, twin_end_state(twin.model, sub))
        return JoinResult(store.put_many([item], alias=alias)[0], cohort, names)
    ens = first.ensemble
    same = [m.ensemble for m in members if m.ensemble is not None and m.ensemble.labels == ens.labels]
    twins = [_start(c.population, [e.components[j].params for e in same], sub) for j, c in enumerate(ens.components)]
    stored = first.meta.hyperparameters.new_animal_weights
    if stored is not None and len(stored) == ens.n_components:
        weights, source = torch.tensor(stored, dtype=torch.float64), "new-animal stacking"
    else:
        weights, source = torch.stack([e.weights.double() for e in same]).mean(0), "members' mean"
        log.warning("cohort %s records no new-animal weights (fitted before they were kept): %s gets the mean of its members' weights", cohort, subject)
    weights = weights / weights.sum()
    joined = TwinEnsemble.of(twins, weights, ens.labels, [twin_end_state(t.model, sub) for t in twins])
    item = NewVersion(subject, joined, last, digest, TwinMetrics(), hyper)
    version = store.put_many([item], alias=alias)[0]
    return JoinResult(version, cohort, names, tuple(float(w) for w in weights), source)


__all__ = ["JoinResult", "cohort_members", "join_cohort"]
