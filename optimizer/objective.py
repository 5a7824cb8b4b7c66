"""The optimizer's objective: expected trials to a training criterion, simulated through twins.

Every candidate curriculum is run by every twin of a :class:`TwinPool` (each ensemble member,
several rollouts each) in one tensor batch per member (see :func:`twin.sim.training.simulate_training`).
A run that does not reach the criterion within ``max_sessions`` counts the trials it did (the
cap). The score of a curriculum is the mean over twins of each twin's expected capped trials, with
a bootstrap interval over twins (the animals are the sampling unit); speed-ups against the default
are paired by twin. An animal's twin that is an ensemble (:class:`~twin.models.ensemble.TwinEnsemble`)
runs every component (above a weight floor) and weights their rollouts by the ensemble's weights:
the expectation that drawing one component per rollout estimates, without that draw's noise.

Twins are only trusted within the inputs they were fitted on: a result carries warnings when a
curriculum shows contrasts or session lengths the twins never saw, or drives their weights well
outside the range visited on their own data.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.protocol import Curriculum
from twin.data.batch import make_batch
from twin.analysis.criteria import TRAINED_1A, CriterionConfig
from twin.sim.forecast import Interval
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel
from twin.models.params import TwinModel, stack_params
from twin.sim.training import simulate_training


@dataclass(frozen=True)
class TwinMember:
    """Twins that share one rule network, with per-animal starting weights and rate multipliers.

    Attributes:
        model: the shared structure and rule (the first twin's learner).
        index: ``[N]`` positions of these twins in the pool's subject list.
        w0: ``[N, K]`` initial weights.
        log_rate: ``[N, K]`` log learning-rate multipliers.
        weight: ``[N]`` float64 weight of each twin within its animal's ensemble (an animal's
            weights over all members sum to 1).
    """

    model: LearnerModel
    index: torch.Tensor
    w0: torch.Tensor
    log_rate: torch.Tensor
    weight: torch.Tensor


@dataclass(frozen=True)
class FitRange:
    """The inputs the twins were fitted on.

    Attributes:
        contrasts: unsigned contrasts shown in the fitted data.
        session_trials: shortest and longest fitted session.
        w_low: ``[K]`` smallest weights along the twins' fitted trajectories.
        w_high: ``[K]`` largest.
    """

    contrasts: tuple[float, ...]
    session_trials: tuple[int, int]
    w_low: torch.Tensor
    w_high: torch.Tensor

    @classmethod
    def from_trials(cls, twins: dict[str, LearnerModel], trials: pd.DataFrame) -> "FitRange":
        """The range of ``trials`` (the twins' own data) and of the twins' trajectories along it."""
        contrasts = tuple(sorted({round(float(c), 6) for c in (trials["contrast_left"] + trials["contrast_right"])}, reverse=True))
        lengths = trials.groupby(["subject", "session"]).size()
        lows, highs = [], []
        for subject, model in twins.items():
            sub = trials[trials["subject"] == subject]
            if sub.empty:
                continue
            with torch.no_grad():
                traj = model.trajectory(make_batch(sub, model.spec.features))[0]
            lows.append(traj.min(0).values)
            highs.append(traj.max(0).values)
        if not lows:
            raise ValueError("none of the twins' subjects is in the trials table")
        return cls(contrasts, (int(lengths.min()), int(lengths.max())), torch.stack(lows).min(0).values, torch.stack(highs).max(0).values)


@dataclass(frozen=True)
class TwinPool:
    """The twins a search simulates through: ``N`` animals, one or more models each.

    Attributes:
        subjects: the ``N`` animals.
        members: groups of twins over the same population rule (an ensemble of population fits
            gives one member per fit; fully fine-tuned twins one member each).
        fit_range: what the twins were fitted on (None: no range checks).
    """

    subjects: tuple[str, ...]
    members: tuple[TwinMember, ...]
    fit_range: FitRange | None = None

    @classmethod
    def from_twins(
        cls, twins: dict[str, Sequence[TwinModel]], fit_range: FitRange | None = None, weights: Mapping[str, Sequence[float]] | None = None
    ) -> "TwinPool":
        """Group twins (``subject -> its ensemble of twins``) by the population rule they reference.

        Args:
            twins: each animal's twins.
            fit_range: what they were fitted on.
            weights: each animal's weights of its twins (normalised per animal); None: equal.
        """
        subjects = tuple(twins)
        groups: dict[str, list[tuple[int, TwinModel, float]]] = {}
        for i, s in enumerate(subjects):
            if not twins[s]:
                raise ValueError(f"subject {s!r} has no twin")
            ws = [1.0] * len(twins[s]) if weights is None or s not in weights else [float(v) for v in weights[s]]
            if len(ws) != len(twins[s]) or min(ws) < 0 or sum(ws) <= 0:
                raise ValueError(f"subject {s!r}: {len(twins[s])} twins need as many non-negative weights with a positive sum")
            for t, w in zip(twins[s], ws):
                groups.setdefault(t.params.rule, []).append((i, t, w / sum(ws)))
        members = []
        for items in groups.values():
            w0, log_rate = stack_params([t.params for _, t, _ in items])
            weight = torch.tensor([w for _, _, w in items], dtype=torch.float64)
            members.append(TwinMember(model=items[0][1].model, index=torch.tensor([i for i, _, _ in items]), w0=w0, log_rate=log_rate, weight=weight))
        return cls(subjects, tuple(members), fit_range)

    @classmethod
    def from_ensembles(cls, ensembles: dict[str, TwinEnsemble], fit_range: FitRange | None = None, min_weight: float = 0.01) -> "TwinPool":
        """The pool of animals' ensemble twins: each component whose weight is at least
        ``min_weight`` (the largest one always), weighted by its renormalised weight."""
        twins: dict[str, list[TwinModel]] = {}
        weights: dict[str, list[float]] = {}
        for s, ens in ensembles.items():
            keep = [k for k in range(ens.n_components) if float(ens.weights[k]) >= min_weight or k == ens.main]
            twins[s] = [ens.components[k] for k in keep]
            weights[s] = [float(ens.weights[k]) for k in keep]
        return cls.from_twins(twins, fit_range, weights)

    @property
    def n_models(self) -> int:
        return sum(len(m.index) for m in self.members)

    def grid(self) -> "ModelGrid":
        """Which animal and rule family each ``(model, animal)`` result of a score belongs to."""
        subject = np.concatenate([m.index.numpy() for m in self.members])
        weight = np.concatenate([m.weight.numpy() for m in self.members])
        family = tuple(m.model.spec.rule for m in self.members for _ in range(len(m.index)))
        return ModelGrid.of(subject, weight, family, len(self.subjects))


@dataclass(frozen=True)
class CurriculumScore:
    """A curriculum's simulated trials to criterion through the twins.

    Attributes:
        curriculum: the candidate.
        mean_trials: mean over twins of capped trials to criterion, with a bootstrap interval.
        median_trials: median over every rollout.
        mean_sessions: mean sessions to criterion (capped).
        reached: fraction of rollouts that reached the criterion.
        per_twin: ``[N]`` each twin's mean capped trials (over its models and rollouts).
        warnings: where the curriculum leaves the twins' fitted range.
        per_model: ``[P]`` mean capped trials of each ``(model, animal)`` pair over its
            rollouts, in the order of :meth:`TwinPool.grid` (members in order, each member's
            animals in order).
        max_sessions: the sessions cap the runs were simulated with.
    """

    curriculum: Curriculum
    mean_trials: Interval
    median_trials: float
    mean_sessions: float
    reached: float
    per_twin: np.ndarray
    warnings: tuple[str, ...]
    per_model: np.ndarray
    max_sessions: int


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> float:
    """The smallest value at which the cumulative weight reaches half the total (``[N]`` each)."""
    order = torch.argsort(values)
    cum = torch.cumsum(weights.double()[order], 0)
    return float(values[order][int(torch.searchsorted(cum, 0.5 * cum[-1]))])


def bootstrap_mean(values: np.ndarray, level: float, n_boot: int, seed: int) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return Interval(float(v.mean()), float(lo), float(hi))


def range_warnings(curriculum: Curriculum, fit_range: FitRange | None, w_min: torch.Tensor, w_max: torch.Tensor, margin: float = 0.25) -> tuple[str, ...]:
    """Ways in which a curriculum drove twins outside their fitted range."""
    if fit_range is None:
        return ()
    out = []
    new = sorted(set(curriculum.contrasts) - set(fit_range.contrasts))
    if new:
        out.append(f"contrasts {new} were never shown to the animals the twins were fitted on")
    lo, hi = curriculum.session_trials
    if lo < fit_range.session_trials[0] or hi > fit_range.session_trials[1]:
        out.append(f"session lengths {curriculum.session_trials} outside the fitted range {fit_range.session_trials}")
    span = (fit_range.w_high - fit_range.w_low).clamp(min=1e-6)
    below = (fit_range.w_low - w_min) / span
    above = (w_max - fit_range.w_high) / span
    worst = float(torch.maximum(below, above).max())
    if worst > margin:
        out.append(f"weights left the fitted range by {worst:.0%} of its span")
    return tuple(out)


def score_curricula(
    pool: TwinPool,
    curricula: Sequence[Curriculum],
    n_rollouts: int = 8,
    max_sessions: int = 40,
    seed: int = 0,
    criterion: CriterionConfig = TRAINED_1A,
    level: float = 0.95,
    n_boot: int = 2000,
) -> list[CurriculumScore]:
    """Simulate every curriculum through every twin; one batch per ensemble member.

    Args:
        pool: the twins.
        curricula: the candidates (``C``).
        n_rollouts: runs per twin, model and curriculum.
        max_sessions: sessions cap (runs that never reach the criterion count their trials).
        seed: seeds the runs (the same for every member).
        criterion: what "trained" means.
        level: interval coverage.
        n_boot: bootstrap resamples.

    Returns:
        One score per curriculum, in order (means, fractions and medians over an animal's
        rollouts weighted by its twins' ensemble weights).
    """
    if not curricula:
        raise ValueError("no curricula to score")
    c, n, r = len(curricula), len(pool.subjects), n_rollouts
    trials_sum = torch.zeros(c, n, dtype=torch.float64)
    counts = torch.zeros(c, n, dtype=torch.float64)
    all_trials: list[list[torch.Tensor]] = [[] for _ in range(c)]
    all_weights: list[list[torch.Tensor]] = [[] for _ in range(c)]
    sessions = torch.zeros(c, dtype=torch.float64)
    reached = torch.zeros(c, dtype=torch.float64)
    rows_total = torch.zeros(c, dtype=torch.float64)
    per_model: list[torch.Tensor] = []  # [C, M] per member
    w_min: list[torch.Tensor] = [torch.full((1,), float("inf"))] * c
    w_max: list[torch.Tensor] = [torch.full((1,), float("-inf"))] * c
    for member in pool.members:
        m = len(member.index)
        rows = [curricula[i] for i in range(c) for _ in range(m * r)]
        w0 = member.w0.repeat_interleave(r, 0).repeat(c, 1)
        lr = member.log_rate.repeat_interleave(r, 0).repeat(c, 1)
        run = simulate_training(member.model, rows, max_sessions, seed, w0=w0, log_rate=lr, criterion=criterion)
        ttc = run.trials_to_criterion.double().reshape(c, m, r)
        per_model.append(ttc.mean(2))
        wm = member.weight.reshape(1, m)  # each model's weight in its animal's ensemble
        trials_sum.index_add_(1, member.index, ttc.sum(2) * wm)
        counts.index_add_(1, member.index, (r * wm).expand(c, m).contiguous())
        row_w = member.weight.repeat_interleave(r).reshape(1, m * r)  # [1, M * R] per rollout
        sess = run.sessions_to_criterion.double().reshape(c, m * r) * row_w
        got = run.reached.double().reshape(c, m * r) * row_w
        for i in range(c):
            all_trials[i].append(ttc[i].reshape(-1))
            all_weights[i].append(row_w[0])
            sl = slice(i * m * r, (i + 1) * m * r)
            w_min[i] = torch.minimum(w_min[i], run.w_min[sl].min(0).values) if w_min[i].numel() > 1 else run.w_min[sl].min(0).values
            w_max[i] = torch.maximum(w_max[i], run.w_max[sl].max(0).values) if w_max[i].numel() > 1 else run.w_max[sl].max(0).values
        sessions += sess.sum(1)
        reached += got.sum(1)
        rows_total += float(row_w.sum())
    per_twin = (trials_sum / counts).numpy()
    by_model = torch.cat(per_model, 1).numpy()
    out = []
    for i, cur in enumerate(curricula):
        out.append(
            CurriculumScore(
                curriculum=cur,
                mean_trials=bootstrap_mean(per_twin[i], level, n_boot, seed),
                median_trials=weighted_median(torch.cat(all_trials[i]), torch.cat(all_weights[i])),
                mean_sessions=float(sessions[i] / rows_total[i]),
                reached=float(reached[i] / rows_total[i]),
                per_twin=per_twin[i],
                warnings=range_warnings(cur, pool.fit_range, w_min[i], w_max[i]),
                per_model=by_model[i],
                max_sessions=max_sessions,
            )
        )
    return out


def paired_reduction(default: np.ndarray, other: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """``1 - mean(other) / mean(default)`` over the same units (twins, animals), with a bootstrap
    interval that resamples the same units for both."""
    a, b = np.asarray(default, dtype=float), np.asarray(other, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    boots = 1 - b[idx].mean(1) / a[idx].mean(1)
    q = (1 - level) / 2
    lo, hi = np.quantile(boots, [q, 1 - q])
    return Interval(float(1 - b.mean() / a.mean()), float(lo), float(hi))


def speedup(default: CurriculumScore, other: CurriculumScore, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Relative reduction of mean trials to criterion, ``1 - other / default``, paired by twin."""
    return paired_reduction(default.per_twin, other.per_twin, level, n_boot, seed)


# -- the robust objective: over every model of the ensemble, not only their average -----------


class RiskStatistic(enum.Enum):
    """What a search ranks candidates by (their speed-up against the base, paired)."""

    MEAN = "mean"
    """The expected speed-up: ``1 - mean trials / base mean trials`` over animals, each animal's
    models averaged by their ensemble weights."""
    LOWER_QUANTILE = "lower_quantile"
    """A low quantile of the speed-ups of every ``(model, animal)`` pair (model weights
    respected): a curriculum that only one model of the ensemble believes in scores low."""


@dataclass(frozen=True)
class RobustConfig:
    """How candidates are judged against the base over the ensemble.

    Attributes:
        statistic: what candidates are ranked and chosen by.
        quantile: the quantile of :attr:`RiskStatistic.LOWER_QUANTILE` (0.1: the lower decile).
        level: coverage of the speed-up intervals.
        n_boot: bootstrap resamples.
    """

    statistic: RiskStatistic = RiskStatistic.LOWER_QUANTILE
    quantile: float = 0.1
    level: float = 0.9
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        check_interval_settings(self.level, self.n_boot)


def check_interval_settings(level: float, n_boot: int) -> None:
    """The checks of a bootstrap interval's settings (every config that has them).

    Raises:
        ValueError: ``level`` outside (0, 1) or ``n_boot`` < 1.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


@dataclass(frozen=True)
class ModelGrid:
    """Where the ``P`` per-``(model, animal)`` results of a score (:attr:`CurriculumScore.per_model`)
    sit on the ``N`` animals (the sampling units), ``D`` models at most per animal.

    Attributes:
        slot: ``[N, D]`` int, the row of each animal's ``d``-th model in a per-model array (-1: none).
        weight: ``[N, D]`` that model's weight in its animal's ensemble (rows sum to 1; 0 where none).
        family: the rule family (rule name) of each of the ``P`` rows.
    """

    slot: np.ndarray
    weight: np.ndarray
    family: tuple[str, ...]

    @classmethod
    def of(cls, subject: np.ndarray, weight: np.ndarray, family: Sequence[str], n_units: int) -> "ModelGrid":
        """The grid of ``P`` rows: row ``p`` is a model of unit ``subject[p]`` of weight ``weight[p]``
        (normalised per unit) and rule family ``family[p]``."""
        subject = np.asarray(subject, dtype=int).reshape(-1)
        w = np.asarray(weight, dtype=float).reshape(-1)
        if not len(subject) == len(w) == len(family):
            raise ValueError(f"{len(subject)} rows need as many weights and families, got {len(w)} and {len(family)}")
        counts = np.bincount(subject, minlength=n_units)
        if len(counts) != n_units or (counts == 0).any():
            raise ValueError(f"every one of the {n_units} units needs at least one model")
        d = int(counts.max())
        slot = np.full((n_units, d), -1, dtype=int)
        ws = np.zeros((n_units, d))
        fill = np.zeros(n_units, dtype=int)
        for p, (i, v) in enumerate(zip(subject, w)):
            slot[i, fill[i]], ws[i, fill[i]] = p, v
            fill[i] += 1
        total = ws.sum(1, keepdims=True)
        if (total <= 0).any():
            raise ValueError("every unit's model weights need a positive sum")
        return cls(slot, ws / total, tuple(family))

    @classmethod
    def units(cls, n: int, family: str = "") -> "ModelGrid":
        """``n`` units of one model each (the rollouts of one animal's twin, say)."""
        return cls.of(np.arange(n), np.ones(n), (family,) * n, n)

    @property
    def n_units(self) -> int:
        return int(self.slot.shape[0])

    def families(self) -> tuple[str, ...]:
        """The rule families, in order of first appearance."""
        return tuple(dict.fromkeys(self.family))

    def gather(self, per_model: np.ndarray) -> np.ndarray:
        """``[..., P]`` per-model values as ``[..., N, D]`` (0 where a unit has no ``d``-th model)."""
        x = np.asarray(per_model, dtype=float)
        return np.where(self.slot >= 0, x[..., np.maximum(self.slot, 0)], 0.0)

    def per_unit(self, per_model: np.ndarray) -> np.ndarray:
        """``[..., P]`` → ``[..., N]`` each unit's weighted mean over its models."""
        return (self.gather(per_model) * self.weight).sum(-1)

    def restrict(self, family: str) -> "ModelGrid | None":
        """The grid of the units that have a model of ``family``, over those models only (None: no unit has one)."""
        units, weights, rows = [], [], []
        for i in range(self.n_units):
            for d in range(self.slot.shape[1]):
                p = int(self.slot[i, d])
                if p >= 0 and self.family[p] == family:
                    units.append(i)
                    weights.append(max(float(self.weight[i, d]), 1e-12))
                    rows.append(p)
        if not rows:
            return None
        kept = sorted(set(units))
        local = {u: k for k, u in enumerate(kept)}
        sub = ModelGrid.of(np.array([local[u] for u in units]), np.array(weights), [family] * len(rows), len(kept))
        return ModelGrid(np.where(sub.slot >= 0, np.array(rows)[np.maximum(sub.slot, 0)], -1), sub.weight, self.family)


@dataclass(frozen=True)
class FamilySpeedup:
    """A candidate's speed-up predicted by the models of one rule family.

    Attributes:
        family: the rule name (``dnn``, ``gru``, ...).
        speedup: ``1 - mean trials / base mean trials`` over the animals that have a model of
            this family (their models of it averaged by weight), bootstrap over those animals
            and models.
        n_units: animals (units) with a model of this family.
        level: coverage of ``speedup``'s interval.
    """

    family: str
    speedup: Interval
    n_units: int
    level: float = 0.9


@dataclass(frozen=True)
class RobustSpeedup:
    """A candidate against the base, judged over every model of the ensemble.

    Attributes:
        speedup: the expected speed-up, with an interval that resamples animals and, within each
            animal, its models by their weights (model disagreement widens it).
        lower_quantile: the ``quantile`` of the paired speed-ups of every ``(model, animal)`` pair.
        quantile: which quantile.
        by_family: the speed-up each rule family predicts.
        max_sessions: the sessions cap of the simulations behind it.
    """

    speedup: Interval
    lower_quantile: float
    quantile: float
    by_family: tuple[FamilySpeedup, ...]
    max_sessions: int

    def value(self, statistic: RiskStatistic) -> float:
        """The figure a search ranks by (larger is better)."""
        return self.speedup.mean if statistic is RiskStatistic.MEAN else self.lower_quantile

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "speedup": {"mean": self.speedup.mean, "lo": self.speedup.lo, "hi": self.speedup.hi},
            "lower_quantile": self.lower_quantile,
            "quantile": self.quantile,
            "by_family": [{"family": f.family, "mean": f.speedup.mean, "lo": f.speedup.lo, "hi": f.speedup.hi, "n_units": f.n_units, "level": f.level} for f in self.by_family],
            "max_sessions": self.max_sessions,
        }


def paired_speedup(grid: ModelGrid, reference: np.ndarray, other: np.ndarray, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> Interval:
    """``1 - mean(other) / mean(reference)`` over the grid's units (each unit's models averaged
    by weight), with a two-level paired bootstrap: units are resampled, then each resampled
    unit's models are redrawn by their weights (as many draws as it has models), the same draws
    for both.

    Args:
        grid: the units and their models.
        reference: ``[P]`` per-model trials under the reference (the base).
        other: ``[P]`` the same under the other curriculum.
        level: coverage.
        n_boot: resamples.
        seed: seeds the resampling.
    """
    a, b = grid.gather(reference), grid.gather(other)  # [N, D]
    w = grid.weight
    point = float(1 - (b * w).sum(1).mean() / max((a * w).sum(1).mean(), 1e-12))
    n, d = grid.slot.shape
    rng = np.random.default_rng(seed)
    cw = np.cumsum(w, 1)
    cw[:, -1] = np.inf
    n_models = (grid.slot >= 0).sum(1)
    boots = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(1, n * d * d))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        ia = rng.integers(0, n, (k, n))  # [k, N]
        if d == 1:
            ua, ub = a[ia, 0], b[ia, 0]
        else:
            u = rng.random((k, n, d))
            pick = np.minimum((u[..., None] >= cw[ia][:, :, None, :]).sum(-1), d - 1)  # [k, N, D]
            valid = np.arange(d)[None, None, :] < n_models[ia][..., None]
            cnt = valid.sum(-1)
            ua = (a[ia[..., None], pick] * valid).sum(-1) / cnt
            ub = (b[ia[..., None], pick] * valid).sum(-1) / cnt
        boots[start : start + k] = 1 - ub.mean(1) / np.maximum(ua.mean(1), 1e-12)
    q = (1 - level) / 2
    lo, hi = np.quantile(boots, [q, 1 - q])
    return Interval(point, float(min(lo, point)), float(max(hi, point)))


def lower_quantile_speedup(grid: ModelGrid, reference: np.ndarray, other: np.ndarray, quantile: float) -> float:
    """The weighted ``quantile`` of ``1 - other / reference`` over every ``(model, animal)`` pair
    (each animal weighs 1 in all, shared among its models by their weights)."""
    a, b = grid.gather(reference), grid.gather(other)
    valid = grid.slot >= 0
    r = (1 - b / np.maximum(a, 1e-12))[valid]
    wt = grid.weight[valid]
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(wt[order])
    return float(r[order][min(int(np.searchsorted(cum, quantile * cum[-1])), len(r) - 1)])


def robust_speedup(grid: ModelGrid, reference: np.ndarray, other: np.ndarray, max_sessions: int, config: RobustConfig = RobustConfig(), seed: int = 0) -> RobustSpeedup:
    """``other`` against ``reference`` (``[P]`` per-model trials each) over every model: the
    two-level interval, the lower quantile and the speed-up each rule family predicts."""
    fams = []
    for f in grid.families():
        sub = grid.restrict(f)
        if sub is not None:
            fams.append(FamilySpeedup(f, paired_speedup(sub, reference, other, config.level, config.n_boot, seed), sub.n_units, config.level))
    return RobustSpeedup(
        speedup=paired_speedup(grid, reference, other, config.level, config.n_boot, seed),
        lower_quantile=lower_quantile_speedup(grid, reference, other, config.quantile),
        quantile=config.quantile,
        by_family=tuple(fams),
        max_sessions=max_sessions,
    )


__all__ = [
    "CurriculumScore",
    "check_interval_settings",
    "FamilySpeedup",
    "FitRange",
    "ModelGrid",
    "RiskStatistic",
    "RobustConfig",
    "RobustSpeedup",
    "TwinMember",
    "TwinPool",
    "bootstrap_mean",
    "lower_quantile_speedup",
    "paired_reduction",
    "paired_speedup",
    "range_warnings",
    "robust_speedup",
    "score_curricula",
    "speedup",
    "weighted_median",
]
