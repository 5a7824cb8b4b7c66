"""What a per-animal report holds: its configuration, its figures and the computed page."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from twin.analysis.criteria import TRAINED_1A, TRAINED_1B
from twin.persist.store import StoredResult, TwinVersion
from twin.sim.forecast import SessionForecast
from twin.protocol import IBL_DEFAULT, Curriculum
from twin_cli.figures import RenderedFigure

CRITERIA = (TRAINED_1A, TRAINED_1B)
"""The IBL training criteria the report judges."""


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
        dpi: resolution of the embedded figures (96: one figure pixel per CSS pixel, so the
            figures' 9-pt text shows at 9 pt).
        weight_band_rollouts: free runs of the twin over the animal's own trials whose 5–95%
            range is the band of the weight figure (0: no band).
        check_min_coverage: the generative check fails (a warning on the page) when fewer than
            this share of the free sessions have the animal's easy-trial accuracy inside the
            twin's 95% band (judged on 3 or more free sessions), or when the animal's trials to
            ``trained_1a`` fall outside the twin's 95% interval.
    """

    protocol: Curriculum = IBL_DEFAULT
    forecast_trials: int | None = None
    forecast_rollouts: int = 200
    interval_level: float = 0.9
    forecast_bin: int = 50
    seed: int = 0
    dw_states: int = 64
    max_run: int = 8
    max_psychometric_sessions: int = 18
    dpi: int = 96
    weight_band_rollouts: int = 100
    check_min_coverage: float = 0.5

    def __post_init__(self) -> None:
        if self.forecast_trials is not None and self.forecast_trials < 1:
            raise ValueError(f"forecast_trials must be >= 1 or None, got {self.forecast_trials}")
        for name in ("forecast_rollouts", "forecast_bin", "dw_states", "max_run", "max_psychometric_sessions", "dpi"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.interval_level < 1.0:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")
        if self.weight_band_rollouts < 0:
            raise ValueError(f"weight_band_rollouts must be >= 0, got {self.weight_band_rollouts}")
        if not 0.0 <= self.check_min_coverage <= 1.0:
            raise ValueError(f"check_min_coverage must be in [0, 1], got {self.check_min_coverage}")


@dataclass(frozen=True)
class ReportFigure:
    """One embedded figure.

    Attributes:
        key: anchor id of its section (letters, digits, ``-``).
        title: section heading.
        caption: what it shows (plain text; escaped when rendered).
        figure: the drawn figure (PNG, its dpi, smallest font and narrowest panel).
    """

    key: str
    title: str
    caption: str
    figure: RenderedFigure

    @property
    def png(self) -> bytes:
        """The PNG bytes."""
        return self.figure.png


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
        warnings: reasons not to trust the twin (poor fit, failed generative check), as plain
            sentences, shown prominently at the top of the page; empty when there are none.
        generated_at: when the report was computed (UTC).
        search: the store's latest curriculum search (cohort-level: its proposal, the speed-up
            each rule family predicts, the proposal's changes and their effects), or None.
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
    warnings: tuple[str, ...] = field(default=())
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    search: StoredResult | None = None

    def html(self) -> str:
        """The self-contained HTML page (:func:`twin_cli.report.page.render_html`)."""
        from twin_cli.report.page import render_html  # the page module imports this one

        return render_html(self)


__all__ = ["CRITERIA", "Report", "ReportConfig", "ReportFigure"]
