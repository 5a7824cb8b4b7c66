"""Assembly of a per-animal report: the store reads, the analyses and forecast, the figures.

:func:`write_report` reads the twin and the animal's trials from the store, :func:`build_report`
computes everything on the page from the loaded objects.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from twin.analysis.criteria import criteria_sessions, training_criteria
from twin.analysis.predict import predict, predict_ensemble
from twin.analysis.generative import GenerativeCheck
from twin.analysis.summary import block_psychometric_fits, session_easy_performance, session_psychometric_fits, session_table
from twin.analysis.updates import delta_w_map, history_dependence
from twin.errors import TrialDataError, TwinError
from twin.fit.cohort import twin_end_state
from twin.models.ensemble import TwinEnsemble
from twin.models.state import TwinState
from twin.persist.atomic import atomic_write
from twin.persist.sessions import SessionStore
from twin.persist.store import ResultKind, Twin, TwinStore, TwinVersion
from twin.sim.forecast import SessionForecast, forecast_ensemble_session, forecast_session
from twin.sim.replay import free_weight_band
from twin.protocol import IBL_DEFAULT
from twin_cli.figures import fig_check, fig_delta_w, fig_forecast, fig_history, fig_learning_curve, fig_psychometrics, fig_weights
from twin_cli.report.content import CRITERIA as _CRITERIA
from twin_cli.report.content import Report, ReportConfig, ReportFigure


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



def _forecast_ensemble(twin: Twin, trials: pd.DataFrame) -> TwinEnsemble:
    """An ensemble twin with each component's state at the animal's last session (the stored
    ones when they are there, else each component run teacher-forced through the trials)."""
    ens = twin.ensemble
    assert ens is not None
    last = int(trials["session"].max())
    if ens.states is not None and all(st.through_session == last for st in ens.states):
        return ens
    return replace(ens, states=tuple(twin_end_state(c.model, trials) for c in ens.components))


def _forecast_state(twin: Twin, trials: pd.DataFrame) -> TwinState:
    """The state the next session starts from: the stored one when it is at the animal's last
    session, else the twin run teacher-forced through all the given trials."""
    last = int(trials["session"].max())
    if twin.state is not None and twin.state.through_session == last:
        return twin.state
    return twin_end_state(twin.model, trials)


def _default_forecast_trials(trials: pd.DataFrame) -> int:
    lengths = trials.groupby("session", sort=True).size().to_numpy()
    return int(max(1, np.median(lengths[-3:])))


def _check_figure(twin: Twin, trials: pd.DataFrame, config: ReportConfig, trained_through: int) -> tuple[ReportFigure, GenerativeCheck]:
    """The generative check of this one animal: its twin run free, replaying the contrast sets
    the animal was shown, from the session after the twin's training when there are later
    sessions (a true forecast), else from scratch (the twin's own starting weights; in-sample)."""
    from twin.analysis.generative import generative_check
    from twin.sim.check import run_check, twin_starts

    sessions = sorted(trials["session"].unique())
    cut = sum(1 for v in sessions if v <= trained_through)
    cut = cut if cut < len(sessions) else 0
    subject = twin.meta.subject
    start = twin_starts([twin.twin], trials, [subject], [cut])
    run = run_check(twin.twin.population, start, trials, None, config.forecast_rollouts, seed=config.seed)
    chk = generative_check(run.subjects, run.observed, run.predicted, run.cutoff, run.n_rollouts)
    where = f"from session {sessions[cut]} on (after the twin's training: a forecast)" if cut else "from the first session (the twin's own starting weights; in-sample, the twin was fitted on these sessions)"
    return ReportFigure(
        "generative-check",
        "Generative check: the twin running free",
        f"{run.n_rollouts} free runs of the twin (its own sampled choices) {where}, each session replaying the contrast set the animal was shown, with its length. "
        "Top: the animal's easy-contrast accuracy per session (black) over the twin's 50% and 95% bands (median dashed). "
        "Bottom: trials to trained_1a, the twin's mean and 95% interval against the animal's (open: not reached, censored at its last session).",
        fig_check(chk, f"{subject}: generative check", config.dpi, n_animals=1),
    ), chk


def fit_warnings(meta: TwinVersion) -> list[str]:
    """Why the twin's fit may be poor, from its stored metadata: the fit's convergence warnings
    (:func:`twin.fit.train.convergence_warnings`) and a validation likelihood worse than a coin flip's."""
    out = [f"The fit that made this twin reported: {w}." for w in meta.metrics.warnings]
    val = meta.metrics.val_ll
    if val is not None and math.isfinite(val) and val < -math.log(2.0) and not any("coin flip" in w for w in meta.metrics.warnings):
        out.append(f"The twin's validation log-likelihood, {val:.3f} nats/trial, is worse than a coin flip's ({-math.log(2.0):.3f}): it predicts this animal's held-out choices worse than chance.")
    return out


def check_warnings(check: GenerativeCheck, min_coverage: float = 0.5, criterion: str = "1a") -> list[str]:
    """Why the twin fails its generative check on this animal (one row of ``check.animals``):
    the animal's trials to ``trained_<criterion>`` outside the twin's 95% interval, or fewer than
    ``min_coverage`` of the free sessions (3 or more) with its easy-trial accuracy inside the
    twin's 95% band."""
    out: list[str] = []
    for _, a in check.animals.iterrows():
        if not bool(a[f"scored_{criterion}"]):
            continue
        obs, lo, hi = float(a[f"obs_trials_{criterion}"]), float(a[f"pred_lo95_trials_{criterion}"]), float(a[f"pred_hi95_trials_{criterion}"])
        if not lo <= obs <= hi:
            reached = "reached" if bool(a[f"obs_reached_{criterion}"]) else "had not reached (censored at its last session)"
            out.append(
                f"Generative check failed: {a['subject']} {reached} trained_{criterion} after {obs:,.0f} trials, outside the twin's 95% interval "
                f"[{lo:,.0f}, {hi:,.0f}] (mean {float(a[f'pred_mean_trials_{criterion}']):,.0f}) when run free."
            )
    sess = check.sessions
    for subject, g in sess.groupby("subject", sort=False):
        cov = g["cov95_easy_accuracy"].dropna()
        if len(cov) >= 3 and float(cov.mean()) < min_coverage:
            out.append(
                f"Generative check failed: the twin's 95% band holds {subject}'s easy-trial accuracy in only {int(cov.sum())} of {len(cov)} free sessions "
                f"({float(cov.mean()):.0%}, below {min_coverage:.0%})."
            )
    return out


def _pick_sessions(sessions: np.ndarray, limit: int) -> np.ndarray:
    if len(sessions) <= limit:
        return sessions
    idx = np.unique(np.round(np.linspace(0, len(sessions) - 1, limit)).astype(int))
    return sessions[idx]



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
    prediction = predict(model, trials) if twin.ensemble is None else predict_ensemble(twin.ensemble, trials)
    if twin.ensemble is not None:
        parts = ", ".join(f"{label} {float(w):.2f}" for label, w in zip(twin.ensemble.labels, twin.ensemble.weights))
        notes.append(
            f"The twin is an ensemble ({parts}): its predictions are the weighted mixture of its components' (weights shown: their weighted mean), "
            f"its forecast draws one component per rollout; the update maps and history figures show its largest-weight component ({twin.ensemble.labels[twin.ensemble.main]})."
        )
    trained_through = twin.meta.trained_through_session
    table = session_table(trials, prediction, trained_through)
    last_session = int(table["session"].max())
    if last_session > trained_through:
        after = f"Session {last_session}" if last_session == trained_through + 1 else f"Sessions {trained_through + 1}–{last_session}"
        notes.append(f"{after} came after the twin's training (through session {trained_through}): its predictions there are forecasts, not fits.")

    status: pd.DataFrame | None = None
    criteria: dict[str, int] = {}
    if named:
        notes.append("The twin uses named stimulus inputs, not IBL contrasts: easy-trial performance, psychometric curves, training criteria, weight bands, Δw maps over contrast and the task forecast do not apply.")
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
        n_trials = config.forecast_trials or _default_forecast_trials(trials)
        sizes = dict(n_rollouts=config.forecast_rollouts, seed=config.seed, interval_level=config.interval_level, bin_size=min(config.forecast_bin, n_trials))
        if twin.ensemble is None:
            forecast = forecast_session(model, _forecast_state(twin, trials), config.protocol, n_trials, **sizes)  # type: ignore[arg-type]
        else:
            forecast = forecast_ensemble_session(_forecast_ensemble(twin, trials), config.protocol, n_trials, **sizes)  # type: ignore[arg-type]

    history = history_dependence(prediction, trials, config.max_run)
    easy = _CRITERIA[0].easy_contrast
    figures: list[ReportFigure] = []
    if not named:
        perf = session_easy_performance(trials, prediction, easy)
        table = table.merge(perf, on="session", how="left")
        figures.append(
            ReportFigure(
                "learning-curve",
                "Easy-trial performance per training day",
                f"IBL's learning curve: the fraction of easy trials (contrast ≥ {easy:.0%}) rewarded in each session (black) against the twin's mean predicted p(correct) on the same trials, "
                "run teacher-forced along the animal's own choices and outcomes (orange). Background: the training stage (green: unbiased sessions; purple: sessions with biased P(left) blocks); "
                "dash-dotted lines: the sessions at which IBL criteria were first met; hatched: sessions after the twin's training; squares: the forecast of the next session on its easy contrasts, "
                "with intervals across simulated rollouts.",
                fig_learning_curve(table, trained_through, forecast, last_session + 1, criteria, config.dpi, easy),
            )
        )
        shown = _pick_sessions(table["session"].to_numpy(), config.max_psychometric_sessions)
        cap = "" if len(shown) == len(table) else f" ({len(shown)} of {len(table)} sessions shown, evenly spaced)"
        figures.append(
            ReportFigure(
                "psychometrics",
                "Psychometric curves per session and block",
                "Fraction of right choices per signed contrast (points, ±1 binomial s.e.), the erf psychometric with two lapses fitted (line; IBL psychofit convention) and the twin's mean predicted "
                "p(right) (dashed); biased sessions are split by block, each block type (P(left) = 0.2, 0.8, and the unbiased 0.5 opening) with its own points, fit and twin curve"
                + cap
                + ".",
                fig_psychometrics(trials, prediction, block_psychometric_fits(trials), shown, config.dpi),
            )
        )
    band = free_weight_band(model, trials, config.weight_band_rollouts, 0.9, config.seed) if config.weight_band_rollouts > 0 and not named else None
    band_text = (
        f" The band is the 5–95% range of the twin's weights over {config.weight_band_rollouts} free runs of the twin over exactly this animal's trials (its stimuli, rewarded sides and blocks, "
        "with the twin's own sampled choices and their outcomes, from its starting weights): how far the weights could have gone had the animal made the twin's choices; it shows choice "
        "randomness under the twin, not uncertainty about the twin's parameters."
        if band is not None
        else ""
    )
    figures.append(
        ReportFigure(
            "weights",
            "Weight trajectories",
            "The policy weights the twin holds on each trial, p(right) = sigmoid(w · x), teacher-forced along the animal's trials (line)."
            + band_text
            + " Shading: biased blocks (red: P(left) = 0.8, blue: P(left) = 0.2); dotted lines: session starts"
            + ("; hatched: after the twin's trained-through session." if last_session > trained_through else "."),
            fig_weights(trials, prediction, trained_through, config.dpi, band),
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
    warnings = fit_warnings(twin.meta)
    if not named:
        try:
            fig, chk = _check_figure(twin, trials, config, trained_through)
            figures.append(fig)
            warnings += check_warnings(chk, config.check_min_coverage)
        except (TrialDataError, ValueError) as exc:
            notes.append(f"Generative check not run: {exc}")
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
        warnings=tuple(warnings),
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
    searches = store.results(ResultKind.CURRICULUM_SEARCH)
    report = replace(build_report(twin, df, config, source), search=searches[-1] if searches else None)
    path = Path(out)
    _write_html(report.html(), path)
    return path



__all__ = ["build_report", "check_warnings", "fit_warnings", "resolve_trials", "write_report"]
