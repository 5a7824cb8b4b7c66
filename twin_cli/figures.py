"""Every figure the ``twin`` command draws, as PNG: the per-animal report's figures (returned as
bytes for embedding) and the rule-recovery figures of ``twin demo`` and
``experiments/recovery.py`` (weight trajectories, learning curves, Δw maps; written to files).

The analyses they draw are in :mod:`twin.analysis`; this module only plots, with matplotlib's
object API (:class:`matplotlib.figure.Figure` on its Agg canvas; no pyplot state).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from twin.analysis.generative import GenerativeCheck
from twin.analysis.psychometrics import erf_psychometric
from twin.analysis.predict import Prediction
from twin.analysis.summary import session_accuracy
from twin.data.batch import TrialBatch
from twin.fit.recovery import RecoveryResult
from twin.models.learner import LearnerModel
from twin.sim.forecast import SessionForecast

# ----------------------------------------------------------------------------- report figures (PNG bytes)


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



# ----------------------------------------------------------------------------- recovery figures (PNG files)


def _save(fig: MplFigure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


@torch.no_grad()
def weight_trajectories(
    batch: TrialBatch,
    models: dict[str, LearnerModel],
    path: Path,
    true_weights: torch.Tensor | None = None,
    animals: int = 3,
) -> Path:
    """Weights in force on each trial for a few animals: each model's teacher-forced trajectory,
    and the true weights when known (``[B, T, K]``). Dotted lines mark session starts."""
    names = batch.features.names
    n_a = min(animals, batch.n_animals)
    fig = MplFigure(figsize=(4.2 * len(names), 2.4 * n_a))
    axes = fig.subplots(n_a, len(names), squeeze=False, sharex=True)
    trajs = {label: m.trajectory(batch.select(list(range(n_a)))) for label, m in models.items()}
    for a in range(n_a):
        n_t = int(batch.valid[a].sum())
        starts = torch.nonzero(batch.session_start[a, :n_t]).flatten().tolist()
        for k, name in enumerate(names):
            ax = axes[a, k]
            for s in starts[1:]:
                ax.axvline(s, color="0.85", lw=0.5, ls=":")
            if true_weights is not None:
                ax.plot(true_weights[a, :n_t, k].numpy(), color="k", lw=2, label="true")
            for label, w in trajs.items():
                ax.plot(w[a, :n_t, k].numpy(), lw=1.2, label=label)
            ax.set_title(f"{batch.subjects[a]}: w[{name}]", fontsize=9)
            if a == n_a - 1:
                ax.set_xlabel("trial")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("Weight trajectories (teacher-forced)")
    return _save(fig, path)


def learning_curves(batch: TrialBatch, models: dict[str, LearnerModel], path: Path, title: str = "Learning curves") -> Path:
    """Observed vs predicted accuracy per session, averaged over animals."""
    fig = MplFigure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    obs = session_accuracy(batch)
    ax.plot(obs["session"], obs["observed"], "ko-", lw=2, ms=4, label="observed")
    for label, m in models.items():
        acc = session_accuracy(batch, m)
        ax.plot(acc["session"], acc["predicted"], ".-", lw=1.2, label=f"{label} (predicted)")
    ax.set_xlabel("session")
    ax.set_ylabel("fraction correct")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="0.8", lw=0.8)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def delta_w_maps(table: pd.DataFrame, path: Path, title: str = "Δw maps") -> Path:
    """Inferred vs true Δw against signed contrast, for correct and error trials, per weight.

    Args:
        table: :attr:`twin.analysis.dwmap.DeltaWComparison.table` (mean over weight states is plotted,
            with the 10–90% range of the true map shaded).
    """
    weights = list(dict.fromkeys(table["weight"]))
    fig = MplFigure(figsize=(4.2 * len(weights), 6))
    axes = fig.subplots(2, len(weights), squeeze=False, sharex=True)
    for i, outcome in enumerate(("correct", "error")):
        for k, name in enumerate(weights):
            ax = axes[i, k]
            g = table[(table["outcome"] == outcome) & (table["weight"] == name)].groupby("contrast")
            c = np.asarray(list(g.groups))
            ax.fill_between(c, g["dw_true"].quantile(0.1), g["dw_true"].quantile(0.9), color="0.85", label="true 10–90%")
            ax.plot(c, g["dw_true"].mean(), "k-", lw=2, label="true")
            ax.plot(c, g["dw_model"].mean(), "C1--", lw=1.8, label="inferred")
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"after {outcome}: Δw[{name}]", fontsize=9)
            if i == 1:
                ax.set_xlabel("signed contrast (right > 0)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def write_figures(result: RecoveryResult, out_dir: Path, models: tuple[str, ...] = ("reinforce", "dnn", "rnn")) -> list[Path]:
    """Weight trajectories, learning curves and Δw maps of one recovery run."""
    fam = result.family.value
    chosen = {m: result.fits[m].model for m in models if m in result.fits}
    idx = [result.simulation.trials["subject"].drop_duplicates().tolist().index(s) for s in result.test.subjects]
    true_w = result.simulation.weights[torch.as_tensor(idx)]
    paths = [
        weight_trajectories(result.test, chosen, out_dir / f"{fam}_weights.png", true_weights=true_w),
        learning_curves(result.test, {"truth": result.truth, **chosen}, out_dir / f"{fam}_learning_curves.png", title=f"{fam} truth: held-out animals"),
    ]
    for rule, dw in result.dw.items():
        paths.append(delta_w_maps(dw.table, out_dir / f"{fam}_dw_{rule}.png", title=f"{fam} truth vs inferred {rule} (r = {dw.min_correlation:.3f})"))
    return paths


__all__ = [
    "delta_w_maps",
    "fig_delta_w",
    "fig_forecast",
    "fig_history",
    "fig_learning_curve",
    "fig_psychometrics",
    "fig_weights",
    "learning_curves",
    "weight_trajectories",
    "write_figures",
]


# ----------------------------------------------------------------------------- generative check


def fig_check(check: GenerativeCheck, title: str, dpi: int = 110, n_animals: int = 4, criterion: str = "1a") -> bytes:
    """The generative check's posterior-predictive figure: each of the first ``n_animals``
    animals' easy-contrast accuracy per free session (black) over the twin's fan (50% and 95%
    bands, median dashed), and every animal's trials to ``criterion``: the twin's mean and 95%
    interval against what the animal did (open marker: never reached, censored at its last session)."""
    subjects = list(dict.fromkeys(check.sessions["subject"]))[:n_animals]
    fig = MplFigure(figsize=(3.0 * max(len(subjects), 2), 6.2), layout="constrained")
    grid = fig.add_gridspec(2, max(len(subjects), 1))
    for j, s in enumerate(subjects):
        ax = fig.add_subplot(grid[0, j])
        g = check.sessions[check.sessions["subject"] == s]
        x = g["session"].to_numpy()
        ax.fill_between(x, g["pred_q025_easy_accuracy"], g["pred_q975_easy_accuracy"], color="C1", alpha=0.18, lw=0, label="twin 95%")
        ax.fill_between(x, g["pred_q25_easy_accuracy"], g["pred_q75_easy_accuracy"], color="C1", alpha=0.35, lw=0, label="twin 50%")
        ax.plot(x, g["pred_q50_easy_accuracy"], "--", color="C1", lw=1.2)
        ax.plot(x, g["obs_easy_accuracy"], "ko-", ms=3, lw=1.5, label="animal")
        ax.set_ylim(0.3, 1.02)
        ax.set_title(str(s), fontsize=8)
        ax.set_xlabel("session", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.set_ylabel("easy-contrast accuracy", fontsize=8)
            ax.legend(fontsize=6, loc="lower right")
    a = check.animals[check.animals[f"scored_{criterion}"]].reset_index(drop=True)
    ax = fig.add_subplot(grid[1, :])
    if len(a):
        order = np.argsort(a[f"obs_trials_{criterion}"].to_numpy(), kind="stable")
        a = a.iloc[order].reset_index(drop=True)
        i = np.arange(len(a))
        mean = a[f"pred_mean_trials_{criterion}"].to_numpy()
        ax.vlines(i, a[f"pred_lo95_trials_{criterion}"], a[f"pred_hi95_trials_{criterion}"], color="C1", lw=2, alpha=0.6, label="twin: 95% interval")
        ax.plot(i, mean, "s", color="C1", ms=4, label="twin: mean")
        reached = a[f"obs_reached_{criterion}"].to_numpy().astype(bool)
        obs = a[f"obs_trials_{criterion}"].to_numpy()
        ax.plot(i[reached], obs[reached], "ko", ms=5, label="animal")
        if (~reached).any():
            ax.plot(i[~reached], obs[~reached], "o", mfc="none", mec="k", ms=6, label="animal, not reached (censored)")
        ax.set_xticks(i)
        ax.set_xticklabels(a["subject"], rotation=60, ha="right", fontsize=6)
    s = check.summary
    ax.set_ylabel(f"trials to trained_{criterion}", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(
        f"trials to {criterion}: predicted mean {s.get(f'pred_mean_trials_{criterion}', float('nan')):.0f} vs observed {s.get(f'obs_mean_trials_{criterion}', float('nan')):.0f}; "
        f"trained {s.get(f'pred_frac_trained_{criterion}', float('nan')):.0%} vs {s.get(f'obs_frac_trained_{criterion}', float('nan')):.0%}; "
        f"95% coverage {s.get(f'cov95_{criterion}', float('nan')):.0%}",
        fontsize=8,
    )
    fig.suptitle(title, fontsize=9)
    return _png(fig, dpi)


def check_figure(check: GenerativeCheck, path: Path, title: str) -> Path:
    """Write :func:`fig_check` to ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fig_check(check, title))
    return path
