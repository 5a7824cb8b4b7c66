"""Attribution of a proposal to its changes, and its reduction to the changes that help.

A proposal is the base protocol changed along a few axes of the search space
(:class:`optimizer.space.CurriculumSpace`); a search finds it as one bundle, and a bundle may hold
a change that alone slows animals down beside changes that speed them up. Each change is judged
through the twins, paired by animal and model (:func:`optimizer.objective.paired_speedup`):

* **drop-one**: the proposal without the change against the proposal, as the change's
  contribution ``1 - trials(proposal) / trials(proposal without it)`` (positive: it helps);
* **add-one**: the base with only that change against the base, ``1 - trials(base + it) / trials(base)``.

The proposal is then reduced to its minimal set: a change that helps robustly neither within the
bundle nor alone (neither interval above zero) is dropped at once; then, while some change's
drop-one interval does not lie above zero (it does not help robustly) or its mean contribution
is negligible (:attr:`AttributionConfig.min_contribution`), the one with the smallest
drop-one effect is dropped (with any other whose drop-one effect is not even positive on average)
and the rest re-scored; what remains helps robustly, each change given the others (so
none is harmful with the interval's confidence). Every round scores all its variants in one call
of the scorer (one tensor batch through the twins).

Pure: the scorer is passed in (:func:`optimizer.search.pool_scorer` through a pool,
:mod:`optimizer.propose` through one animal's rollouts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from optimizer.objective import ModelGrid, check_interval_settings, paired_speedup
from twin.sim.forecast import Interval

Value = float | int | bool
Values = Mapping[str, Value]

#: ``scorer(candidates, seed)`` → ``[C, P]`` expected trials to criterion of every candidate
#: (axis values) for every ``(model, unit)`` row of the attribution's grid, the same runs
#: (seeds, rows) for every candidate.
Scorer = Callable[[Sequence[Values], int], np.ndarray]

#: ``describe(axis, base value, proposed value)`` → a human description of the change.
Describe = Callable[[str, Value, Value], str]


@dataclass(frozen=True)
class AttributionConfig:
    """How changes are judged.

    Attributes:
        level: coverage of the effect intervals; a change is kept when the lower end of its
            drop-one interval is above zero (0.9: it helps with 90% confidence).
        n_boot: bootstrap resamples of each interval.
        seed: seeds the scorer's runs (round ``k`` uses ``seed + k``) and the resampling.
        min_contribution: a kept change must also contribute at least this much on average (a
            fraction of the trials: 0.005 is half a percent), so that a change whose benefit is
            real but negligible does not clutter the proposal.
    """

    level: float = 0.9
    n_boot: int = 2000
    seed: int = 0
    min_contribution: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_contribution < 1.0:
            raise ValueError(f"min_contribution must be in [0, 1), got {self.min_contribution}")
        check_interval_settings(self.level, self.n_boot)


@dataclass(frozen=True)
class ChangeEffect:
    """One change of a proposal against the base protocol, and what it does.

    Attributes:
        axis: the search-space axis.
        base_value: its value in the base protocol.
        proposed_value: its value in the proposal the search found.
        description: what the change is, in words.
        drop_one: the change's contribution given the other changes kept with it, ``1 -
            trials(with) / trials(without)`` (positive: it helps), paired interval: against the
            final minimal set for a kept change, against the set it was dropped from otherwise.
        add_one: the base with only this change against the base, paired interval.
        kept: whether the change is part of the (minimal) proposal.
        reason: why it was kept or dropped.
    """

    axis: str
    base_value: Value
    proposed_value: Value
    description: str
    drop_one: Interval
    add_one: Interval
    kept: bool
    reason: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "axis": self.axis,
            "base_value": self.base_value,
            "proposed_value": self.proposed_value,
            "description": self.description,
            "drop_one": {"mean": self.drop_one.mean, "lo": self.drop_one.lo, "hi": self.drop_one.hi},
            "add_one": {"mean": self.add_one.mean, "lo": self.add_one.lo, "hi": self.add_one.hi},
            "kept": self.kept,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Attribution:
    """A proposal decomposed into its changes and reduced to the minimal set.

    Attributes:
        changes: every change of the proposal as found, in axis order.
        minimal: the axis values of the minimal proposal (the base's where a change was dropped).
        speedup: the minimal proposal against the base in the last round's runs, paired interval.
        level: the intervals' coverage.
        rounds: scorer calls made.
        n_scored: candidates scored in all.
        base_trials: ``[P]`` the base's trials in the last round's runs (empty without changes).
        minimal_trials: ``[P]`` the minimal proposal's in the same runs (the base's when no
            change is kept).
    """

    changes: tuple[ChangeEffect, ...]
    minimal: Mapping[str, Value]
    speedup: Interval
    level: float
    rounds: int
    n_scored: int
    base_trials: np.ndarray = field(default_factory=lambda: np.zeros(0))
    minimal_trials: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def kept(self) -> tuple[ChangeEffect, ...]:
        """The changes of the minimal proposal."""
        return tuple(c for c in self.changes if c.kept)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "changes": [c.to_dict() for c in self.changes],
            "minimal": dict(self.minimal),
            "speedup": {"mean": self.speedup.mean, "lo": self.speedup.lo, "hi": self.speedup.hi},
            "level": self.level,
            "rounds": self.rounds,
            "n_scored": self.n_scored,
        }

    def table(self) -> list[str]:
        """The per-change table as text lines."""
        pct = lambda i: f"{i.mean:+.1%} [{i.lo:+.1%}, {i.hi:+.1%}]"  # noqa: E731
        out = [f"{'change':<48} {'drop-one (its contribution)':<30} {'add-one (alone)':<30} kept"]
        for c in self.changes:
            out.append(f"{c.description[:48]:<48} {pct(c.drop_one):<30} {pct(c.add_one):<30} {'yes' if c.kept else 'no: ' + c.reason}")
        return out


def _differs(a: Value, b: Value) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) != bool(b)
    return abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(b)))


def changes_of(base: Values, proposal: Values) -> tuple[str, ...]:
    """The axes on which ``proposal`` differs from ``base`` (in the proposal's order)."""
    unknown = sorted(set(proposal) - set(base))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an axis of the base values (axes: {sorted(base)})")
    return tuple(k for k, v in proposal.items() if _differs(v, base[k]))


def _with(base: Values, proposal: Values, axes: Sequence[str]) -> dict[str, Value]:
    """The base with the proposal's values on ``axes``."""
    out = dict(base)
    for k in axes:
        out[k] = proposal[k]
    return out


def _fmt(v: Value) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def default_describe(axis: str, base: Value, proposed: Value) -> str:
    """``axis base → proposed``."""
    return f"{axis} {_fmt(base)} → {_fmt(proposed)}"


def attribute(
    base: Values,
    proposal: Values,
    scorer: Scorer,
    grid: ModelGrid,
    config: AttributionConfig = AttributionConfig(),
    describe: Describe = default_describe,
) -> Attribution:
    """Judge every change of ``proposal`` against ``base`` and reduce it to the minimal set.

    Args:
        base: the base protocol's axis values.
        proposal: the proposal's axis values (axes missing from it keep the base's value).
        scorer: scores a batch of candidates, paired (see :data:`Scorer`).
        grid: the ``(model, unit)`` rows of the scorer's output.
        config: interval level, resamples, seeds.
        describe: words for a change.

    Returns:
        The attribution; its ``minimal`` values are the proposal to make (the base's values when
        no change helps robustly).
    """
    changes = changes_of(base, proposal)
    level, nb, seed, least = config.level, config.n_boot, config.seed, config.min_contribution
    zero = Interval(0.0, 0.0, 0.0)

    def helps(e: Interval) -> bool:
        return e.lo > 0 and e.mean >= least

    def score(cands: list[dict[str, Value]], k: int) -> np.ndarray:
        out = np.asarray(scorer(cands, seed + k), dtype=float)
        if out.shape[0] != len(cands):
            raise ValueError(f"the scorer returned {out.shape[0]} rows for {len(cands)} candidates")
        return out

    if not changes:
        return Attribution((), dict(base), zero, level, 0, 0)
    # round 0: base, proposal, every drop-one and add-one variant, in one batch
    k = len(changes)
    cands = [dict(base), _with(base, proposal, changes)]
    cands += [_with(base, proposal, [c for c in changes if c != d]) for d in changes]
    cands += [_with(base, proposal, [a]) for a in changes]
    t = score(cands, 0)
    n_scored, rounds = len(cands), 1
    add_one = {a: paired_speedup(grid, t[0], t[2 + k + i], level, nb, seed) for i, a in enumerate(changes)}
    drop_one = {d: paired_speedup(grid, t[2 + i], t[1], level, nb, seed) for i, d in enumerate(changes)}
    speed = paired_speedup(grid, t[0], t[1], level, nb, seed)
    current = list(changes)
    dropped: dict[str, str] = {}

    def drop(c: str, others: int, alone: bool = False) -> None:
        e = drop_one[c]
        verdict = "harmful" if e.hi < 0 else "no robust benefit" if e.lo <= 0 else "negligible"
        test = f"is not above zero at {level:.0%}" if e.lo <= 0 else f"is below the {least:.1%} that counts"
        dropped[c] = f"{verdict}: its contribution {e.mean:+.1%} [{e.lo:+.1%}, {e.hi:+.1%}] {test}" + (
            f" (with {others} other change{'s' if others != 1 else ''})" if others else ""
        ) + (", nor alone" if alone else "")
        current.remove(c)

    # a change that helps robustly neither within the bundle nor alone goes at once (it has no
    # interaction to lose); the others one at a time, the weakest first, re-scoring in between
    for c in [c for c in current if not helps(drop_one[c]) and not helps(add_one[c])]:
        drop(c, k - 1, alone=True)
    stale = bool(dropped)
    while current:
        if stale:  # the reduced set against each of its drop-one variants, and against the base
            cands = [dict(base), _with(base, proposal, current)] + [_with(base, proposal, [c for c in current if c != d]) for d in current]
            t = score(cands, rounds)
            n_scored += len(cands)
            rounds += 1
            speed = paired_speedup(grid, t[0], t[1], level, nb, seed)
            for i, d in enumerate(current):
                drop_one[d] = paired_speedup(grid, t[2 + i], t[1], level, nb, seed)
        weak = [c for c in current if not helps(drop_one[c])]
        if not weak:
            break
        # the weakest goes, and with it every change whose contribution is not even positive on average
        worst = min(weak, key=lambda c: (drop_one[c].mean, drop_one[c].lo))
        others = len(current) - 1
        for c in [c for c in weak if c == worst or drop_one[c].mean <= least]:
            drop(c, others)
        stale = True
    last_base, last_minimal = t[0], t[1]
    if not current:
        speed, last_minimal = zero, t[0]
    records = []
    for c in changes:
        kept = c in current
        why = dropped.get(c, f"helps: its contribution {drop_one[c].mean:+.1%} [{drop_one[c].lo:+.1%}, {drop_one[c].hi:+.1%}] is above zero at {level:.0%} (and at least {least:.1%})")
        records.append(ChangeEffect(c, base[c], proposal[c], describe(c, base[c], proposal[c]), drop_one[c], add_one[c], kept, why))
    return Attribution(tuple(records), _with(base, proposal, current), speed, level, rounds, n_scored, last_base, last_minimal)


__all__ = ["Attribution", "AttributionConfig", "ChangeEffect", "Describe", "Scorer", "attribute", "changes_of", "default_describe"]
