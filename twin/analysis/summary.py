"""Per-session summaries of one animal and its twin: accuracy and likelihood per session, the
psychometric fitted to each session, and the cohort's mean accuracy per session index.

Pure analyses (tables, no figures); ``twin report`` and the recovery figures draw them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twin.analysis.psychometrics import session_psychometrics
from twin.analysis.predict import Prediction
from twin.data.batch import TrialBatch
from twin.models.learner import LearnerModel
from twin.models.policy import p_right


def session_table(trials: pd.DataFrame, prediction: Prediction, trained_through: int) -> pd.DataFrame:
    """Per session: trials, observed accuracy, the twin's predicted accuracy and log-likelihood.

    Args:
        trials: the animal's canonical trials table.
        prediction: the twin's teacher-forced prediction on it.
        trained_through: the twin's last trained session.

    Returns:
        Columns ``session``, ``label``, ``n_trials``, ``observed``, ``predicted``,
        ``ll_per_trial``, ``trained``.
    """
    y = trials["choice"].to_numpy().astype(float)
    answer = trials["correct_side"].to_numpy().astype(float)
    p = np.clip(prediction.p_right, 1e-12, 1 - 1e-12)
    p_correct = np.where(answer > 0.5, p, 1 - p)
    ll = y * np.log(p) + (1 - y) * np.log(1 - p)
    df = pd.DataFrame(
        {
            "session": trials["session"].to_numpy(),
            "label": trials["session_label"].astype(str).to_numpy() if "session_label" in trials.columns else "",
            "hit": (trials["feedback"].to_numpy() > 0).astype(float),
            "p_correct": p_correct,
            "ll": ll,
        }
    )
    g = df.groupby("session", sort=True)
    out = pd.DataFrame(
        {
            "session": g.size().index.astype(np.int64),
            "label": g["label"].first().to_numpy(),
            "n_trials": g.size().to_numpy().astype(np.int64),
            "observed": g["hit"].mean().to_numpy(),
            "predicted": g["p_correct"].mean().to_numpy(),
            "ll_per_trial": g["ll"].mean().to_numpy(),
        }
    )
    out["trained"] = out["session"] <= trained_through
    return out


def block_prior(trials: pd.DataFrame) -> np.ndarray:
    """``[T]`` the block prior P(left) each trial belongs to: its ``prob_left`` when strictly
    between 0 and 1, else (a debiasing repeat, whose side was forced: ``prob_left`` 0 or 1) the
    block of the session's previous trial, 0.5 at a session's start."""
    pl = trials["prob_left"].to_numpy().astype(float).round(6)
    sess = trials["session"].to_numpy()
    out = np.where((pl > 0.0) & (pl < 1.0), pl, np.nan)
    s = pd.Series(out).groupby(sess).ffill().fillna(0.5)
    return s.to_numpy()


def session_easy_performance(trials: pd.DataFrame, prediction: Prediction, easy_contrast: float = 0.5) -> pd.DataFrame:
    """IBL's easy-trial performance per training day (session), the animal's and its twin's, and
    whether the session ran biased blocks.

    Args:
        trials: the animal's canonical trials table.
        prediction: the twin's teacher-forced prediction on it.
        easy_contrast: unsigned contrast (fraction) at and above which a trial is easy
            (:attr:`twin.analysis.criteria.CriterionConfig.easy_contrast`).

    Returns:
        Columns ``session``, ``n_easy`` (easy trials), ``easy_observed`` (fraction of easy trials
        rewarded; NaN without easy trials), ``easy_predicted`` (the twin's mean p(correct) on
        them) and ``biased`` (a trial's block prior, :func:`block_prior`, differs from 0.5).
    """
    unsigned = trials["contrast_left"].to_numpy() + trials["contrast_right"].to_numpy()
    easy = unsigned >= easy_contrast - 1e-9
    answer = trials["correct_side"].to_numpy() > 0.5
    p = prediction.p_right
    df = pd.DataFrame(
        {
            "session": trials["session"].to_numpy(),
            "easy": easy.astype(float),
            "hit": np.where(easy, (trials["feedback"].to_numpy() > 0).astype(float), np.nan),
            "p_correct": np.where(easy, np.where(answer, p, 1.0 - p), np.nan),
            "biased": np.abs(block_prior(trials) - 0.5) > 1e-6,
        }
    )
    g = df.groupby("session", sort=True)
    return pd.DataFrame(
        {
            "session": g.size().index.astype(np.int64),
            "n_easy": g["easy"].sum().to_numpy().astype(np.int64),
            "easy_observed": g["hit"].mean().to_numpy(),
            "easy_predicted": g["p_correct"].mean().to_numpy(),
            "biased": g["biased"].any().to_numpy(),
        }
    )


def session_psychometric_fits(trials: pd.DataFrame) -> pd.DataFrame:
    """The erf psychometric (:mod:`twin.analysis.criteria`) fitted to each session separately.

    Returns:
        Columns ``session``, ``bias``, ``threshold`` (percent contrast), ``lapse_low``,
        ``lapse_high``, one row per session in order.
    """
    sessions = np.sort(trials["session"].unique())
    groups = [trials[trials["session"] == s] for s in sessions]
    t_max = max(len(g) for g in groups)
    x = torch.zeros(len(groups), t_max, dtype=torch.float64)
    c = torch.zeros(len(groups), t_max, dtype=torch.float64)
    m = torch.zeros(len(groups), t_max, dtype=torch.bool)
    for i, g in enumerate(groups):
        n = len(g)
        x[i, :n] = torch.as_tensor(100.0 * (g["contrast_right"].to_numpy() - g["contrast_left"].to_numpy()))
        c[i, :n] = torch.as_tensor(g["choice"].to_numpy().astype(float))
        m[i, :n] = True
    fit = session_psychometrics(x, c, m)
    return pd.DataFrame(
        {
            "session": sessions.astype(np.int64),
            "bias": fit.bias.numpy(),
            "threshold": fit.threshold.numpy(),
            "lapse_low": fit.lapse_low.numpy(),
            "lapse_high": fit.lapse_high.numpy(),
        }
    )



@torch.no_grad()
def block_psychometric_fits(trials: pd.DataFrame) -> pd.DataFrame:
    """The erf psychometric fitted to each block type of each session: the trials of one session
    with one block prior P(left) (:func:`block_prior`; 0.5 for unbiased sessions and the unbiased
    opening of biased ones), as IBL splits biased sessions.

    Returns:
        Columns ``session``, ``prob_left``, ``n_trials``, ``bias``, ``threshold`` (percent
        contrast), ``lapse_low``, ``lapse_high``; rows by session, then P(left).
    """
    pl = block_prior(trials)
    keys = pd.DataFrame({"session": trials["session"].to_numpy(), "prob_left": pl})
    groups = keys.drop_duplicates().sort_values(["session", "prob_left"], kind="stable").reset_index(drop=True)
    gid = keys.merge(groups.reset_index(), on=["session", "prob_left"], how="left")["index"].to_numpy()
    relabelled = trials.assign(session=gid)
    fits = session_psychometric_fits(relabelled).drop(columns="session")
    counts = np.bincount(gid, minlength=len(groups))
    return pd.concat([groups.assign(n_trials=counts.astype(np.int64)), fits], axis=1)


def session_accuracy(batch: TrialBatch, model: LearnerModel | None = None) -> pd.DataFrame:
    """Per session index: observed fraction correct and, with a model, its predicted p(correct)
    (mean over animals of the per-animal session means)."""
    hit = (batch.y == batch.answer).float()
    rows = []
    pred = None
    if model is not None:
        p = p_right(model.trajectory(batch), batch.x)
        pred = torch.where(batch.answer > 0.5, p, 1 - p)
    m = batch.mask
    for s in sorted(set(batch.session[m].tolist())):
        sel = (batch.session == s) & m
        n = sel.sum(1)
        has = n > 0
        obs = ((hit * sel).sum(1)[has] / n[has]).mean().item()
        row = {"session": s, "observed": obs, "n_animals": int(has.sum())}
        if pred is not None:
            row["predicted"] = ((pred * sel).sum(1)[has] / n[has]).mean().item()
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["block_prior", "block_psychometric_fits", "session_accuracy", "session_easy_performance", "session_psychometric_fits", "session_table"]
