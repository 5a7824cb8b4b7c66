"""Forecasts of a twin's next session under a planned protocol, with intervals.

The twin continues from its state at the end of its animal's last session: ``n_rollouts``
copies run the planned session in one batch (stimuli drawn by the protocol, whose advancement
and debiasing react to the simulated choices; choices sampled from the policy; the twin's rule
updates the weights). Every summary is computed per rollout and reported as the mean across
rollouts with an equal-tailed interval, so it carries both the twin's own randomness and the
finite number of trials. An ensemble twin's forecast (:func:`forecast_ensemble_session`) draws a
component per rollout by the ensemble's weights, so its intervals also hold the uncertainty
between its rules, seeds and bootstraps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from twin.data.features import FeatureSpec
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel
from twin.models.state import TwinState
from twin.protocol import Curriculum
from twin.sim.simulate import Rollout, run_task
from twin.sim.task import TaskEnv


@dataclass(frozen=True)
class Interval:
    """A mean with an equal-tailed interval across rollouts."""

    mean: float
    lo: float
    hi: float

    @property
    def width(self) -> float:
        return self.hi - self.lo


def interval(values: np.ndarray, level: float) -> Interval:
    """Mean and the central ``level`` interval of ``values`` (NaNs ignored; NaN when empty)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return Interval(float(v.mean()), float(lo), float(hi))


@dataclass(frozen=True)
class SessionForecast:
    """A twin's predicted next session.

    Attributes:
        accuracy: fraction of rewarded trials.
        by_contrast: ``(unsigned contrast, accuracy)`` for each contrast shown.
        psychometric: ``(signed contrast, p(right))``, right positive, the policy averaged over
            the session's weights (history regressors at zero).
        learning_curve: ``(last trial of the bin, accuracy in the bin)``.
        end_phase: protocol phase reached at the end of the session.
        n_trials: trials in the planned session.
        n_rollouts: simulated copies.
        level: interval coverage.
    """

    accuracy: Interval
    by_contrast: tuple[tuple[float, Interval], ...]
    psychometric: tuple[tuple[float, Interval], ...]
    learning_curve: tuple[tuple[int, Interval], ...]
    end_phase: Interval
    n_trials: int
    n_rollouts: int
    level: float


@torch.no_grad()
def forecast_session(
    model: LearnerModel,
    state: TwinState,
    protocol: Curriculum,
    n_trials: int,
    n_rollouts: int = 200,
    seed: int = 0,
    start_phase: int | None = None,
    interval_level: float = 0.9,
    bin_size: int = 50,
) -> SessionForecast:
    """Simulate the twin's next session ``n_rollouts`` times and summarise it.

    Args:
        model: the twin.
        state: its end-of-last-session state.
        protocol: the planned session's mechanics.
        n_trials: trials in the session.
        n_rollouts: simulated copies (one batch).
        seed: seeds stimuli and choices.
        start_phase: protocol phase to start in; default the state's phase (clipped to the
            protocol's phases).
        interval_level: coverage of the intervals.
        bin_size: trials per learning-curve bin.

    Raises:
        ValueError: non-positive sizes or a level outside (0, 1).
    """
    _check_sizes(n_trials, n_rollouts, interval_level, bin_size)
    phase = _start_phase(state, protocol, start_phase)
    g = torch.Generator().manual_seed(int(seed))
    run = _run_session(model, state, protocol, n_trials, n_rollouts, g, phase)
    return summarise_session(run, model.spec.features, protocol, phase, interval_level, bin_size)


def _check_sizes(n_trials: int, n_rollouts: int, interval_level: float, bin_size: int) -> None:
    if n_trials < 1 or n_rollouts < 1 or bin_size < 1:
        raise ValueError("n_trials, n_rollouts and bin_size must be >= 1")
    if not 0.0 < interval_level < 1.0:
        raise ValueError(f"interval_level must be in (0, 1), got {interval_level}")


def _start_phase(state: TwinState, protocol: Curriculum, start_phase: int | None) -> int:
    """The phase to start in: ``start_phase``, else the state's, clipped to the protocol's phases."""
    phase = state.phase if start_phase is None else start_phase
    return int(min(max(phase, 0), len(protocol.stimulus.phases) - 1))


def _run_session(model: LearnerModel, state: TwinState, protocol: Curriculum, n_trials: int, n_rollouts: int, g: torch.Generator, phase: int) -> Rollout:
    """``n_rollouts`` copies of the twin running one session from ``state`` (one batch)."""
    env = TaskEnv(protocol, n_rollouts, g, start_phase=phase)
    starts = torch.zeros(n_rollouts, n_trials, dtype=torch.bool)
    starts[:, 0] = True
    w = state.w.reshape(1, -1).expand(n_rollouts, -1)
    h = state.h.reshape(1, -1).expand(n_rollouts, -1).clone()
    return run_task(model, env, starts, g, w, h)


@torch.no_grad()
def forecast_ensemble_session(
    ensemble: TwinEnsemble,
    protocol: Curriculum,
    n_trials: int,
    n_rollouts: int = 200,
    seed: int = 0,
    start_phase: int | None = None,
    interval_level: float = 0.9,
    bin_size: int = 50,
) -> SessionForecast:
    """:func:`forecast_session` of an ensemble twin: each rollout first draws one component by
    the ensemble's weights, then runs that component from its own end state (the rollouts of one
    component in one batch), so the intervals hold the between-component spread as well as each
    component's rollout noise.

    Args:
        ensemble: the twin; its ``states`` say where each component continues from.
        protocol, n_trials, n_rollouts, seed, start_phase, interval_level, bin_size: as
            :func:`forecast_session` (the start phase defaults to the largest-weight component's).

    Raises:
        ValueError: the ensemble has no states, or bad sizes.
    """
    _check_sizes(n_trials, n_rollouts, interval_level, bin_size)
    if ensemble.states is None:
        raise ValueError("an ensemble forecast needs each component's end state")
    phase = _start_phase(ensemble.states[ensemble.main], protocol, start_phase)
    g = torch.Generator().manual_seed(int(seed))
    drawn = torch.bincount(ensemble.sample(n_rollouts, g), minlength=ensemble.n_components).tolist()
    runs = [_run_session(c.model, st, protocol, n_trials, n, g, phase) for c, st, n in zip(ensemble.components, ensemble.states, drawn) if n > 0]
    # the components' rule states differ in size: the joined run keeps none (no summary uses it)
    joined = {f.name: torch.cat([getattr(r, f.name) for r in runs]) for f in fields(Rollout) if f.name != "final_h"}
    run = Rollout(**joined, final_h=torch.zeros(n_rollouts, 0))
    return summarise_session(run, ensemble.features, protocol, phase, interval_level, bin_size)


def summarise_session(run: Rollout, features: FeatureSpec, protocol: Curriculum, phase: int, interval_level: float = 0.9, bin_size: int = 50) -> SessionForecast:
    """The :class:`SessionForecast` of ``R`` simulated copies of one session (``run``: ``[R, T]``
    tensors, weights recorded) started in ``phase`` of ``protocol``."""
    n_rollouts, n_trials = run.reward.shape
    r = run.reward.numpy()
    contrast = (run.contrast_left + run.contrast_right).numpy()
    by_contrast = []
    for c in sorted({round(float(v), 6) for v in np.unique(contrast)}, reverse=True):
        sel = np.isclose(contrast, c)
        acc = np.where(sel.any(1), (r * sel).sum(1) / np.maximum(sel.sum(1), 1), np.nan)
        by_contrast.append((c, interval(acc, interval_level)))
    shown = sorted({c for ph in protocol.stimulus.phases[phase:] for c in ph})
    signed = sorted({-c for c in shown} | set(shown))
    sc = torch.tensor(signed, dtype=torch.float32)
    x = features.compute(
        (-sc).clamp(min=0), sc.clamp(min=0), torch.zeros_like(sc), torch.zeros_like(sc)
    )  # [C, K]
    p = torch.sigmoid(run.weights @ x.T).mean(1).numpy()  # [R, C]
    psychometric = tuple((float(c), interval(p[:, i], interval_level)) for i, c in enumerate(signed))
    curve = []
    for end in range(bin_size, n_trials + bin_size, bin_size):
        end = min(end, n_trials)
        curve.append((end, interval(r[:, end - bin_size if end - bin_size >= 0 else 0 : end].mean(1), interval_level)))
        if end == n_trials:
            break
    return SessionForecast(
        accuracy=interval(r.mean(1), interval_level),
        by_contrast=tuple(by_contrast),
        psychometric=psychometric,
        learning_curve=tuple(curve),
        end_phase=interval(run.phase[:, -1].numpy().astype(float), interval_level),
        n_trials=n_trials,
        n_rollouts=n_rollouts,
        level=interval_level,
    )


__all__ = ["Interval", "SessionForecast", "forecast_ensemble_session", "forecast_session", "interval", "summarise_session"]
