"""PsyTrack as a forecasting baseline (Roy, Bak, Akrami, Brody & Pillow, Neuron 2021).

PsyTrack describes an animal's choices with weights that follow a Gaussian random walk
(per-weight step size ``sigma``; a larger step ``sigDay`` at session boundaries), fitted by MAP
with hyperparameters chosen by the Laplace-approximated evidence. It has no learning rule, so it
cannot forecast learning: the forecast of later sessions here is the last fitted trial's weights
carried forward unchanged (what a lab using PsyTrack would have for the next session).

The ``psytrack`` package is an optional dependency (``pip install psytrack==2.0.2``); importing
this module works without it and :func:`require_psytrack` raises a clear
:class:`PsyTrackMissingError` when it is needed and absent.

Traps handled here (see the project brief):

* PsyTrack codes choices ``y`` as 1/2 (2 = the choice whose probability is ``sigmoid(g · w)``,
  here "right"); it silently recodes 0/1 *in place* inside the fit. This adapter passes a fresh
  1/2 array.
* Its cross-validation wants the trial count divisible by the number of folds; this adapter fits
  on whole earlier sessions and scores later ones, so PsyTrack's cross-validation is not used.
* It treats an input named ``bias`` specially (a column of ones) and orders weights
  alphabetically; the adapter names its inputs ``f00_<name>``, ``f01_<name>``... so the order is
  the caller's and every column, the bias included, is passed explicitly.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pandas as pd

from twin.data.batch import TrialBatch
from twin.errors import TwinError

#: the release this adapter was written and tested against.
PSYTRACK_VERSION = "2.0.2"
INSTALL_HINT = f"install it with `pip install psytrack=={PSYTRACK_VERSION}` (the project's `baselines` extra)"


class PsyTrackMissingError(TwinError, ImportError):
    """The optional ``psytrack`` package is not installed."""


def psytrack_available() -> bool:
    """Whether the ``psytrack`` package can be imported."""
    try:
        require_psytrack()
    except PsyTrackMissingError:
        return False
    return True


def require_psytrack() -> ModuleType:
    """Import ``psytrack``.

    Returns:
        The module.

    Raises:
        PsyTrackMissingError: it is not installed (the message says how to install it).
    """
    try:
        return importlib.import_module("psytrack")
    except ImportError as exc:
        raise PsyTrackMissingError(f"the PsyTrack baseline needs the optional `psytrack` package: {INSTALL_HINT}") from exc


@dataclass(frozen=True)
class PsyTrackConfig:
    """Hyperparameters of a PsyTrack fit (initial values; those in ``optimize`` are then chosen
    by evidence, one value per weight).

    Attributes:
        sigma: trial-to-trial random-walk standard deviation.
        sig_init: prior standard deviation of the first trial's weights.
        sig_day: standard deviation of the step at a session boundary (None: the same as
            ``sigma``, i.e. no overnight jumps).
        optimize: hyperparameters to optimise (``sigma``, ``sigDay``, ``sigInit``).
        jump: PsyTrack's patience (evidence decreases tolerated before stopping).
    """

    sigma: float = 2.0**-5
    sig_init: float = 2.0**4
    sig_day: float | None = 2.0**-2
    optimize: tuple[str, ...] = ("sigma", "sigDay")
    jump: int = 2

    def __post_init__(self) -> None:
        if not self.sigma > 0 or not self.sig_init > 0 or (self.sig_day is not None and not self.sig_day > 0):
            raise ValueError("sigma, sig_init and sig_day must be > 0")
        unknown = [o for o in self.optimize if o not in ("sigma", "sigDay", "sigInit")]
        if unknown:
            raise ValueError(f"unknown hyperparameters to optimise: {unknown}")
        if "sigDay" in self.optimize and self.sig_day is None:
            raise ValueError("cannot optimise sigDay when sig_day is None")
        if self.jump < 1:
            raise ValueError("jump must be >= 1")


@dataclass(frozen=True)
class PsyTrackFit:
    """A fitted PsyTrack model of one animal.

    Attributes:
        names: weight names, in the column order of the fitted inputs.
        weights: ``[N, K]`` MAP weights on each fitted trial.
        sigma: ``[K]`` fitted random-walk standard deviations.
        sig_day: ``[K]`` fitted session-boundary standard deviations (None if not used).
        log_evidence: approximate log evidence at the fitted hyperparameters.
        seconds: wall time of the fit.
        note: why the hyperparameters are the initial ones, when the evidence optimisation
            failed numerically (None: they were optimised).
    """

    names: tuple[str, ...]
    weights: np.ndarray
    sigma: np.ndarray
    sig_day: np.ndarray | None
    log_evidence: float
    seconds: float
    note: str | None = None

    @property
    def final_weights(self) -> np.ndarray:
        """``[K]`` weights on the last fitted trial (what is carried forward)."""
        return self.weights[-1]


def fit_psytrack(
    x: np.ndarray,
    y: np.ndarray,
    session_lengths: Sequence[int],
    names: Sequence[str],
    config: PsyTrackConfig = PsyTrackConfig(),
) -> PsyTrackFit:
    """Fit PsyTrack to one animal's trials.

    Args:
        x: ``[N, K]`` inputs (include a column of ones for a bias weight).
        y: ``[N]`` choices, 1 = right (modelled as ``sigmoid(x · w)``), 0 = left.
        session_lengths: trials per session, in order, summing to ``N``.
        names: ``K`` weight names.
        config: hyperparameters.

    Returns:
        The fit, weights in the column order of ``x``.

    Raises:
        PsyTrackMissingError: ``psytrack`` is not installed.
        ValueError: inconsistent shapes, choices other than 0/1, or only one choice ever made.
    """
    psy = require_psytrack()
    x = np.asarray(x, dtype=float)
    y = np.asarray(y)
    lengths = np.asarray(session_lengths, dtype=int)
    if x.ndim != 2 or y.shape != (x.shape[0],) or len(names) != x.shape[1]:
        raise ValueError(f"need x [N, K], y [N] and K names; got x {x.shape}, y {y.shape}, {len(names)} names")
    if lengths.sum() != len(y) or (lengths < 1).any():
        raise ValueError(f"session lengths must be positive and add up to {len(y)}, got sum {lengths.sum()}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("choices must be 0 (left) or 1 (right)")
    if np.unique(y).size < 2:
        raise ValueError("PsyTrack needs both choices in the fitted trials")
    keys = [f"f{i:02d}_{n}" for i, n in enumerate(names)]
    k = len(keys)

    def data() -> dict[str, object]:  # fresh arrays for every PsyTrack call: it edits them in place
        return {
            "y": (y.astype(int) + 1).astype(float),  # PsyTrack's coding: 1 = left, 2 = right
            "inputs": {key: x[:, [i]].copy() for i, key in enumerate(keys)},
            "dayLength": lengths.copy(),
        }

    def initial() -> dict[str, object]:
        return {"sigma": np.full(k, config.sigma), "sigInit": np.full(k, config.sig_init), "sigDay": None if config.sig_day is None else np.full(k, config.sig_day)}

    t0 = time.perf_counter()
    note = None
    try:
        best_hyper, log_evd, w_mode, _ = psy.hyperOpt(data(), initial(), {key: 1 for key in keys}, list(config.optimize), jump=config.jump, hess_calc=None)
    except (RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        # the evidence search can step to hyperparameters whose posterior is numerically singular
        # (seen on a real mouse: "Factor is exactly singular" after an overflow); the MAP
        # weights at the initial hyperparameters are PsyTrack's fit without that search
        best_hyper = initial()
        get_map = importlib.import_module("psytrack.getMAP").getMAP  # the function (psytrack.getMAP is its module)
        w_mode, _, log_evd, _ = get_map(data(), best_hyper, {key: 1 for key in keys})
        note = f"evidence optimisation failed ({type(exc).__name__}: {str(exc)[:120]}); MAP weights at the initial hyperparameters"
    weights = np.asarray(w_mode, dtype=float).reshape(k, -1).T  # psytrack: [K, N], keys sorted = our order
    sig_day = best_hyper.get("sigDay")
    return PsyTrackFit(
        names=tuple(names),
        weights=weights,
        sigma=np.broadcast_to(np.asarray(best_hyper["sigma"], dtype=float), (k,)).copy(),
        sig_day=None if sig_day is None else np.broadcast_to(np.asarray(sig_day, dtype=float), (k,)).copy(),
        log_evidence=float(log_evd),
        seconds=time.perf_counter() - t0,
        note=note,
    )


def carried_forward_log_likelihood(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-trial log-likelihood (nats) of choices ``y`` (1 right, 0 left) under fixed weights.

    Args:
        weights: ``[K]`` weights (e.g. :attr:`PsyTrackFit.final_weights`).
        x: ``[N, K]`` inputs.
        y: ``[N]`` choices.

    Returns:
        ``[N]`` log-likelihoods.
    """
    z = np.asarray(x, dtype=float) @ np.asarray(weights, dtype=float)
    return np.asarray(y, dtype=float) * z - np.logaddexp(0.0, z)


def _run_lengths(session: np.ndarray) -> np.ndarray:
    """Lengths of consecutive runs of equal values (trials per session, in order)."""
    if session.size == 0:
        return np.zeros(0, dtype=int)
    change = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    return np.diff(np.r_[change, session.size])


@dataclass(frozen=True)
class PsyTrackForecast:
    """PsyTrack's carried-forward forecast of a batch of animals.

    Attributes:
        per_animal: one row per animal: ``subject``, ``n_trials`` (scored), ``ll`` (nats/trial),
            ``accuracy`` (the more likely choice was made), ``fit_trials``, ``seconds``,
            ``log_evidence``, the fitted ``sigma_<name>`` and the carried weights ``w_<name>``.
        ll: ``[B, T]`` per-trial log-likelihood, 0 where not scored.
        hit: ``[B, T]`` 1.0 where the more likely choice was made, 0 where not (or not scored).
    """

    per_animal: pd.DataFrame
    ll: np.ndarray
    hit: np.ndarray


def forecast_psytrack(
    batch: TrialBatch,
    fit_through: int,
    config: PsyTrackConfig = PsyTrackConfig(),
    fit_from: int = 1,
    progress: bool = False,
) -> PsyTrackForecast:
    """PsyTrack's forecast of later sessions, per animal: fit on sessions
    ``fit_from..fit_through``, carry the last fitted trial's weights forward, score
    ``batch.mask``'s trials after ``fit_through``.

    Args:
        batch: the animals (inputs are ``batch.x``, named ``batch.features.names``; ``mask``
            selects the scored trials).
        fit_through: last fitted session (the same for every animal).
        config: PsyTrack hyperparameters.
        fit_from: first fitted session.
        progress: print one line per animal.

    Returns:
        The per-animal table and per-trial arrays.

    Raises:
        PsyTrackMissingError: ``psytrack`` is not installed.
        ValueError: an animal has no trials in the fitted sessions.
    """
    require_psytrack()
    names = batch.features.names
    rows = []
    ll_all = np.zeros((batch.n_animals, batch.n_trials))
    hit_all = np.zeros((batch.n_animals, batch.n_trials))
    for i, subject in enumerate(batch.subjects):
        valid = batch.valid[i].numpy()
        sess = batch.session[i].numpy()
        x = batch.x[i].numpy().astype(float)
        y = batch.y[i].numpy().astype(int)
        fit_m = valid & (sess >= fit_from) & (sess <= fit_through)
        if not fit_m.any():
            raise ValueError(f"{subject}: no trials in sessions {fit_from}..{fit_through} to fit")
        score_m = batch.mask[i].numpy() & (sess > fit_through)
        res = fit_psytrack(x[fit_m], y[fit_m], _run_lengths(sess[fit_m]), names, config)
        ll = carried_forward_log_likelihood(res.final_weights, x[score_m], y[score_m])
        hit = ((x[score_m] @ res.final_weights > 0).astype(int) == y[score_m]).astype(float)
        ll_all[i, score_m] = ll
        hit_all[i, score_m] = hit
        n = int(score_m.sum())
        row: dict[str, object] = {
            "subject": subject,
            "n_trials": n,
            "ll": float(ll.mean()) if n else float("nan"),
            "accuracy": float(hit.mean()) if n else float("nan"),
            "fit_trials": int(fit_m.sum()),
            "seconds": res.seconds,
            "log_evidence": res.log_evidence,
            "note": res.note or "",
        }
        row.update({f"sigma_{name}": float(v) for name, v in zip(names, res.sigma)})
        row.update({f"w_{name}": float(w) for name, w in zip(names, res.final_weights)})
        rows.append(row)
        if progress:
            print(f"  psytrack {subject}: forecast ll {row['ll']:.4f} nats/trial ({res.seconds:.1f} s){'; ' + res.note if res.note else ''}", flush=True)
    return PsyTrackForecast(per_animal=pd.DataFrame(rows), ll=ll_all, hit=hit_all)


__all__ = [
    "INSTALL_HINT",
    "PSYTRACK_VERSION",
    "PsyTrackConfig",
    "PsyTrackFit",
    "PsyTrackForecast",
    "PsyTrackMissingError",
    "carried_forward_log_likelihood",
    "fit_psytrack",
    "forecast_psytrack",
    "psytrack_available",
    "require_psytrack",
]
