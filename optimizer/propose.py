"""Next-session proposal for one animal, from its twin's current state (receding horizon).

Candidates are the lab's base curriculum and curricula sampled from the constrained search
space. Each is simulated from the twin's end-of-last-session state (weights, rule state and
protocol phase) until the twin reaches the criterion or the horizon of sessions ends, many
rollouts in one batch. The candidate with the fewest expected remaining trials is proposed for
the next session only: after that session the animal's twin is updated and the choice is made
again. The best candidate is attributed to its changes against the base
(:mod:`optimizer.attribution`, paired by rollout) and reduced to the changes that help robustly;
that minimal set must then beat the base by a margin that its interval over fresh rollouts
supports; otherwise the base curriculum is kept ("not confident enough to change"). The
explanation states the horizon (the sessions cap of the simulations).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from twin.protocol import Curriculum
from optimizer.attribution import Attribution, AttributionConfig, attribute
from optimizer.objective import FamilySpeedup, ModelGrid, RobustConfig, robust_speedup
from optimizer.space import CurriculumSpace, ParamKind, describe_change
from twin.analysis.criteria import TRAINED_1A, CriterionConfig
from twin.sim.forecast import Interval, SessionForecast, forecast_ensemble_session, forecast_session, interval
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel
from twin.models.state import TwinState
from twin.sim.training import simulate_training


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of a next-session proposal.

    Attributes:
        n_candidates: sampled candidates besides the base curriculum.
        n_rollouts: simulated futures per candidate.
        horizon_sessions: sessions simulated ahead.
        level: interval coverage.
        seed: seeds candidate sampling and simulation.
        criterion: what "trained" means.
        forecast_rollouts: rollouts of the next-session forecast.
    """

    n_candidates: int = 12
    n_rollouts: int = 32
    horizon_sessions: int = 15
    level: float = 0.9
    seed: int = 0
    criterion: CriterionConfig = TRAINED_1A
    forecast_rollouts: int = 200


@dataclass(frozen=True)
class NextSessionProposal:
    """What the twin suggests for the animal's next session.

    Attributes:
        curriculum: the curriculum whose settings the next session uses.
        start_phase: contrast phase the session starts in.
        n_trials: planned trials.
        expected_remaining: expected trials until the criterion under it (capped by the horizon).
        base_expected_remaining: the same under the base curriculum.
        gain: relative reduction of remaining trials against the base, paired interval.
        changed: False when the base curriculum is kept.
        forecast: the twin's forecast of the next session.
        explanation: why.
        candidates: ``(curriculum name, expected remaining trials)`` of every candidate.
        attribution: the best candidate's changes against the base and their effects (None:
            the best candidate was the base).
        max_sessions: the horizon, the sessions cap of every simulation behind the proposal.
        family_speedups: the minimal proposal's speed-up against the base as each rule family of
            the twin predicts it (an ensemble twin: over the rollouts drawn from that family's
            components), on the same runs as ``gain``; empty when no change was kept.
    """

    curriculum: Curriculum
    start_phase: int
    n_trials: int
    expected_remaining: Interval
    base_expected_remaining: Interval
    gain: Interval
    changed: bool
    forecast: SessionForecast
    explanation: str
    candidates: tuple[tuple[str, float], ...] = field(default=())
    attribution: Attribution | None = None
    max_sessions: int = 0
    family_speedups: tuple[FamilySpeedup, ...] = ()


def sample_candidates(space: CurriculumSpace, n: int, seed: int) -> list[Curriculum]:
    """``n`` curricula drawn uniformly (log-uniformly for ``LOG_FLOAT`` axes) from ``space``."""
    return [space.build(v, name=f"candidate-{i}") for i, v in enumerate(sample_values(space, n, seed))]


def sample_values(space: CurriculumSpace, n: int, seed: int) -> list[dict[str, float | int | bool]]:
    """The axis values of :func:`sample_candidates`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        values: dict[str, float | int | bool] = {}
        for p in space.params:
            if p.kind is ParamKind.BOOL:
                values[p.name] = bool(rng.integers(0, 2))
            elif p.kind is ParamKind.INT:
                values[p.name] = int(rng.integers(int(p.low), int(p.high) + 1))
            elif p.kind is ParamKind.LOG_FLOAT:
                values[p.name] = float(np.exp(rng.uniform(np.log(p.low), np.log(p.high))))
            else:
                values[p.name] = float(rng.uniform(p.low, p.high))
        out.append(values)
    return out


def _simulate(model: LearnerModel, state: TwinState, cands: list[Curriculum], config: ProposalConfig, seed: int) -> np.ndarray:
    """``[C, R]`` remaining trials to criterion (capped) of ``R`` rollouts per candidate."""
    r = config.n_rollouts
    protos = [c for c in cands for _ in range(r)]
    phases = torch.tensor([min(state.phase, len(p.stimulus.phases) - 1) for p in protos])
    run = simulate_training(
        model,
        protos,
        config.horizon_sessions,
        seed,
        w0=state.w.reshape(1, -1).expand(len(protos), -1),
        h0=state.h.reshape(1, -1).expand(len(protos), -1) if state.h.numel() else None,
        start_phase=phases,
        criterion=config.criterion,
    )
    return run.trials_to_criterion.double().reshape(len(cands), r).numpy()


def _simulate_ensemble(ensemble: TwinEnsemble, cands: list[Curriculum], config: ProposalConfig, seed: int) -> np.ndarray:
    """:func:`_simulate` of an ensemble twin: rollout ``r`` of every candidate runs the component
    drawn for ``r`` (by the ensemble's weights) from that component's end state, so candidates
    are compared on the same draws."""
    assert ensemble.states is not None
    r = config.n_rollouts
    drawn = ensemble.sample(r, torch.Generator().manual_seed(seed))
    out = np.zeros((len(cands), r))
    for j, (comp, st) in enumerate(zip(ensemble.components, ensemble.states)):
        idx = (drawn == j).nonzero().flatten().numpy()
        if len(idx):
            out[:, idx] = _simulate(comp.model, st, cands, replace(config, n_rollouts=len(idx)), seed + j)
    return out


def rollout_families(model: LearnerModel, ensemble: TwinEnsemble | None, n_rollouts: int, seed: int) -> tuple[str, ...]:
    """The rule family of each of the ``n_rollouts`` rollouts a simulation with ``seed`` runs:
    the drawn component's (:func:`_simulate_ensemble` draws them the same way), or ``model``'s."""
    if ensemble is None:
        return (model.spec.rule,) * n_rollouts
    drawn = ensemble.sample(n_rollouts, torch.Generator().manual_seed(seed))
    rules = [c.model.spec.rule for c in ensemble.components]
    return tuple(rules[int(j)] for j in drawn)


def family_speedups(families: tuple[str, ...], base: np.ndarray, other: np.ndarray, max_sessions: int, level: float, seed: int) -> tuple[FamilySpeedup, ...]:
    """``other`` against ``base`` (``[R]`` remaining trials of the same rollouts) per rule family
    of the rollouts (``families[r]``), paired bootstrap over each family's rollouts."""
    n = len(families)
    grid = ModelGrid.of(np.arange(n), np.ones(n), families, n)
    return robust_speedup(grid, base, other, max_sessions, RobustConfig(level=level), seed=seed).by_family


def _ratio_gain(base: np.ndarray, other: np.ndarray, level: float, seed: int, n_boot: int = 2000) -> Interval:
    """``1 - mean(other) / mean(base)`` with a bootstrap interval (independent rollouts)."""
    rng = np.random.default_rng(seed)
    b = base[rng.integers(0, len(base), (n_boot, len(base)))].mean(1)
    o = other[rng.integers(0, len(other), (n_boot, len(other)))].mean(1)
    boots = 1 - o / b
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    return Interval(float(1 - other.mean() / base.mean()), float(lo), float(hi))


@torch.no_grad()
def propose_next_session(
    model: LearnerModel, state: TwinState, space: CurriculumSpace, config: ProposalConfig = ProposalConfig(), ensemble: TwinEnsemble | None = None
) -> NextSessionProposal:
    """Choose the next session's curriculum for the animal of ``model`` at ``state``.

    Args:
        model: the animal's twin.
        state: where it stands (end of its last session).
        space: the constrained space (its base is the lab's default).
        config: sizes and seeds.
        ensemble: the animal's ensemble twin (with its components' states), used instead of
            ``model``/``state``: every rollout runs one component drawn by weight.
    """
    if ensemble is not None and ensemble.states is None:
        raise ValueError("an ensemble proposal needs each component's end state")

    seeds: list[int] = []  # of every simulation, in order: the last one is the attribution's last round

    def simulate(cands: list[Curriculum], seed: int) -> np.ndarray:
        seeds.append(seed)
        return _simulate(model, state, cands, config, seed) if ensemble is None else _simulate_ensemble(ensemble, cands, config, seed)

    base_values = space.base_values()
    base = space.build(base_values, name=space.base.name)
    values = [base_values] + sample_values(space, config.n_candidates, config.seed)
    cands = [base] + [space.build(v, name=f"candidate-{i}") for i, v in enumerate(values[1:])]
    first = simulate(cands, config.seed)
    means = first.mean(1)
    best = int(np.argmin(means))
    attr: Attribution | None = None
    chosen = base
    if best:
        # the best candidate's changes, one by one, paired by rollout; only those that help robustly stay
        def scorer(vals: list[dict[str, float | int | bool]], seed: int) -> np.ndarray:  # type: ignore[type-arg]
            return simulate([space.build(dict(v), name=f"variant-{i}") for i, v in enumerate(vals)], seed)

        attr = attribute(base_values, values[best], scorer, ModelGrid.units(config.n_rollouts), AttributionConfig(level=config.level, seed=config.seed + 2), describe_change)  # type: ignore[arg-type]
        if attr.kept:
            chosen = space.build(dict(attr.minimal), name=cands[best].name if len(attr.kept) == len(attr.changes) else f"{cands[best].name}-minimal")
    # the best of many noisy estimates is optimistic: the minimal proposal is judged against the base
    # on the attribution's last runs, fresh ones (other seeds than the candidates were chosen on)
    fresh = (attr.base_trials, attr.minimal_trials) if attr is not None and attr.kept else None
    gain = _ratio_gain(fresh[0], fresh[1], config.level, config.seed) if fresh is not None else Interval(0.0, 0.0, 0.0)
    changed = fresh is not None and gain.lo > 0
    if not changed:
        chosen = base
    by_family: tuple[FamilySpeedup, ...] = ()
    if changed and fresh is not None:
        fams = rollout_families(model, ensemble, config.n_rollouts, seeds[-1])
        by_family = family_speedups(fams, fresh[0], fresh[1], config.horizon_sessions, config.level, config.seed)
    ttc_base = fresh[0] if fresh is not None else (attr.base_trials if attr is not None and attr.base_trials.size else first[0])
    ttc_pick = fresh[1] if changed and fresh is not None else ttc_base
    start = min(state.phase, len(chosen.stimulus.phases) - 1)
    lo, hi = chosen.session_trials
    n_trials = (lo + hi) // 2
    if ensemble is None:
        fc = forecast_session(model, state, chosen, n_trials, config.forecast_rollouts, config.seed, start_phase=start)
    else:
        fc = forecast_ensemble_session(ensemble, chosen, n_trials, config.forecast_rollouts, config.seed, start_phase=start)
    horizon = f"simulated over a horizon of {config.horizon_sessions} sessions"
    if changed:
        assert attr is not None
        kept = "; ".join(c.description for c in attr.kept)
        dropped = [c for c in attr.changes if not c.kept]
        why = f"{kept}: {gain.mean:.0%} fewer expected trials to {config.criterion.name} than {base.name} (interval [{gain.lo:.0%}, {gain.hi:.0%}], {horizon})"
        if dropped:
            why += f"; left out {len(dropped)} change{'s' if len(dropped) > 1 else ''} that did not help robustly ({'; '.join(c.description for c in dropped)})"
    elif attr is not None and not attr.kept:
        why = f"kept {base.name}: none of the best candidate's {len(attr.changes)} changes helps robustly ({horizon})"
    elif best:
        why = f"kept {base.name}: the best candidate's gain ({gain.mean:.0%}, interval [{gain.lo:.0%}, {gain.hi:.0%}]) is not clearly above zero ({horizon})"
    else:
        why = f"kept {base.name}: no candidate was expected to be faster ({horizon})"
    return NextSessionProposal(
        curriculum=chosen,
        start_phase=start,
        n_trials=n_trials,
        expected_remaining=interval(ttc_pick, config.level),
        base_expected_remaining=interval(ttc_base, config.level),
        gain=gain if changed else Interval(0.0, 0.0, 0.0),
        changed=changed,
        forecast=fc,
        explanation=why,
        candidates=tuple((c.name, float(m)) for c, m in zip(cands, means)),
        attribution=attr,
        max_sessions=config.horizon_sessions,
        family_speedups=by_family,
    )


__all__ = ["NextSessionProposal", "ProposalConfig", "family_speedups", "propose_next_session", "rollout_families", "sample_candidates", "sample_values"]
