"""Every figure the ``twin`` command draws, as PNG: the per-animal report's figures (returned as
:class:`RenderedFigure`, PNG bytes for embedding and what the page checks about them) and the
rule-recovery figures of ``twin demo`` and ``experiments/recovery.py`` (weight trajectories,
learning curves, Δw maps; written to files).

The analyses they draw are in :mod:`twin.analysis`; this module only plots, with matplotlib's
object API (:class:`matplotlib.figure.Figure` on its Agg canvas; no pyplot state). Every figure
uses constrained layout and the fonts of :data:`STYLE` (tick labels 9 pt and up), and the report's
figures are drawn at most :data:`REPORT_WIDTH_IN` wide, so at the report's 96 dpi they show at
their natural size, 9-pt text as 9 CSS points, on a 1280-px window.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from twin.analysis.generative import GenerativeCheck
from twin.analysis.psychometrics import erf_psychometric
from twin.analysis.predict import Prediction
from twin.analysis.summary import block_prior, session_accuracy
from twin.data.batch import TrialBatch
from twin.fit.recovery import RecoveryResult
from twin.models.learner import LearnerModel
from twin.sim.forecast import SessionForecast
from twin.sim.replay import WeightBand

STYLE: dict[str, object] = {
    "font.size": 10.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 10.0,
    "xtick.labelsize": 9.0,
    "ytick.labelsize": 9.0,
    "legend.fontsize": 9.0,
    "figure.titlesize": 11.0,
    "figure.labelsize": 10.0,
}
"""Font sizes (points) of every figure: nothing below 9 pt."""

MIN_FONT_PT = 9.0
"""The smallest font any figure uses (points)."""

REPORT_WIDTH_IN = 11.5
"""Widest report figure (inches): 1,104 px at 96 dpi, inside the page's 1,132-px column."""

RECOVERED_R = 0.8
"""Smallest Δw-map correlation (the weakest weight's) that the recovery figures call a recovered rule."""

# block priors P(left) and their colours (IBL: 0.8 = left block, 0.2 = right block)
_BLOCK_COLOR = {0.2: "#1f6fb4", 0.5: "#222222", 0.8: "#c0392b"}
_BLOCK_NAME = {0.2: "P(left) = 0.2", 0.5: "P(left) = 0.5", 0.8: "P(left) = 0.8"}

_P = ParamSpec("_P")


def _layout() -> ConstrainedLayoutEngine:
    """Constrained layout with room between panels (no tick label of one panel reaching another's)."""
    return ConstrainedLayoutEngine(h_pad=0.06, w_pad=0.06, hspace=0.05, wspace=0.04)


def styled(build: Callable[_P, MplFigure]) -> Callable[_P, MplFigure]:
    """Run a figure builder under :data:`STYLE` (matplotlib reads font sizes when artists are made)."""

    @functools.wraps(build)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> MplFigure:
        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)

    return run


# ----------------------------------------------------------------------------- report figures (PNG bytes)


@dataclass(frozen=True)
class RenderedFigure:
    """A figure drawn to PNG, with what the report page checks of it in the browser.

    Attributes:
        png: the PNG bytes.
        dpi: pixels per inch it was drawn at (at 96 dpi one pixel is one CSS pixel).
        width_px: width of the PNG.
        min_font_pt: smallest font size of any visible text (points).
        min_panel_px: width of the narrowest panel (axes), in PNG pixels.
    """

    png: bytes
    dpi: int
    width_px: int
    min_font_pt: float
    min_panel_px: float


def visible_texts(fig: MplFigure) -> list[Text]:
    """The visible, non-empty text artists of a drawn figure (tick labels, labels, titles, legends);
    tick labels only of the ticks the axis draws (inside its view limits)."""
    hidden: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
            drawn = {id(t) for t in axis._update_ticks()}  # what Axis.draw draws (matplotlib's own get_tightbbox uses it)
            hidden.update(id(lab) for t in ticks if id(t) not in drawn for lab in (t.label1, t.label2))
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or id(t) in hidden:
            continue
        ax = t.axes
        if ax is not None and not ax.get_visible():
            continue
        out.append(t)
    return out


def render(fig: MplFigure, dpi: int) -> RenderedFigure:
    """Draw ``fig`` at ``dpi`` to PNG and measure its smallest font and narrowest panel."""
    fig.set_dpi(dpi)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})  # draws once, laying the figure out
    png = buf.getvalue()
    fonts = [float(t.get_fontsize()) for t in visible_texts(fig)]
    panels = [ax.get_window_extent().width for ax in fig.axes if ax.get_visible()]
    width = int.from_bytes(png[16:20], "big")  # the IHDR chunk
    return RenderedFigure(png, dpi, width, min(fonts) if fonts else MIN_FONT_PT, min(panels) if panels else 0.0)


def _session_edges(trials: pd.DataFrame) -> np.ndarray:
    s = trials["session"].to_numpy()
    return np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` index of each run of True in ``flags``."""
    out, start = [], None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        if not f and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


@styled
def easy_performance_figure(
    table: pd.DataFrame, trained_through: int, forecast: SessionForecast | None, next_session: int, criteria: dict[str, int], easy_contrast: float = 0.5, target: float = 0.8
) -> MplFigure:
    """IBL easy-trial performance per training day: the animal's and the twin's, stages marked.

    Args:
        table: per session ``session``, ``easy_observed``, ``easy_predicted``, ``biased``
            (:func:`twin.analysis.summary.session_easy_performance`).
        trained_through: the twin's last trained session.
        forecast: the next session's forecast (its easy contrasts are drawn), or None.
        next_session: the forecast session's number.
        criteria: ``trained_<name>`` → first session meeting it.
        easy_contrast: unsigned contrast at and above which a trial is easy.
        target: the easy-trial accuracy the ``trained_1a`` criterion asks for (a reference line).
    """
    fig = MplFigure(figsize=(REPORT_WIDTH_IN, 4.6), layout=_layout())
    ax = fig.add_subplot()
    s = table["session"].to_numpy()
    biased = table["biased"].to_numpy().astype(bool)
    for k, (a, b) in enumerate(_runs(biased)):
        ax.axvspan(s[a] - 0.5, s[b] + 0.5, color="#8e44ad", alpha=0.10, lw=0, label="biased blocks (stage)" if k == 0 else None)
    for k, (a, b) in enumerate(_runs(~biased)):
        ax.axvspan(s[a] - 0.5, s[b] + 0.5, color="#27ae60", alpha=0.07, lw=0, label="training, unbiased (stage)" if k == 0 else None)
    last_session = int(s.max())
    if trained_through < last_session:
        ax.axvspan(trained_through + 0.5, last_session + 0.5, facecolor="none", edgecolor="0.6", hatch="//", lw=0, label="after the twin's training")
    ax.plot(s, table["easy_observed"], "ko-", lw=2, ms=4.5, label="animal")
    ax.plot(s, table["easy_predicted"], "o--", color="C1", lw=1.5, ms=3.5, label="twin (teacher-forced p(correct))")
    if forecast is not None:
        easy = [(c, iv) for c, iv in forecast.by_contrast if c >= easy_contrast - 1e-9]
        for j, (c, iv) in enumerate(easy):
            x = next_session + 0.18 * (j - (len(easy) - 1) / 2)
            ax.errorbar([x], [iv.mean], yerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], fmt="s", color=f"C{3 + j}", capsize=4, label=f"forecast, contrast {c:g} ({forecast.level:.0%} interval)")
    ax.axhline(target, color="0.45", lw=0.9, ls=":", label=f"{target:.0%} (trained_1a easy-trial criterion)")
    for i, (name, session) in enumerate(criteria.items()):
        ax.axvline(session, color=("#117a65", "#1a5276")[i % 2], lw=1.6, ls="-.", label=f"{name} reached (session {session})")
    ax.set_ylim(0.3, 1.02)
    ax.set_xlim(float(s.min()) - 0.6, float(max(last_session, next_session if forecast is not None else last_session)) + 0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training day (session)")
    ax.set_ylabel(f"performance on easy trials\n(fraction correct, contrast ≥ {easy_contrast:.0%})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title("Easy-trial performance per training day")
    return fig


def fig_learning_curve(
    table: pd.DataFrame, trained_through: int, forecast: SessionForecast | None, next_session: int, criteria: dict[str, int], dpi: int, easy_contrast: float = 0.5
) -> RenderedFigure:
    """:func:`easy_performance_figure`, rendered."""
    return render(easy_performance_figure(table, trained_through, forecast, next_session, criteria, easy_contrast), dpi)


@styled
def psychometrics_figure(trials: pd.DataFrame, prediction: Prediction, fits: pd.DataFrame, shown: np.ndarray, columns: int = 3) -> MplFigure:
    """One panel per session: p(right) per signed contrast, the erf fit and the twin's p(right),
    each block type of a biased session on its own (colour by P(left)).

    Args:
        trials: the animal's canonical trials.
        prediction: the twin's teacher-forced prediction on them.
        fits: per session and block (:func:`twin.analysis.summary.block_psychometric_fits`).
        shown: the sessions to draw.
        columns: panels per row.
    """
    n = len(shown)
    cols = min(columns, n)
    rows = int(math.ceil(n / cols))
    fig = MplFigure(figsize=(REPORT_WIDTH_IN if cols == columns else 3.8 * cols, 3.1 * rows + 0.8), layout=_layout())
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    x_all = 100.0 * (trials["contrast_right"].to_numpy() - trials["contrast_left"].to_numpy())
    sess = trials["session"].to_numpy()
    pl_all = block_prior(trials)
    choice = trials["choice"].to_numpy().astype(float)
    grid = torch.linspace(-100, 100, 201, dtype=torch.float64)
    used: set[float] = set()
    for i, s in enumerate(shown):
        ax = axes[i // cols, i % cols]
        for _, f in fits[fits["session"] == s].iterrows():
            pl = float(f["prob_left"])
            color = _BLOCK_COLOR.get(pl, "0.4")
            used.add(pl)
            sel = (sess == s) & (pl_all == pl)
            df = pd.DataFrame({"x": x_all[sel], "y": choice[sel], "p": prediction.p_right[sel]}).groupby("x")
            xs = np.asarray(list(df.groups), dtype=float)
            k = df.size().to_numpy()
            obs = df["y"].mean().to_numpy()
            err = np.sqrt(np.clip(obs * (1 - obs), 1e-4, None) / k)
            ax.errorbar(xs, obs, yerr=err, fmt="o", color=color, ms=3.5, lw=0.9, capsize=0)
            curve = erf_psychometric(grid, float(f["bias"]), float(f["threshold"]), float(f["lapse_low"]), float(f["lapse_high"]))
            ax.plot(grid.numpy(), curve.numpy(), "-", color=color, lw=1.2)
            ax.plot(xs, df["p"].mean().to_numpy(), "--", color=color, lw=1.0, alpha=0.8)
        ax.axhline(0.5, color="0.85", lw=0.6)
        ax.axvline(0, color="0.85", lw=0.6)
        ax.set_ylim(-0.03, 1.03)
        biased = " biased" if len(fits[fits["session"] == s]) > 1 else ""
        ax.set_title(f"session {int(s)}{biased} ({int((sess == s).sum())} trials)")
        ax.set_xticks([-100, -50, 0, 50, 100])
        if i // cols == rows - 1 or i + cols >= n:
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("signed contrast (%)")
        if i % cols == 0:
            ax.set_ylabel("p(right choice)")
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].set_visible(False)
    handles = [Line2D([], [], color=_BLOCK_COLOR.get(pl, "0.4"), marker="o", lw=1.2, label=_BLOCK_NAME.get(pl, f"P(left) = {pl:g}")) for pl in sorted(used)]
    handles += [
        Line2D([], [], color="0.3", marker="o", ls="none", label="animal (±1 s.e.)"),
        Line2D([], [], color="0.3", lw=1.2, label="erf fit"),
        Line2D([], [], color="0.3", lw=1.0, ls="--", label="twin"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    fig.suptitle("Psychometric curves per session, biased sessions split by block (right > 0)")
    return fig


def fig_psychometrics(trials: pd.DataFrame, prediction: Prediction, fits: pd.DataFrame, shown: np.ndarray, dpi: int) -> RenderedFigure:
    """:func:`psychometrics_figure`, rendered."""
    return render(psychometrics_figure(trials, prediction, fits, shown), dpi)


@styled
def weights_figure(trials: pd.DataFrame, prediction: Prediction, trained_through: int, band: WeightBand | None = None) -> MplFigure:
    """The twin's teacher-forced weights on each trial, PsyTrack-style: a band around each
    (``band``: the twin run free over the animal's own trials), biased blocks shaded by P(left),
    session starts dotted."""
    names = prediction.feature_names
    fig = MplFigure(figsize=(REPORT_WIDTH_IN, 2.3 * len(names) + 1.0), layout=_layout())
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
    edges = _session_edges(trials)
    sess = trials["session"].to_numpy()
    pl = block_prior(trials)
    after = np.flatnonzero(sess > trained_through)
    t = np.arange(len(trials))
    for k, name in enumerate(names):
        ax = axes[k]
        for e in edges[1:]:
            ax.axvline(e, color="0.8", lw=0.5, ls=":")
        tr = ax.get_xaxis_transform()
        ax.fill_between(t, 0, 1, where=pl > 0.5 + 1e-6, transform=tr, color=_BLOCK_COLOR[0.8], alpha=0.10, lw=0, step="mid", label="block P(left) = 0.8" if k == 0 else None)
        ax.fill_between(t, 0, 1, where=pl < 0.5 - 1e-6, transform=tr, color=_BLOCK_COLOR[0.2], alpha=0.10, lw=0, step="mid", label="block P(left) = 0.2" if k == 0 else None)
        if after.size:
            ax.axvspan(after[0], len(trials), facecolor="none", edgecolor="0.6", hatch="//", lw=0, label="after the twin's training" if k == 0 else None)
        if band is not None:
            ax.fill_between(t, band.lo[:, k], band.hi[:, k], color=f"C{k}", alpha=0.25, lw=0, label=f"{band.level:.0%} band, {band.n_rollouts} free runs" if k == 0 else None)
        ax.plot(t, prediction.weights[:, k], color=f"C{k}", lw=1.2, label="twin, teacher-forced" if k == 0 else None)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_ylabel(f"weight w[{name}]")
    axes[-1].set_xlabel("trial (all sessions in order; dotted lines: session starts)")
    fig.legend(loc="outside lower center", ncols=5)
    fig.suptitle("Weight trajectories of the twin")
    return fig


def fig_weights(trials: pd.DataFrame, prediction: Prediction, trained_through: int, dpi: int, band: WeightBand | None = None) -> RenderedFigure:
    """:func:`weights_figure`, rendered."""
    return render(weights_figure(trials, prediction, trained_through, band), dpi)


@styled
def delta_w_figure(dw: pd.DataFrame) -> MplFigure:
    """Mean Δw over visited weight states against signed contrast, after correct and error trials."""
    names = list(dict.fromkeys(dw["weight"]))
    fig = MplFigure(figsize=(min(REPORT_WIDTH_IN, 4.4 * len(names) + 0.6), 6.2), layout=_layout())
    axes = fig.subplots(2, len(names), squeeze=False, sharex=True)
    for i, outcome in enumerate(("correct", "error")):
        for k, name in enumerate(names):
            ax = axes[i, k]
            g = dw[(dw["outcome"] == outcome) & (dw["weight"] == name)].groupby("contrast")["dw"]
            c = np.asarray(list(g.groups), dtype=float)
            ax.fill_between(c, g.quantile(0.1).to_numpy(), g.quantile(0.9).to_numpy(), color="C0" if i == 0 else "C3", alpha=0.2, lw=0, label="10–90% over states")
            ax.plot(c, g.mean().to_numpy(), "o-", color="C0" if i == 0 else "C3", ms=3, lw=1.5, label="mean")
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"after {outcome} trials")
            ax.set_ylabel(f"Δw[{name}] (one trial)")
            ax.set_xlabel("signed contrast (right > 0)")
            ax.tick_params(labelbottom=True)
            if k == 0:
                ax.legend(loc="best")
    fig.suptitle("Δw maps of the twin: its update after one trial")
    return fig


def fig_delta_w(dw: pd.DataFrame, dpi: int) -> RenderedFigure:
    """:func:`delta_w_figure`, rendered."""
    return render(delta_w_figure(dw), dpi)


@styled
def history_figure(history: pd.DataFrame, max_run: int) -> MplFigure:
    """Mean Δw (± s.e.m.) after runs of rewards and of errors, against the run length."""
    names = list(dict.fromkeys(history["weight"]))
    fig = MplFigure(figsize=(min(REPORT_WIDTH_IN, 4.4 * len(names) + 0.6), 3.8), layout=_layout())
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for k, name in enumerate(names):
        ax = axes[k]
        for outcome, color, dx in (("reward", "C2", -0.08), ("error", "C3", 0.08)):
            g = history[(history["outcome"] == outcome) & (history["weight"] == name) & (history["n"] > 0)]
            ax.errorbar(g["run_length"] + dx, g["mean_dw"], yerr=g["sem"].fillna(0.0), fmt="o-", color=color, ms=3.5, lw=1.2, capsize=2, label=f"after {outcome}s")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_xticks(range(1, max_run + 1), [str(r) if r < max_run else f"{r}+" for r in range(1, max_run + 1)])
        ax.set_xlabel("run length (trials, within session)")
        ax.set_ylabel("Δw[bias] toward the chosen side" if name == "bias" else f"Δw[{name}] (one trial)")
        ax.set_title(f"w[{name}]")
        if k == 0:
            ax.legend()
    fig.suptitle("History dependence of the update (teacher-forced trajectory)")
    return fig


def fig_history(history: pd.DataFrame, max_run: int, dpi: int) -> RenderedFigure:
    """:func:`history_figure`, rendered."""
    return render(history_figure(history, max_run), dpi)


@styled
def forecast_figure(fc: SessionForecast, trials: pd.DataFrame) -> MplFigure:
    """Forecast of the next session: accuracy per contrast, within-session curve, psychometric."""
    fig = MplFigure(figsize=(REPORT_WIDTH_IN, 4.0), layout=_layout())
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
    ax1.plot(obs_x, [obs_c[round(float(c[i]), 6)] for i in obs_x], "ko", ms=4, label="last session")
    ax1.set_xticks(xpos, [f"{v:g}" for v in c])
    ax1.set_xlabel("contrast")
    ax1.set_ylabel("fraction correct")
    ax1.set_ylim(0.0, 1.05)
    ax1.set_title("Accuracy per contrast")
    ax1.legend(loc="lower right")
    end = np.array([e for e, _ in fc.learning_curve])
    lm = np.array([iv.mean for _, iv in fc.learning_curve])
    ax2.fill_between(end, [iv.lo for _, iv in fc.learning_curve], [iv.hi for _, iv in fc.learning_curve], color="C3", alpha=0.2, lw=0)
    ax2.plot(end, lm, "-", color="C3", lw=1.5)
    ax2.set_ylim(0.0, 1.05)
    ax2.set_xlabel("trial (end of bin)")
    ax2.set_ylabel("fraction correct")
    ax2.set_title("Within-session learning curve")
    px = np.array([v for v, _ in fc.psychometric]) * 100.0
    pm = np.array([iv.mean for _, iv in fc.psychometric])
    ax3.fill_between(px, [iv.lo for _, iv in fc.psychometric], [iv.hi for _, iv in fc.psychometric], color="C3", alpha=0.2, lw=0)
    ax3.plot(px, pm, "-", color="C3", lw=1.5, label="forecast")
    sx = (100.0 * (last["contrast_right"] - last["contrast_left"])).round(6)
    obs_p = last["choice"].groupby(sx).mean()
    ax3.plot(obs_p.index.to_numpy(), obs_p.to_numpy(), "ko", ms=4, label="last session")
    ax3.set_ylim(-0.03, 1.03)
    ax3.set_xlabel("signed contrast (%, right > 0)")
    ax3.set_ylabel("p(right choice)")
    ax3.set_title("Psychometric")
    ax3.legend(loc="upper left")
    fig.suptitle(f"Forecast of the next session ({fc.n_trials} trials, {fc.n_rollouts} rollouts, {fc.level:.0%} intervals)")
    return fig


def fig_forecast(fc: SessionForecast, trials: pd.DataFrame, dpi: int) -> RenderedFigure:
    """:func:`forecast_figure`, rendered."""
    return render(forecast_figure(fc, trials), dpi)


# ----------------------------------------------------------------------------- recovery figures (PNG files)


def _save(fig: MplFigure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


@styled
def weight_trajectories_figure(batch: TrialBatch, models: dict[str, LearnerModel], true_weights: torch.Tensor | None = None, animals: int = 3) -> MplFigure:
    """Weights in force on each trial for a few animals: each model's teacher-forced trajectory,
    and the true weights when known (``[B, T, K]``). Dotted lines mark session starts."""
    names = batch.features.names
    n_a = min(animals, batch.n_animals)
    fig = MplFigure(figsize=(5.0 * len(names), 2.8 * n_a + 0.6), layout=_layout())
    axes = fig.subplots(n_a, len(names), squeeze=False, sharex=True)
    with torch.no_grad():
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
            ax.set_title(f"{batch.subjects[a]}")
            ax.set_ylabel(f"w[{name}]")
            if a == n_a - 1:
                ax.set_xlabel("trial")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=len(models) + 1)
    fig.suptitle("Weight trajectories (teacher-forced)")
    return fig


def weight_trajectories(batch: TrialBatch, models: dict[str, LearnerModel], path: Path, true_weights: torch.Tensor | None = None, animals: int = 3) -> Path:
    """Write :func:`weight_trajectories_figure` to ``path``."""
    return _save(weight_trajectories_figure(batch, models, true_weights, animals), path)


@styled
def learning_curves_figure(batch: TrialBatch, models: dict[str, LearnerModel], title: str = "Learning curves") -> MplFigure:
    """Observed vs predicted accuracy per session, averaged over animals."""
    fig = MplFigure(figsize=(7.0, 4.2), layout=_layout())
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
    ax.legend()
    ax.set_title(title)
    return fig


def learning_curves(batch: TrialBatch, models: dict[str, LearnerModel], path: Path, title: str = "Learning curves") -> Path:
    """Write :func:`learning_curves_figure` to ``path``."""
    return _save(learning_curves_figure(batch, models, title), path)


def recovery_verdict(r: float, threshold: float = RECOVERED_R) -> tuple[bool, str]:
    """Whether a Δw map with correlation ``r`` (the weakest weight's) counts as recovered, and a
    line saying so."""
    if math.isfinite(r) and r >= threshold:
        return True, f"recovered: r = {r:.2f} ≥ {threshold:g} (weakest weight)"
    return False, f"NOT RECOVERED: r = {r:.2f} < {threshold:g} (weakest weight); the inferred update does not match the true one"


@styled
def delta_w_map_figure(table: pd.DataFrame, title: str = "Δw maps", r: float | None = None, threshold: float = RECOVERED_R) -> MplFigure:
    """Inferred vs true Δw against signed contrast, for correct and error trials, per weight.

    Args:
        table: :attr:`twin.analysis.dwmap.DeltaWComparison.table` (mean over weight states is plotted,
            with the 10–90% range of the true map shaded).
        title: the figure's title.
        r: the maps' correlation (:attr:`~twin.analysis.dwmap.DeltaWComparison.min_correlation`);
            when given, the figure says whether the rule was recovered (``r >= threshold``), in
            green, or not, in red with a red frame.
        threshold: see :data:`RECOVERED_R`.
    """
    weights = list(dict.fromkeys(table["weight"]))
    fig = MplFigure(figsize=(5.0 * len(weights), 6.6), layout=_layout())
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
            ax.set_title(f"after {outcome} trials")
            ax.set_ylabel(f"Δw[{name}] (one trial)")
            ax.set_xlabel("signed contrast (right > 0)")
            ax.tick_params(labelbottom=True)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    if r is None:
        fig.suptitle(title)
    else:
        ok, line = recovery_verdict(r, threshold)
        fig.suptitle(f"{title}\n{line}", color="#17692f" if ok else "#b91c1c", fontweight="bold")
        if not ok:
            fig.patch.set_edgecolor("#b91c1c")
            fig.patch.set_linewidth(6)
    return fig


def delta_w_maps(table: pd.DataFrame, path: Path, title: str = "Δw maps", r: float | None = None) -> Path:
    """Write :func:`delta_w_map_figure` to ``path``."""
    return _save(delta_w_map_figure(table, title, r), path)


def write_figures(result: RecoveryResult, out_dir: Path, models: tuple[str, ...] = ("reinforce", "dnn", "rnn")) -> list[Path]:
    """Weight trajectories, learning curves and Δw maps of one recovery run (each Δw map says
    whether the rule was recovered, :func:`recovery_verdict`)."""
    fam = result.family.value
    chosen = {m: result.fits[m].model for m in models if m in result.fits}
    idx = [result.simulation.trials["subject"].drop_duplicates().tolist().index(s) for s in result.test.subjects]
    true_w = result.simulation.weights[torch.as_tensor(idx)]
    paths = [
        weight_trajectories(result.test, chosen, out_dir / f"{fam}_weights.png", true_weights=true_w),
        learning_curves(result.test, {"truth": result.truth, **chosen}, out_dir / f"{fam}_learning_curves.png", title=f"{fam} truth: held-out animals"),
    ]
    for rule, dw in result.dw.items():
        paths.append(delta_w_maps(dw.table, out_dir / f"{fam}_dw_{rule}.png", title=f"{fam} truth vs inferred {rule}: Δw maps on held-out weight states", r=dw.min_correlation))
    return paths


# ----------------------------------------------------------------------------- generative check


@styled
def check_fig(check: GenerativeCheck, title: str, n_animals: int = 4, criterion: str = "1a") -> MplFigure:
    """The generative check's posterior-predictive figure: each of the first ``n_animals``
    animals' easy-contrast accuracy per free session (black) over the twin's fan (50% and 95%
    bands, median dashed), and every animal's trials to ``criterion``: the twin's mean and 95%
    interval against what the animal did (open marker: never reached, censored at its last session)."""
    subjects = list(dict.fromkeys(check.sessions["subject"]))[:n_animals]
    fig = MplFigure(figsize=(min(REPORT_WIDTH_IN, 3.6 * max(len(subjects), 2)), 7.0), layout=_layout())
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
        ax.set_title(str(s))
        ax.set_xlabel("session")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        if j == 0:
            ax.set_ylabel("easy-contrast accuracy")
            ax.legend(loc="lower right")
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
        ax.set_xticklabels(a["subject"], rotation=60 if len(a) > 3 else 0, ha="right" if len(a) > 3 else "center")
        ax.set_xlim(-0.8, len(a) - 0.2)
    s = check.summary
    ax.set_xlabel("animal")
    ax.set_ylabel(f"trials to trained_{criterion}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(
        f"trials to {criterion}: predicted mean {s.get(f'pred_mean_trials_{criterion}', float('nan')):.0f} vs observed {s.get(f'obs_mean_trials_{criterion}', float('nan')):.0f}; "
        f"trained {s.get(f'pred_frac_trained_{criterion}', float('nan')):.0%} vs {s.get(f'obs_frac_trained_{criterion}', float('nan')):.0%}; "
        f"95% coverage {s.get(f'cov95_{criterion}', float('nan')):.0%}",
        wrap=True,
    )
    fig.suptitle(title)
    return fig


def fig_check(check: GenerativeCheck, title: str, dpi: int = 110, n_animals: int = 4, criterion: str = "1a") -> RenderedFigure:
    """:func:`check_fig`, rendered."""
    return render(check_fig(check, title, n_animals, criterion), dpi)


def check_figure(check: GenerativeCheck, path: Path, title: str) -> Path:
    """Write :func:`fig_check` to ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fig_check(check, title).png)
    return path


__all__ = [
    "MIN_FONT_PT",
    "RECOVERED_R",
    "REPORT_WIDTH_IN",
    "STYLE",
    "RenderedFigure",
    "check_fig",
    "check_figure",
    "delta_w_figure",
    "delta_w_map_figure",
    "delta_w_maps",
    "easy_performance_figure",
    "fig_check",
    "fig_delta_w",
    "fig_forecast",
    "fig_history",
    "fig_learning_curve",
    "fig_psychometrics",
    "fig_weights",
    "forecast_figure",
    "history_figure",
    "learning_curves",
    "learning_curves_figure",
    "psychometrics_figure",
    "recovery_verdict",
    "render",
    "styled",
    "visible_texts",
    "weight_trajectories",
    "weight_trajectories_figure",
    "weights_figure",
    "write_figures",
]
