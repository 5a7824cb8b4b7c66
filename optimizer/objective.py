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
    """

    curriculum: Curriculum
    mean_trials: Interval
    median_trials: float
    mean_sessions: float
    reached: float
    per_twin: np.ndarray
    warnings: tuple[str, ...]


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
    w_min: list[torch.Tensor] = [torch.full((1,), float("inf"))] * c
    w_max: list[torch.Tensor] = [torch.full((1,), float("-inf"))] * c
    for member in pool.members:
        m = len(member.index)
        rows = [curricula[i] for i in range(c) for _ in range(m * r)]
        w0 = member.w0.repeat_interleave(r, 0).repeat(c, 1)
        lr = member.log_rate.repeat_interleave(r, 0).repeat(c, 1)
        run = simulate_training(member.model, rows, max_sessions, seed, w0=w0, log_rate=lr, criterion=criterion)
        ttc = run.trials_to_criterion.double().reshape(c, m, r)
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


__all__ = ["CurriculumScore", "FitRange", "TwinMember", "TwinPool", "bootstrap_mean", "weighted_median", "paired_reduction", "range_warnings", "score_curricula", "speedup"]
