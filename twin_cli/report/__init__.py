"""A per-animal report: one self-contained HTML page a lab can read (``twin report SUBJECT``).

The page gathers, for one animal and one stored version of its twin:

* a warning box at the top when the twin is poorly fitted (its fit's convergence warnings, kept
  in the store's metrics, or a validation likelihood worse than chance) or fails its generative
  check (:func:`~twin_cli.report.build.fit_warnings`, :func:`~twin_cli.report.build.check_warnings`);
* IBL's learning curve: easy-trial performance (contrast >= 0.5) per training day against the
  twin's predicted p(correct) on the same trials, teacher-forced along the animal's real trials,
  with the training stages (unbiased, biased blocks) and criteria marked and the forecast of the
  next session;
* psychometric curves per session, biased sessions split by P(left) block: observed fraction of
  right choices per signed contrast, the erf psychometric fitted to each block
  (:func:`twin.analysis.summary.block_psychometric_fits`) and the twin's mean p(right);
* the twin's weight trajectories (teacher-forced), PsyTrack-style: a 5–95% band over free runs of
  the twin on the animal's own trials (:func:`twin.sim.replay.free_weight_band`) and the blocks shaded;
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

Figures are PNGs drawn at 96 dpi (one pixel per CSS pixel, 9-pt fonts and up, at most 1,104 px
wide) embedded as base64 ``data:`` URIs, the style sheet and one small script are
inline, and a Content-Security-Policy forbids loading anything else, so the file can be mailed
or archived as it is. The script sets ``data-figures-loaded`` on ``<body>`` to the number of
figures the browser decoded (and ``data-figures-total`` to the number of ``<img>``), the smallest
font as shown (``data-min-shown-font-pt``), the narrowest panel as shown and the number of tables
wider than the window (``data-tables-cut``), which the browser test reads back.

The package is the report's application level: :mod:`twin_cli.report.content` (what is on the
page), :mod:`twin_cli.report.build` (store reads and assembly), :mod:`twin_cli.report.page` (the
HTML); its figures are in :mod:`twin_cli.figures` and its analyses in :mod:`twin.analysis`
(:mod:`~twin.analysis.summary`, :mod:`~twin.analysis.updates`, :mod:`~twin.analysis.criteria`,
:mod:`~twin.analysis.dwmap`) and :func:`twin.sim.forecast.forecast_session`.
"""

from twin_cli.report.build import build_report, resolve_trials, write_report
from twin_cli.report.content import Report, ReportConfig, ReportFigure
from twin_cli.report.page import render_html

__all__ = ["Report", "ReportConfig", "ReportFigure", "build_report", "render_html", "resolve_trials", "write_report"]
