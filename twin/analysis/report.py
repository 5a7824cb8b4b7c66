"""A per-animal report: one self-contained HTML page a lab can read (``twin report SUBJECT``).

The page gathers, for one animal and one stored version of its twin:

* the learning curve: observed accuracy per session against the twin's predicted p(correct),
  teacher-forced along the animal's real trials, and the forecast of the next session;
* psychometric curves per session: observed fraction of right choices per signed contrast, the
  erf psychometric fitted to the session (:mod:`twin.analysis.criteria`) and the twin's mean p(right);
* the twin's weight trajectories (teacher-forced);
* Δw maps: the twin's update after a correct and after an error trial, against the signed
  contrast, over weight states the animal visited (:mod:`twin.analysis.dwmap`, with the twin's per-weight
  learning-rate multiplier applied);
* history dependence of the update: the mean within-session Δw after runs of rewards and after
  runs of errors, as a function of the run length, from the teacher-forced trajectory (so a
  history-dependent rule shows its effect here while a Markovian one shows only what the
  visited states imply);
* the forecast of the next session (:func:`twin.sim.forecast.forecast_session`: accuracy per
  contrast, within-session learning curve and psychometric, with intervals across rollouts);
* training status (``trained_1a`` / ``trained_1b``: session and trials, :mod:`twin.analysis.criteria`);
* the twin's metadata (version, aliases, rule, trained-through session, metrics, provenance).

Figures are PNGs embedded as base64 ``data:`` URIs, the style sheet and one small script are
inline, and a Content-Security-Policy forbids loading anything else, so the file can be mailed
or archived as it is. The script sets ``data-figures-loaded`` on ``<body>`` to the number of
figures the browser decoded (and ``data-figures-total`` to the number of ``<img>``), which the
browser test reads back.

This module is part of the pure core: matplotlib (its Agg canvas, through
:class:`matplotlib.figure.Figure`, no pyplot state), no gRPC, no Ray.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from twin.persist.atomic import atomic_write
from twin.analysis.criteria import TRAINED_1A, TRAINED_1B, criteria_sessions, erf_psychometric, session_psychometrics, training_criteria
from twin.analysis.dwmap import SIGNED_CONTRASTS, delta_w, sample_states
from twin.errors import TrialDataError, TwinError
from twin.sim.forecast import SessionForecast, forecast_session
from twin.models.learner import LearnerModel
from twin.analysis.predict import Prediction, predict
from twin.models.state import TwinState
from twin.persist.store import Twin, TwinStore, TwinVersion
from twin.protocol import IBL_DEFAULT, Curriculum

_CRITERIA = (TRAINED_1A, TRAINED_1B)


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes and how.

    Attributes:
        protocol: the planned next session's mechanics for the forecast.
        forecast_trials: trials in the forecast session; None: the median length of the
            animal's last three sessions.
        forecast_rollouts: simulated copies of the next session.
        interval_level: coverage of the forecast intervals.
        forecast_bin: trials per bin of the forecast's within-session learning curve.
        seed: seeds the forecast and the sampling of weight states for the Δw maps.
        dw_states: weight states sampled from the trajectory for the Δw maps.
        max_run: run lengths at and above this are pooled in the history-dependence figure.
        max_psychometric_sessions: at most this many session panels (evenly spaced, the first
            and last always included) in the psychometric figure.
        dpi: resolution of the embedded figures.
    """

    protocol: Curriculum = IBL_DEFAULT
    forecast_trials: int | None = None
    forecast_rollouts: int = 200
    interval_level: float = 0.9
    forecast_bin: int = 50
    seed: int = 0
    dw_states: int = 64
    max_run: int = 8
    max_psychometric_sessions: int = 36
    dpi: int = 90

    def __post_init__(self) -> None:
        if self.forecast_trials is not None and self.forecast_trials < 1:
            raise ValueError(f"forecast_trials must be >= 1 or None, got {self.forecast_trials}")
        for name in ("forecast_rollouts", "forecast_bin", "dw_states", "max_run", "max_psychometric_sessions", "dpi"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.interval_level < 1.0:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")


@dataclass(frozen=True)
class ReportFigure:
    """One embedded figure.

    Attributes:
        key: anchor id of its section (letters, digits, ``-``).
        title: section heading.
        caption: what it shows (plain text; escaped when rendered).
        png: the PNG bytes.
    """

    key: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Report:
    """Everything on the page, computed; :meth:`html` renders it.

    Attributes:
        subject: the animal.
        meta: the twin version reported on.
        trials_source: where the trials came from (stored sessions or a file).
        sessions: one row per session: ``session``, ``label``, ``n_trials``, ``observed``
            (fraction correct), ``predicted`` (twin's mean p(correct)), ``ll_per_trial`` (nats),
            ``trained`` (session at or before the twin's trained-through session), the
            per-session psychometric fit (``bias``, ``threshold``, ``lapse_low``,
            ``lapse_high``) and ``passes_1a`` / ``passes_1b`` when the criteria could be judged.
        status: ``training_criteria`` row of the animal (session and trials of each criterion),
            or None when the criteria could not be judged (see ``notes``).
        forecast: the next session's forecast, or None when it does not apply.
        forecast_from_session: the session the forecast continues from.
        history: mean Δw by outcome and run length (see :func:`history_dependence`).
        figures: the embedded figures, in page order.
        notes: sections left out or caveats, as plain sentences.
        generated_at: when the report was computed (UTC).
    """

    subject: str
    meta: TwinVersion
    trials_source: str
    sessions: pd.DataFrame
    status: pd.DataFrame | None
    forecast: SessionForecast | None
    forecast_from_session: int
    history: pd.DataFrame
    figures: tuple[ReportFigure, ...]
    notes: tuple[str, ...] = field(default=())
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    def html(self) -> str:
        """The self-contained HTML page."""
        return render_html(self)


# ----------------------------------------------------------------------------- computations


def resolve_trials(store: TwinStore, subject: str, trials: pd.DataFrame | str | Path | None = None, source: str = "<trials>") -> tuple[pd.DataFrame, str]:
    """The animal's trials: its stored sessions if it has any, else its rows of ``trials``.

    Args:
        store: the twin store (its session store is looked at).
        subject: the animal.
        trials: a canonical trials table (any subjects) or a file :func:`twin.data.readers.load_trials`
            reads (read only when needed), used when no sessions are stored.
        source: name of a table for messages (a file's name is its path).

    Returns:
        The animal's canonical trials table and a description of where it came from.

    Raises:
        TwinError: no stored sessions and no trials given, or the trials lack the subject.
        TrialDataError: an unreadable or invalid trials file.
    """
    from twin.persist.sessions import SessionStore

    sessions = SessionStore(store)
    stored = sessions.sessions(subject)
    if stored:
        unused = "" if trials is None else f"; {trials if isinstance(trials, (str, Path)) else source} not used"
        return sessions.trials(subject), f"{len(stored)} stored sessions in the twin store{unused}"
    if trials is None:
        raise TwinError(f"subject {subject!r} has no stored sessions; give its trials (--trials FILE)")
    if isinstance(trials, (str, Path)):
        from twin.data.readers import load_trials

        source = str(trials)
        trials, _ = load_trials(trials)
    sub = trials[trials["subject"].astype(str) == subject].reset_index(drop=True)
    if sub.empty:
        found = list(dict.fromkeys(trials["subject"].astype(str)))
        raise TwinError(f"{source}: no trials of subject {subject!r} (subjects there: {found[:10]}{' ...' if len(found) > 10 else ''})")
    return sub, source


def run_lengths(outcome: np.ndarray, session_start: np.ndarray) -> np.ndarray:
    """Length of the run of equal outcomes that ends at each trial, restarting at each session.

    Args:
        outcome: ``[T]`` 0/1 (error/reward) per trial.
        session_start: ``[T]`` bool, True on each session's first trial.

    Returns:
        ``[T]`` int: 1 on a trial whose outcome differs from the previous trial's (or that opens
        a session), 2 when it repeats it once, and so on.
    """
    o = np.asarray(outcome)
    s = np.asarray(session_start, dtype=bool)
    out = np.ones(len(o), dtype=np.int64)
    for t in range(1, len(o)):
        if not s[t] and o[t] == o[t - 1]:
            out[t] = out[t - 1] + 1
    return out


def _aligned_updates(weights: np.ndarray, names: Sequence[str], choice: np.ndarray, session_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-session updates ``Δw_t = w_{t+1} - w_t`` (``[T-1, K]``) with the bias update signed
    toward the chosen side, and the ``[T-1]`` mask of trials followed by one of the same session."""
    dw = np.diff(weights, axis=0)
    sign = 2.0 * np.asarray(choice[:-1], dtype=float) - 1.0
    for k, name in enumerate(names):
        if name == "bias":
            dw[:, k] = dw[:, k] * sign
    within = ~np.asarray(session_start[1:], dtype=bool)
    return dw, within


def history_dependence(prediction: Prediction, trials: pd.DataFrame, max_run: int = 8) -> pd.DataFrame:
    """Mean within-session update after runs of rewards and after runs of errors.

    For every trial followed by a trial of the same session, ``Δw = w_{t+1} - w_t`` is taken from
    the twin's teacher-forced trajectory and grouped by the trial's outcome and the length of the
    run of that outcome ending at it (:func:`run_lengths`; runs of ``max_run`` and more pooled).
    The bias update is signed toward the chosen side (+ = more likely to repeat the choice);
    other weights are as they are.

    Args:
        prediction: :func:`twin.analysis.predict.predict` of the twin on ``trials``.
        trials: the animal's canonical trials table (same rows as the prediction).
        max_run: pooling threshold of the run length.

    Returns:
        One row per (outcome, run length, weight): ``outcome`` (``reward``/``error``),
        ``run_length``, ``weight``, ``mean_dw``, ``sem``, ``n``.
    """
    reward = (trials["feedback"].to_numpy() > 0).astype(np.int64)
    start = np.r_[True, trials["session"].to_numpy()[1:] != trials["session"].to_numpy()[:-1]]
    runs = np.minimum(run_lengths(reward, start), max_run)[:-1]
    dw, within = _aligned_updates(prediction.weights, prediction.feature_names, trials["choice"].to_numpy(), start)
    rows = []
    for out_value, out_name in ((1, "reward"), (0, "error")):
        for r in range(1, max_run + 1):
            sel = within & (reward[:-1] == out_value) & (runs == r)
            n = int(sel.sum())
            for k, name in enumerate(prediction.feature_names):
                v = dw[sel, k]
                mean = float(v.mean()) if n else float("nan")
                sem = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
                rows.append({"outcome": out_name, "run_length": r, "weight": name, "mean_dw": mean, "sem": sem, "n": n})
    return pd.DataFrame(rows)


@torch.no_grad()
def delta_w_map(model: LearnerModel, weights: np.ndarray, n_states: int = 64, seed: int = 0, contrasts: tuple[float, ...] = SIGNED_CONTRASTS) -> pd.DataFrame:
    """The twin's update after a correct and after an error trial, on visited weight states.

    Args:
        model: the twin (contrast features; its learning-rate multiplier is applied).
        weights: ``[T, K]`` its teacher-forced trajectory, sampled for the weight states.
        n_states: states sampled (uniformly over trials).
        seed: seeds the sampling.
        contrasts: signed contrasts (fractions, right positive; at 0 the right side is rewarded).

    Returns:
        One row per (state, contrast, outcome, weight): ``state``, ``contrast``, ``outcome``
        (``correct``/``error``), ``weight``, ``dw``. A recurrent rule is evaluated from a zero
        recurrent state.
    """
    w = torch.as_tensor(weights, dtype=torch.float32)
    states = sample_states(w.unsqueeze(0), torch.ones(1, w.shape[0], dtype=torch.bool), n_states, seed)
    c = torch.tensor(contrasts)
    rate = model.rate()
    names = model.spec.features.names
    parts = []
    for correct in (True, False):
        d = delta_w(model, states, c, correct)
        if rate is not None:
            d = d * rate.reshape(1, 1, -1)
        n, m, k = d.shape
        parts.append(
            pd.DataFrame(
                {
                    "state": np.repeat(np.arange(n), m * k),
                    "contrast": np.tile(np.repeat(np.asarray(contrasts), k), n),
                    "outcome": "correct" if correct else "error",
                    "weight": np.tile(np.asarray(names), n * m),
                    "dw": d.reshape(-1).numpy().astype(np.float64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


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


def _forecast_state(twin: Twin, trials: pd.DataFrame) -> TwinState:
    """The state the next session starts from: the stored one when it is at the animal's last
    session, else the twin run teacher-forced through all the given trials."""
    from twin.fit.cohort import twin_end_state

    last = int(trials["session"].max())
    if twin.state is not None and twin.state.through_session == last:
        return twin.state
    return twin_end_state(twin.model, trials)


def _default_forecast_trials(trials: pd.DataFrame) -> int:
    lengths = trials.groupby("session", sort=True).size().to_numpy()
    return int(max(1, np.median(lengths[-3:])))


# ----------------------------------------------------------------------------- figures


def _png(fig: MplFigure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _session_edges(trials: pd.DataFrame) -> np.ndarray:
    s = trials["session"].to_numpy()
    return np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def fig_learning_curve(table: pd.DataFrame, trained_through: int, forecast: SessionForecast | None, next_session: int, criteria: dict[str, int], dpi: int) -> bytes:
    """Observed vs predicted accuracy per session, the next session's forecast, criteria marks."""
    fig = MplFigure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(table["session"], table["observed"], "ko-", lw=2, ms=4, label="observed")
    ax.plot(table["session"], table["predicted"], "o--", color="C1", lw=1.5, ms=3.5, label="twin (teacher-forced)")
    if forecast is not None:
        a = forecast.accuracy
        ax.errorbar([next_session], [a.mean], yerr=[[a.mean - a.lo], [a.hi - a.mean]], fmt="s", color="C3", capsize=4, label=f"forecast ({forecast.level:.0%} interval)")
    last_session = int(table["session"].max())
    if trained_through < last_session:
        ax.axvspan(trained_through + 0.5, last_session + 0.5, color="C0", alpha=0.08, lw=0, label="not trained on")
    ax.axvline(trained_through + 0.5, color="0.5", lw=0.8, ls=":")
    ax.text(trained_through + 0.5, 1.01, f" trained through {trained_through}", fontsize=7, color="0.4", ha="left", va="top")
    for i, (name, session) in enumerate(criteria.items()):
        ax.axvline(session, color=f"C{4 + i}", lw=1.0, ls="-.", label=f"{name} reached (session {session})")
    ax.axhline(0.5, color="0.85", lw=0.8)
    ax.set_ylim(0.4, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("session")
    ax.set_ylabel("fraction correct")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    ax.set_title("Learning curve")
    return _png(fig, dpi)


def _pick_sessions(sessions: np.ndarray, limit: int) -> np.ndarray:
    if len(sessions) <= limit:
        return sessions
    idx = np.unique(np.round(np.linspace(0, len(sessions) - 1, limit)).astype(int))
    return sessions[idx]


def fig_psychometrics(trials: pd.DataFrame, prediction: Prediction, fits: pd.DataFrame, shown: np.ndarray, dpi: int) -> bytes:
    """One panel per session: observed p(right) per signed contrast, fitted erf, twin's p(right)."""
    n = len(shown)
    cols = min(6, n)
    rows = int(math.ceil(n / cols))
    fig = MplFigure(figsize=(2.1 * cols, 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    x_all = 100.0 * (trials["contrast_right"].to_numpy() - trials["contrast_left"].to_numpy())
    sess = trials["session"].to_numpy()
    choice = trials["choice"].to_numpy().astype(float)
    grid = torch.linspace(-100, 100, 201, dtype=torch.float64)
    fit_by = fits.set_index("session")
    for i, s in enumerate(shown):
        ax = axes[i // cols, i % cols]
        sel = sess == s
        df = pd.DataFrame({"x": x_all[sel], "y": choice[sel], "p": prediction.p_right[sel]}).groupby("x")
        xs = np.asarray(list(df.groups), dtype=float)
        k = df.size().to_numpy()
        obs = df["y"].mean().to_numpy()
        err = np.sqrt(np.clip(obs * (1 - obs), 1e-4, None) / k)
        ax.errorbar(xs, obs, yerr=err, fmt="ko", ms=2.5, lw=0.8, capsize=0)
        f = fit_by.loc[s]
        curve = erf_psychometric(grid, float(f["bias"]), float(f["threshold"]), float(f["lapse_low"]), float(f["lapse_high"]))
        ax.plot(grid.numpy(), curve.numpy(), "k-", lw=1.0)
        ax.plot(xs, df["p"].mean().to_numpy(), "--", color="C1", lw=1.0)
        ax.axhline(0.5, color="0.85", lw=0.5)
        ax.axvline(0, color="0.85", lw=0.5)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"session {int(s)} ({int(sel.sum())} trials)", fontsize=7)
        ax.tick_params(labelsize=6)
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].set_visible(False)
    fig.supxlabel("signed contrast (%, right > 0)", fontsize=8)
    fig.supylabel("p(right)", fontsize=8)
    fig.suptitle("Psychometric curves: observed (points, ±1 s.e.), erf fit (line), twin (dashed)", fontsize=9)
    return _png(fig, dpi)


def fig_weights(trials: pd.DataFrame, prediction: Prediction, trained_through: int, dpi: int) -> bytes:
    """The twin's teacher-forced weights on each trial, session boundaries dotted."""
    names = prediction.feature_names
    fig = MplFigure(figsize=(8.0, 1.7 * len(names) + 0.5), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
    edges = _session_edges(trials)
    sess = trials["session"].to_numpy()
    after = np.flatnonzero(sess > trained_through)
    t = np.arange(len(trials))
    for k, name in enumerate(names):
        ax = axes[k]
        for e in edges[1:]:
            ax.axvline(e, color="0.85", lw=0.5, ls=":")
        if after.size:
            ax.axvspan(after[0], len(trials), color="C0", alpha=0.08, lw=0)
        ax.plot(t, prediction.weights[:, k], color=f"C{k}", lw=1.0)
        ax.axhline(0, color="0.7", lw=0.5)
        ax.set_ylabel(f"w[{name}]", fontsize=8)
    axes[-1].set_xlabel("trial (all sessions; dotted: session starts" + ("; shaded: not trained on)" if after.size else ")"))
    fig.suptitle("Weight trajectories (twin, teacher-forced)", fontsize=10)
    return _png(fig, dpi)


def fig_delta_w(dw: pd.DataFrame, dpi: int) -> bytes:
    """Mean Δw over visited weight states against signed contrast, after correct and error trials."""
    names = list(dict.fromkeys(dw["weight"]))
    fig = MplFigure(figsize=(3.8 * len(names), 5.2), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False, sharex=True)
    for i, outcome in enumerate(("correct", "error")):
        for k, name in enumerate(names):
            ax = axes[i, k]
            g = dw[(dw["outcome"] == outcome) & (dw["weight"] == name)].groupby("contrast")["dw"]
            c = np.asarray(list(g.groups), dtype=float)
            ax.fill_between(c, g.quantile(0.1).to_numpy(), g.quantile(0.9).to_numpy(), color="C0" if i == 0 else "C3", alpha=0.2, lw=0, label="10–90% over states")
            ax.plot(c, g.mean().to_numpy(), "o-", color="C0" if i == 0 else "C3", ms=3, lw=1.5, label="mean")
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"after {outcome}: Δw[{name}]", fontsize=9)
            if i == 1:
                ax.set_xlabel("signed contrast (right > 0)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Δw maps of the twin (its update after one trial)", fontsize=10)
    return _png(fig, dpi)


def fig_history(history: pd.DataFrame, max_run: int, dpi: int) -> bytes:
    """Mean Δw (± s.e.m.) after runs of rewards and of errors, against the run length."""
    names = list(dict.fromkeys(history["weight"]))
    fig = MplFigure(figsize=(3.8 * len(names), 3.4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for k, name in enumerate(names):
        ax = axes[k]
        for outcome, color, dx in (("reward", "C2", -0.08), ("error", "C3", 0.08)):
            g = history[(history["outcome"] == outcome) & (history["weight"] == name) & (history["n"] > 0)]
            ax.errorbar(g["run_length"] + dx, g["mean_dw"], yerr=g["sem"].fillna(0.0), fmt="o-", color=color, ms=3.5, lw=1.2, capsize=2, label=f"after {outcome}s")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_xticks(range(1, max_run + 1), [str(r) if r < max_run else f"{r}+" for r in range(1, max_run + 1)])
        ax.set_xlabel("run length (trials, within session)")
        label = "Δw[bias] toward the chosen side" if name == "bias" else f"Δw[{name}]"
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("History dependence of the update (teacher-forced trajectory)", fontsize=10)
    return _png(fig, dpi)


def fig_forecast(fc: SessionForecast, trials: pd.DataFrame, dpi: int) -> bytes:
    """Forecast of the next session: accuracy per contrast, within-session curve, psychometric."""
    fig = MplFigure(figsize=(12.0, 3.6), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    last = trials[trials["session"] == trials["session"].max()]
    unsigned = (last["contrast_left"] + last["contrast_right"]).round(6)
    obs_c = (last["feedback"] > 0).groupby(unsigned).mean()
    c = np.array([v for v, _ in fc.by_contrast])
    m = np.array([iv.mean for _, iv in fc.by_contrast])
    lo = np.array([iv.lo for _, iv in fc.by_contrast])
    hi = np.array([iv.hi for _, iv in fc.by_contrast])
    xpos = np.arange(len(c))
    ax1.errorbar(xpos, m, yerr=[m - lo, hi - m], fmt="s", color="C3", capsize=4, label="forecast")
    obs_x = [i for i, v in enumerate(c) if round(float(v), 6) in obs_c.index]
    ax1.plot(obs_x, [obs_c[round(float(c[i]), 6)] for i in obs_x], "ko", ms=4, label="last session (observed)")
    ax1.set_xticks(xpos, [f"{v:g}" for v in c])
    ax1.set_xlabel("contrast")
    ax1.set_ylabel("fraction correct")
    ax1.set_ylim(0.0, 1.05)
    ax1.set_title("Accuracy per contrast", fontsize=9)
    ax1.legend(fontsize=7)
    end = np.array([e for e, _ in fc.learning_curve])
    lm = np.array([iv.mean for _, iv in fc.learning_curve])
    ax2.fill_between(end, [iv.lo for _, iv in fc.learning_curve], [iv.hi for _, iv in fc.learning_curve], color="C3", alpha=0.2, lw=0)
    ax2.plot(end, lm, "-", color="C3", lw=1.5)
    ax2.set_ylim(0.0, 1.05)
    ax2.set_xlabel("trial (end of bin)")
    ax2.set_ylabel("fraction correct")
    ax2.set_title("Within-session learning curve", fontsize=9)
    px = np.array([v for v, _ in fc.psychometric]) * 100.0
    pm = np.array([iv.mean for _, iv in fc.psychometric])
    ax3.fill_between(px, [iv.lo for _, iv in fc.psychometric], [iv.hi for _, iv in fc.psychometric], color="C3", alpha=0.2, lw=0)
    ax3.plot(px, pm, "-", color="C3", lw=1.5, label="forecast")
    sx = (100.0 * (last["contrast_right"] - last["contrast_left"])).round(6)
    obs_p = last["choice"].groupby(sx).mean()
    ax3.plot(obs_p.index.to_numpy(), obs_p.to_numpy(), "ko", ms=4, label="last session (observed)")
    ax3.set_ylim(-0.03, 1.03)
    ax3.set_xlabel("signed contrast (%, right > 0)")
    ax3.set_ylabel("p(right)")
    ax3.set_title("Psychometric", fontsize=9)
    ax3.legend(fontsize=7)
    fig.suptitle(f"Forecast of the next session ({fc.n_trials} trials, {fc.n_rollouts} rollouts, {fc.level:.0%} intervals)", fontsize=10)
    return _png(fig, dpi)


# ----------------------------------------------------------------------------- assembly


def build_report(twin: Twin, trials: pd.DataFrame, config: ReportConfig = ReportConfig(), trials_source: str = "<trials>") -> Report:
    """Compute everything on the page.

    Args:
        twin: the loaded twin version.
        trials: the animal's canonical trials table (its whole history, in order).
        config: what to compute.
        trials_source: where the trials came from, shown on the page.

    Raises:
        TwinError: the trials are empty, hold another subject, or do not fit the twin's features.
    """
    subject = twin.meta.subject
    if trials.empty:
        raise TwinError(f"no trials for subject {subject!r}")
    others = set(trials["subject"].astype(str)) - {subject}
    if others:
        raise TwinError(f"the trials hold other subjects than {subject!r}: {sorted(others)[:5]}")
    trials = trials.sort_values(["session", "trial"], kind="stable").reset_index(drop=True)
    model = twin.model
    named = bool(model.spec.features.stimuli)
    notes: list[str] = []
    prediction = predict(model, trials)
    trained_through = twin.meta.trained_through_session
    table = session_table(trials, prediction, trained_through)
    last_session = int(table["session"].max())
    if last_session > trained_through:
        after = f"Session {last_session}" if last_session == trained_through + 1 else f"Sessions {trained_through + 1}–{last_session}"
        notes.append(f"{after} came after the twin's training (through session {trained_through}): its predictions there are forecasts, not fits.")

    status: pd.DataFrame | None = None
    criteria: dict[str, int] = {}
    if named:
        notes.append("The twin uses named stimulus inputs, not IBL contrasts: psychometric curves, training criteria, Δw maps over contrast and the task forecast do not apply.")
    else:
        fits = session_psychometric_fits(trials)
        table = table.merge(fits, on="session", how="left")
        try:
            crit = criteria_sessions(trials, _CRITERIA, source=trials_source)
            status = training_criteria(trials, _CRITERIA, source=trials_source)
            table = table.merge(crit[["session", *(f"passes_{c.name}" for c in _CRITERIA)]], on="session", how="left")
            for c in _CRITERIA:
                v = status[f"session_{c.name}"].iloc[0]
                if not pd.isna(v):
                    criteria[f"trained_{c.name}"] = int(v)
        except TrialDataError as exc:
            notes.append(f"Training criteria not judged: {exc}")

    forecast: SessionForecast | None = None
    if not named:
        state = _forecast_state(twin, trials)
        n_trials = config.forecast_trials or _default_forecast_trials(trials)
        forecast = forecast_session(
            model, state, config.protocol, n_trials, n_rollouts=config.forecast_rollouts, seed=config.seed, interval_level=config.interval_level, bin_size=min(config.forecast_bin, n_trials)
        )

    history = history_dependence(prediction, trials, config.max_run)
    figures: list[ReportFigure] = [
        ReportFigure(
            "learning-curve",
            "Learning curve",
            "Fraction of rewarded trials per session (black) against the twin's mean predicted p(correct), run teacher-forced along the animal's own choices and outcomes (orange); "
            "the square is the forecast of the next session with its interval across simulated rollouts; dash-dotted lines mark the sessions at which IBL criteria were first met.",
            fig_learning_curve(table, trained_through, forecast, last_session + 1, criteria, config.dpi),
        )
    ]
    if not named:
        shown = _pick_sessions(table["session"].to_numpy(), config.max_psychometric_sessions)
        cap = "" if len(shown) == len(table) else f" ({len(shown)} of {len(table)} sessions shown, evenly spaced)"
        figures.append(
            ReportFigure(
                "psychometrics",
                "Psychometric curves per session",
                "Fraction of right choices per signed contrast (points, ±1 binomial s.e.), the erf psychometric with two lapses fitted to the session (line; IBL psychofit convention), and the twin's mean predicted p(right) (dashed)"
                + cap
                + ".",
                fig_psychometrics(trials, prediction, table, shown, config.dpi),
            )
        )
    figures.append(
        ReportFigure(
            "weights",
            "Weight trajectories",
            "The policy weights the twin holds on each trial, p(right) = sigmoid(w · x), teacher-forced along the animal's trials. Dotted lines mark session starts"
            + ("; the shaded part lies after the twin's trained-through session." if last_session > trained_through else "."),
            fig_weights(trials, prediction, trained_through, config.dpi),
        )
    )
    if not named:
        dw = delta_w_map(model, prediction.weights, config.dw_states, config.seed)
        rec = " For this history-dependent rule the recurrent state is set to zero." if model.rule.state_size > 0 else ""
        figures.append(
            ReportFigure(
                "delta-w",
                "Δw maps: correct vs error trials",
                f"The twin's weight update after one rewarded (top) and one error (bottom) trial at each signed contrast (at 0 the right side is rewarded), "
                f"evaluated on {dw['state'].nunique()} weight states sampled from its trajectory: mean (line) and 10–90% range over states (band); the twin's learning-rate multipliers are included.{rec}",
                fig_delta_w(dw, config.dpi),
            )
        )
    figures.append(
        ReportFigure(
            "history",
            "History dependence of the update",
            f"Mean within-session update w(t+1) − w(t) (± s.e.m.) after a trial that ends a run of rewards (green) or of errors (red), against the run length (runs of {config.max_run} or more pooled). "
            "The bias update is signed toward the chosen side (positive: the next choice is more likely the same side).",
            fig_history(history, config.max_run, config.dpi),
        )
    )
    if forecast is not None:
        figures.append(
            ReportFigure(
                "forecast",
                "Forecast of the next session",
                f"{forecast.n_rollouts} simulated copies of session {last_session + 1} under {'the default IBL training protocol' if config.protocol == IBL_DEFAULT else 'the planned protocol'}, "
                f"each starting from the twin's state after session {last_session}; "
                f"means with {forecast.level:.0%} equal-tailed intervals across copies. Black points: the animal's last session.",
                fig_forecast(forecast, trials, config.dpi),
            )
        )
    return Report(
        subject=subject,
        meta=twin.meta,
        trials_source=trials_source,
        sessions=table,
        status=status,
        forecast=forecast,
        forecast_from_session=last_session,
        history=history,
        figures=tuple(figures),
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------- HTML

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Twin report: $subject</title>
<style>
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; color: #1d1d1f; background: #ffffff; line-height: 1.4; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 0.6em; }
nav a { margin-right: 1em; font-size: 0.9em; }
figure { margin: 0.6em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; max-width: 980px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f6; }
td.l, th.l { text-align: left; }
.ok { color: #17692f; font-weight: bold; }
.no { color: #9a3412; font-weight: bold; }
.notes { background: #fff8e6; border: 1px solid #f1d58a; padding: 6px 12px; font-size: 0.9em; }
details { margin: 0.5em 0; }
pre { background: #f6f6f8; padding: 8px; overflow-x: auto; font-size: 0.8em; }
footer { margin-top: 2em; color: #777; font-size: 0.8em; }
</style>
</head>
<body data-figures-expected="$n_figures">
<header>
<h1>Twin report: $subject</h1>
<p class="sub">$subtitle</p>
<nav>$nav</nav>
</header>
$notes
$sections
<footer>$footer</footer>
<script>
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img");
  var ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute("data-figures-total", String(imgs.length));
  document.body.setAttribute("data-figures-loaded", String(ok));
});
</script>
</body>
</html>
"""
)


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: object, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="l">{_e(_fmt(v))}</td>' if i < left else f"<td>{_e(_fmt(v))}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(f: ReportFigure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(f.title)}"><figcaption>{_e(f.caption)}</figcaption></figure>'


def _status_html(r: Report) -> str:
    if r.status is None:
        return "<p>Training criteria could not be judged for these trials (see the notes above).</p>"
    row = r.status.iloc[0]
    items = []
    for c in _CRITERIA:
        s, t = row[f"session_{c.name}"], row[f"trials_{c.name}"]
        if pd.isna(s):
            items.append(f'<li><b>trained_{_e(c.name)}</b>: <span class="no">not reached</span> in {_fmt(int(row["n_sessions"]))} sessions ({_fmt(int(row["n_trials"]))} trials)</li>')
        else:
            label = r.sessions.loc[r.sessions["session"] == int(s), "label"]
            lab = f" ({_e(label.iloc[0])})" if len(label) and str(label.iloc[0]) not in ("", "None", "nan") else ""
            items.append(f'<li><b>trained_{_e(c.name)}</b>: <span class="ok">reached</span> at session {int(s)}{lab}, after {_fmt(int(t))} trials</li>')
    crit = ", ".join(
        f"trained_{c.name}: |bias| &lt; {c.max_abs_bias:g}%, threshold &lt; {c.max_threshold:g}%, lapses &lt; {c.max_lapse:g}, &gt; {c.min_trials} trials per session, easy accuracy &gt; {c.min_easy_accuracy:g}"
        for c in _CRITERIA
    )
    return (
        f"<ul>{''.join(items)}</ul>"
        f"<p class=\"sub\">IBL criteria judged on windows of {_CRITERIA[0].window} consecutive sessions (psychometric fitted to the pooled window; {crit}). "
        "The trained_1b response-time condition is not applied (no response times in the trials table).</p>"
    )


def _meta_html(r: Report) -> str:
    m = r.meta
    rows: list[tuple[str, object]] = [
        ("subject", m.subject),
        ("version", m.version),
        ("aliases", ", ".join(m.aliases) or "–"),
        ("rule", m.rule),
        ("features", ", ".join(_feature_names(m)) or "–"),
        ("trained through session", m.trained_through_session),
        ("adaptation", m.hyperparameters.get("adaptation", "–")),
        ("created", m.created_at.isoformat(timespec="seconds")),
        ("code version", m.code_version),
        ("data hash (SHA-256)", m.data_hash[:16] + "…"),
        ("weights file", m.weights_file),
    ]
    rows += [(f"metric: {k}", float(v)) for k, v in sorted(m.metrics.items())]
    body = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(_fmt(v, 4))}</td></tr>' for k, v in rows)
    hyper = _e(json.dumps({"spec": m.spec, "hyperparameters": m.hyperparameters}, indent=2, sort_keys=True, default=str))
    return f"<table><tbody>{body}</tbody></table><details><summary>Specification and hyperparameters (JSON)</summary><pre>{hyper}</pre></details>"


def _feature_names(m: TwinVersion) -> tuple[str, ...]:
    from twin.models.learner import ModelSpec

    try:
        return ModelSpec.from_dict(m.spec).features.names
    except (KeyError, TypeError, ValueError):
        return ()


def _forecast_html(r: Report) -> str:
    fc = r.forecast
    if fc is None:
        return ""
    rows: list[list[object]] = [["overall", fc.accuracy.mean, fc.accuracy.lo, fc.accuracy.hi]]
    rows += [[f"contrast {c:g}", iv.mean, iv.lo, iv.hi] for c, iv in fc.by_contrast]
    rows.append(["protocol phase at the end", fc.end_phase.mean, fc.end_phase.lo, fc.end_phase.hi])
    return _table(["fraction correct", "mean", f"{fc.level:.0%} low", f"{fc.level:.0%} high"], rows)


def _sessions_html(r: Report) -> str:
    t = r.sessions
    cols = [c for c in ("session", "label", "n_trials", "observed", "predicted", "ll_per_trial", "trained", "bias", "threshold", "lapse_low", "lapse_high", "passes_1a", "passes_1b") if c in t.columns]
    if "label" in cols and t["label"].astype(str).isin(["", "None", "nan"]).all():
        cols.remove("label")
    heads = {
        "n_trials": "trials",
        "observed": "observed acc.",
        "predicted": "twin acc.",
        "ll_per_trial": "twin LL/trial (nats)",
        "trained": "in training",
        "threshold": "threshold (%)",
        "bias": "bias (%)",
        "passes_1a": "passes 1a",
        "passes_1b": "passes 1b",
    }
    rows = [[row[c] for c in cols] for _, row in t.iterrows()]
    return _table([heads.get(c, c) for c in cols], rows, left=2 if "label" in cols else 1)


def render_html(r: Report) -> str:
    """The report as one self-contained HTML page (see the module docstring)."""
    m = r.meta
    sections: list[str] = []
    nav: list[tuple[str, str]] = []

    def section(key: str, title: str, body: str) -> None:
        nav.append((key, title))
        sections.append(f'<section id="{_e(key)}"><h2>{_e(title)}</h2>{body}</section>')

    status_line = ""
    if r.status is not None:
        got = [f"trained_{c.name} at session {int(r.status[f'session_{c.name}'].iloc[0])}" for c in _CRITERIA if not pd.isna(r.status[f"session_{c.name}"].iloc[0])]
        status_line = "; ".join(got) if got else "no IBL criterion reached yet"
    section("status", "Training status", _status_html(r))
    section("twin", "Twin", _meta_html(r))
    for f in r.figures:
        body = _figure(f)
        if f.key == "forecast":
            body += _forecast_html(r)
        section(f.key, f.title, body)
    section("sessions", "Sessions", _sessions_html(r))
    n_trials = int(r.sessions["n_trials"].sum())
    subtitle = (
        f"Twin version {m.version}{' (' + ', '.join(m.aliases) + ')' if m.aliases else ''}, rule {m.rule}, trained through session {m.trained_through_session}. "
        f"{len(r.sessions)} sessions, {n_trials:,} trials ({r.trials_source})." + (f" Status: {status_line}." if status_line else "")
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
    return _PAGE.substitute(
        subject=_e(r.subject),
        subtitle=_e(subtitle),
        nav="".join(f'<a href="#{_e(k)}">{_e(t)}</a>' for k, t in nav),
        notes=f'<div class="notes"><ul>{notes}</ul></div>' if notes else "",
        sections="\n".join(sections),
        n_figures=str(len(r.figures)),
        footer=_e(f"Generated {r.generated_at.isoformat(timespec='seconds')} by learning-twins {m.code_version}."),
    )


def _write_html(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), mode=0o644)  # a report is meant to be shared


def write_report(
    store: TwinStore,
    subject: str,
    out: str | Path,
    *,
    trials: pd.DataFrame | str | Path | None = None,
    trials_source: str = "<trials>",
    version: int | None = None,
    alias: str | None = None,
    config: ReportConfig = ReportConfig(),
) -> Path:
    """Write the report of ``subject``'s twin to ``out`` (one HTML file, written atomically).

    Args:
        store: the twin store.
        subject: the animal.
        out: the HTML file to write.
        trials: used when the subject has no stored sessions: a canonical table (any subjects)
            or a trials file (any layout :func:`twin.data.readers.load_trials` reads).
        trials_source: name of a ``trials`` table on the page and in messages.
        version: the twin version (default: ``alias``'s, else the latest).
        alias: an alias naming the version (``serving``, say).
        config: what the report computes.

    Returns:
        The written path.

    Raises:
        TwinNotFoundError: no such subject, version or alias.
        TwinError: no trials for the subject, or trials that do not fit the twin.
    """
    twin = store.load_twin(subject, version=version, alias=alias)
    df, source = resolve_trials(store, subject, trials, trials_source)
    report = build_report(twin, df, config, source)
    path = Path(out)
    _write_html(report.html(), path)
    return path


__all__ = [
    "Report",
    "ReportConfig",
    "ReportFigure",
    "build_report",
    "delta_w_map",
    "history_dependence",
    "render_html",
    "resolve_trials",
    "run_lengths",
    "session_psychometric_fits",
    "session_table",
    "write_report",
]
