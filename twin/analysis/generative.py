"""Scores of the generative check: what twins did running free against what their animals did.

Pure functions on per-session counts (:class:`~twin.analysis.criteria.SessionStats`): the
animals' own ``[A, S, K]`` and ``R`` free-running rollouts per animal ``[A * R, S, K]`` (row
``a * R + r``; sessions before each animal's cut-off are the animal's own, as
:func:`twin.sim.check.run_check` makes them). Compared, for the sessions after the cut-off:

* per session: easy-contrast accuracy and the psychometric (bias, threshold) fitted to the session;
* per animal: trials to each criterion (``trained_1a``/``1b``), whether it was reached by the cap
  (the animal's last session), and the bias drift (psychometric bias of the last session minus
  that of the first free session).

Proper scores, lower is better: the CRPS of trials to criterion *censored at the cap* (an animal
never trained counts as the cap, and so does every rollout that never trained: the score is that of
``min(trials, cap)``, which is what can be observed), and the negative log score of the session at
which the criterion is reached, with "not by the cap" its own category (Krichevsky–Trofimov
smoothing: a category no rollout reached gets ``0.5 / (R + C / 2)``, not zero). Interval coverage:
the share of animals (or sessions) whose observed value lies in the rollouts' central interval,
at each level, judged on the randomised PIT so that ties (a discrete session count, a censored
cap) neither inflate nor deflate it. Animals that reached a criterion before their cut-off are not scored on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.analysis.criteria import TRAINED_1A, TRAINED_1B, CriterionConfig, SessionStats, first_session_meeting, window_psychometrics
from twin.analysis.psychometrics import fit_counts

LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)
"""Central-interval levels whose coverage is reported."""


def crps_ensemble(samples: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """CRPS of an ensemble forecast, ``E|X - y| - E|X - X'| / 2`` (lower is better).

    Args:
        samples: ``[A, R]`` draws of the forecast distribution per case.
        obs: ``[A]`` observed values.

    Returns:
        ``[A]`` CRPS, in the units of the values.
    """
    x = np.sort(np.asarray(samples, dtype=float), axis=1)
    y = np.asarray(obs, dtype=float)
    r = x.shape[1]
    term1 = np.abs(x - y[:, None]).mean(1)
    i = np.arange(1, r + 1)
    term2 = ((2 * i - r - 1) * x).sum(1) / (r * r)  # E|X - X'| / 2 from the order statistics
    return term1 - term2


def neg_log_score(samples: np.ndarray, obs: np.ndarray, n_categories: np.ndarray) -> np.ndarray:
    """Negative log probability (nats) of the observed category under the rollouts' frequencies,
    Krichevsky–Trofimov smoothed: ``p = (count + 1/2) / (R + C/2)``.

    Args:
        samples: ``[A, R]`` integer categories.
        obs: ``[A]`` observed category.
        n_categories: ``[A]`` categories possible for each case (``C``).
    """
    s = np.asarray(samples)
    count = (s == np.asarray(obs)[:, None]).sum(1)
    return -np.log((count + 0.5) / (s.shape[1] + 0.5 * np.asarray(n_categories, dtype=float)))


def pit(samples: np.ndarray, obs: np.ndarray, seed: int = 0) -> np.ndarray:
    """Randomised probability integral transform of each observation under its ensemble:
    ``F(y-) + V (F(y) - F(y-))`` with ``V ~ U(0, 1)`` (seeded), uniform on [0, 1] when the forecast
    is calibrated, for discrete and censored values too (ties spread, not counted as hits).

    Args:
        samples: ``[A, R]`` draws (NaNs ignored).
        obs: ``[A]`` observed values.
        seed: seeds ``V``.

    Returns:
        ``[A]``; NaN where the observation or every draw is NaN.
    """
    x = np.asarray(samples, dtype=float)
    y = np.asarray(obs, dtype=float)[:, None]
    n = np.isfinite(x).sum(1)
    below, at = (x < y).sum(1), (x == y).sum(1)
    v = np.random.default_rng(seed).random(len(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (below + v * at) / n
    return np.where(np.isfinite(y[:, 0]) & (n > 0), u, np.nan)


def coverage(samples: np.ndarray, obs: np.ndarray, levels: Sequence[float] = LEVELS, seed: int = 0) -> dict[float, np.ndarray]:
    """Whether each observed value lies in the rollouts' central interval at each level, judged
    on its randomised PIT (:func:`pit`): covered at level ``L`` when ``|u - 1/2| <= L/2``. For a
    calibrated forecast the share covered is ``L`` in expectation, also when many draws tie with
    the observation (an inclusive quantile interval would count every tie as a hit).

    Returns:
        level -> ``[A]`` float: 1 covered, 0 not, NaN where the observation or every draw is NaN.
    """
    u = pit(samples, obs, seed)
    return {lv: np.where(np.isfinite(u), (np.abs(u - 0.5) <= lv / 2 + 1e-12).astype(float), np.nan) for lv in levels}


@dataclass(frozen=True)
class GenerativeCheck:
    """The generative check of ``A`` animals.

    Attributes:
        animals: one row per animal: ``subject``, ``cutoff``, ``n_sessions``, ``cap_trials``; per
            criterion ``<name>``: ``obs_trials_<name>`` (censored at the cap), ``obs_reached_<name>``,
            ``scored_<name>`` (False when reached before the cut-off), ``pred_mean_trials_<name>``,
            ``pred_lo95_trials_<name>``, ``pred_hi95_trials_<name>``, ``pred_reached_<name>``
            (share of rollouts), ``crps_<name>``, ``nls_<name>``, ``cov50_<name>``...; and the
            bias drift ``obs_bias_drift``, ``pred_bias_drift``, ``crps_bias_drift``, ``cov*_bias_drift``.
        sessions: one row per animal and free session: ``subject``, ``session`` (1-based
            position), observed and predicted (mean, 2.5/25/50/75/97.5% quantiles) easy accuracy,
            bias and threshold, and coverage flags.
        summary: cohort figures (means over scored animals / sessions).
    """

    animals: pd.DataFrame
    sessions: pd.DataFrame
    summary: dict[str, float]


def _session_psychometrics(stats: SessionStats) -> tuple[torch.Tensor, torch.Tensor]:
    """``([A, S] bias, [A, S] threshold)`` of the psychometric fitted to each session; NaN where
    a session has no trials."""
    a, s, k = stats.n.shape
    valid = stats.valid & (stats.n_trials > 0)
    bias = torch.full((a, s), float("nan"), dtype=stats.n.dtype)
    thr = bias.clone()
    if bool(valid.any()):
        theta, _ = fit_counts(stats.contrast, stats.n[valid], stats.n_right[valid], max_iter=50)
        bias[valid], thr[valid] = theta[:, 0], theta[:, 1]
    return bias, thr


def _criterion_outcomes(stats: SessionStats, criteria: Sequence[CriterionConfig]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per criterion: ``([N] 0-based session reached, -1 never; [N] trials up to it, the cap if never)``."""
    fits = window_psychometrics(stats, criteria[0].window) if len({c.window for c in criteria}) == 1 else None
    cum = stats.n_trials.cumsum(1)
    cap = cum[torch.arange(cum.shape[0]), (stats.n_sessions - 1).clamp(min=0)]
    out = {}
    for c in criteria:
        first = first_session_meeting(stats, c, fits if fits is not None else None)
        trials = torch.where(first >= 0, cum.gather(1, first.clamp(min=0)[:, None])[:, 0], cap)
        out[c.name] = (first.numpy(), trials.numpy())
    return out


def _quantiles(x: np.ndarray) -> dict[str, np.ndarray]:
    q = np.nanquantile(x, [0.025, 0.25, 0.5, 0.75, 0.975], axis=1) if np.isfinite(x).any() else np.full((5, x.shape[0]), np.nan)
    return {"q025": q[0], "q25": q[1], "q50": q[2], "q75": q[3], "q975": q[4]}


def generative_check(
    subjects: Sequence[str],
    observed: SessionStats,
    predicted: SessionStats,
    cutoff: torch.Tensor,
    n_rollouts: int,
    criteria: Sequence[CriterionConfig] = (TRAINED_1A, TRAINED_1B),
    levels: Sequence[float] = LEVELS,
) -> GenerativeCheck:
    """Compare ``R = n_rollouts`` free runs per animal with what each animal did after its cut-off.

    Args:
        subjects: ``A`` animal names.
        observed: ``[A, S, K]`` the animals' counts.
        predicted: ``[A * R, S, K]`` the rollouts' counts on the same bins and session lengths.
        cutoff: ``[A]`` long, first free session (0-based) of each animal.
        n_rollouts: ``R``.
        criteria: training criteria to score.
        levels: interval levels for coverage.

    Returns:
        Per-animal and per-session tables and the cohort summary.
    """
    a, rr = len(subjects), n_rollouts
    if predicted.n.shape[0] != a * rr or observed.n.shape[0] != a:
        raise ValueError(f"expected {a} observed and {a * rr} predicted rows, got {observed.n.shape[0]} and {predicted.n.shape[0]}")
    cut = cutoff.numpy()
    n_sess = observed.n_sessions.numpy()
    obs_out, pred_out = _criterion_outcomes(observed, criteria), _criterion_outcomes(predicted, criteria)
    cap = observed.n_trials.sum(1).numpy()
    animals: dict[str, object] = {"subject": list(subjects), "cutoff": cut, "n_sessions": n_sess, "cap_trials": cap}
    summary: dict[str, float] = {"n_animals": float(a), "n_rollouts": float(rr)}
    for c in criteria:
        o_first, o_trials = obs_out[c.name]
        p_first, p_trials = (v.reshape(a, rr) for v in pred_out[c.name])
        scored = ~((o_first >= 0) & (o_first < cut))
        cats_obs = np.where(o_first >= 0, o_first, n_sess)
        cats_pred = np.where(p_first >= 0, p_first, n_sess[:, None])
        crps = np.where(scored, crps_ensemble(p_trials, o_trials), np.nan)
        nls = np.where(scored, neg_log_score(cats_pred, cats_obs, n_sess - cut + 1), np.nan)
        cov = coverage(p_trials, np.where(scored, o_trials, np.nan), levels)
        pred_mean = p_trials.mean(1)
        pred_reached = (p_first >= 0).mean(1)
        animals.update(
            {
                f"obs_trials_{c.name}": o_trials, f"obs_reached_{c.name}": o_first >= 0, f"scored_{c.name}": scored,
                f"pred_mean_trials_{c.name}": pred_mean, f"pred_lo95_trials_{c.name}": np.quantile(p_trials, 0.025, axis=1),
                f"pred_hi95_trials_{c.name}": np.quantile(p_trials, 0.975, axis=1), f"pred_reached_{c.name}": pred_reached,
                f"crps_{c.name}": crps, f"nls_{c.name}": nls, **{f"cov{round(lv * 100)}_{c.name}": v for lv, v in cov.items()},
            }
        )
        n_sc = int(scored.sum())
        obs_mean = float(o_trials[scored].mean()) if n_sc else float("nan")
        summary.update(
            {
                f"scored_{c.name}": float(n_sc),
                f"obs_mean_trials_{c.name}": obs_mean,
                f"pred_mean_trials_{c.name}": float(pred_mean[scored].mean()) if n_sc else float("nan"),
                f"pred_over_obs_trials_{c.name}": float(pred_mean[scored].mean() / obs_mean) if n_sc and obs_mean > 0 else float("nan"),
                f"obs_frac_trained_{c.name}": float((o_first[scored] >= 0).mean()) if n_sc else float("nan"),
                f"pred_frac_trained_{c.name}": float(pred_reached[scored].mean()) if n_sc else float("nan"),
                f"crps_{c.name}": float(np.nanmean(crps)) if n_sc else float("nan"),
                f"nls_{c.name}": float(np.nanmean(nls)) if n_sc else float("nan"),
                **{f"cov{round(lv * 100)}_{c.name}": float(np.nanmean(v)) if n_sc else float("nan") for lv, v in cov.items()},
            }
        )
    # per session: easy accuracy, psychometric bias and threshold
    o_acc, p_acc = observed.easy_accuracy(criteria[0].easy_contrast).numpy(), predicted.easy_accuracy(criteria[0].easy_contrast).numpy()
    (o_bias, o_thr), (p_bias, p_thr) = (tuple(t.numpy() for t in _session_psychometrics(s)) for s in (observed, predicted))
    s_max = observed.n.shape[1]
    sess_rows: dict[str, list[np.ndarray]] = {}
    drift_obs, drift_pred = np.full(a, np.nan), np.full((a, rr), np.nan)
    for i in range(a):
        js = np.arange(cut[i], n_sess[i])
        rows_i = slice(i * rr, (i + 1) * rr)
        part: dict[str, np.ndarray] = {"subject": np.array([subjects[i]] * len(js), dtype=object), "session": js + 1}
        for name, o, p in (("easy_accuracy", o_acc, p_acc), ("bias", o_bias, p_bias), ("threshold", o_thr, p_thr)):
            pv = p[rows_i][:, js].T  # [n_js, R]
            part[f"obs_{name}"] = o[i, js]
            part[f"pred_mean_{name}"] = np.nanmean(pv, 1) if np.isfinite(pv).any() else np.full(len(js), np.nan)
            part.update({f"pred_{k}_{name}": v for k, v in _quantiles(pv).items()})
            part.update({f"cov{round(lv * 100)}_{name}": v for lv, v in coverage(pv, o[i, js], levels).items()})
            if name == "easy_accuracy":
                part[f"crps_{name}"] = crps_ensemble(np.nan_to_num(pv, nan=0.5), np.nan_to_num(o[i, js], nan=0.5))
        for k, v in part.items():
            sess_rows.setdefault(k, []).append(v)
        if len(js) >= 2:
            drift_obs[i] = o_bias[i, js[-1]] - o_bias[i, js[0]]
            drift_pred[i] = p_bias[rows_i, js[-1]] - p_bias[rows_i, js[0]]
    sessions = pd.DataFrame({k: np.concatenate(v) for k, v in sess_rows.items()})
    has = np.isfinite(drift_obs)
    has_pred = np.isfinite(drift_pred).any(1)
    pred_drift = np.full(a, np.nan)
    pred_drift[has_pred] = np.nanmean(drift_pred[has_pred], 1)
    animals["obs_bias_drift"], animals["pred_bias_drift"] = drift_obs, pred_drift
    animals["crps_bias_drift"] = np.where(has, crps_ensemble(np.nan_to_num(drift_pred), np.nan_to_num(drift_obs)), np.nan)
    cov_d = coverage(drift_pred, drift_obs, levels)
    animals.update({f"cov{round(lv * 100)}_bias_drift": v for lv, v in cov_d.items()})
    summary["n_sessions_scored"] = float(len(sessions))
    summary["s_max"] = float(s_max)
    for name in ("easy_accuracy", "bias", "threshold"):
        for lv in levels:
            summary[f"cov{round(lv * 100)}_{name}"] = float(np.nanmean(sessions[f"cov{round(lv * 100)}_{name}"])) if len(sessions) else float("nan")
    summary["crps_easy_accuracy"] = float(sessions["crps_easy_accuracy"].mean()) if len(sessions) else float("nan")
    summary["obs_mean_easy_accuracy"] = float(np.nanmean(sessions["obs_easy_accuracy"])) if len(sessions) else float("nan")
    summary["pred_mean_easy_accuracy"] = float(np.nanmean(sessions["pred_mean_easy_accuracy"])) if len(sessions) else float("nan")
    summary["crps_bias_drift"] = float(np.nanmean(animals["crps_bias_drift"])) if has.any() else float("nan")
    for lv in levels:
        summary[f"cov{round(lv * 100)}_bias_drift"] = float(np.nanmean(cov_d[lv])) if has.any() else float("nan")
    return GenerativeCheck(pd.DataFrame(animals), sessions, summary)


__all__ = ["GenerativeCheck", "LEVELS", "coverage", "crps_ensemble", "generative_check", "neg_log_score", "pit"]
