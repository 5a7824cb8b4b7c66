"""The per-animal report as one self-contained HTML page (style, one small script, figures as
``data:`` URIs; a Content-Security-Policy forbids loading anything else)."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from string import Template
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from twin.persist.store import TwinVersion
from twin_cli.report.content import CRITERIA as _CRITERIA
from twin_cli.report.content import ReportFigure

if TYPE_CHECKING:
    from twin_cli.report.content import Report

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
figcaption { font-size: 0.9em; color: #444; max-width: 1080px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
.tablewrap { max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
th { background: #f4f4f6; }
td.l, th.l { text-align: left; }
.ok { color: #17692f; font-weight: bold; }
.no { color: #9a3412; font-weight: bold; }
.notes { background: #fff8e6; border: 1px solid #f1d58a; padding: 6px 12px; font-size: 0.9em; }
.warn { background: #fdecea; border: 2px solid #b91c1c; color: #7f1d1d; padding: 8px 14px; margin: 0.8em 0; }
.warn h2 { color: #b91c1c; border: none; margin: 0.2em 0; padding: 0; }
details { margin: 0.5em 0; }
pre { background: #f6f6f8; padding: 8px; overflow-x: auto; font-size: 0.8em; }
footer { margin-top: 2em; color: #777; font-size: 0.8em; }
</style>
</head>
<body data-figures-expected="$n_figures" data-warnings="$n_warnings">
<header>
<h1>Twin report: $subject</h1>
<p class="sub">$subtitle</p>
<nav>$nav</nav>
</header>
$warnings
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
  // readability as shown: each figure's smallest font (points, at its dpi) and narrowest panel
  // scaled by how wide the browser shows it; and whether every table fits the window's width
  var minPt = Infinity, minPanel = Infinity, minScale = Infinity;
  for (var j = 0; j < imgs.length; j++) {
    var im = imgs[j];
    if (!im.naturalWidth) { continue; }
    var scale = im.getBoundingClientRect().width / im.naturalWidth;
    var dpi = parseFloat(im.getAttribute("data-dpi"));
    minScale = Math.min(minScale, scale);
    minPt = Math.min(minPt, parseFloat(im.getAttribute("data-min-font-pt")) * dpi / 96 * scale);
    minPanel = Math.min(minPanel, parseFloat(im.getAttribute("data-min-panel-px")) * scale);
    im.setAttribute("data-shown-scale", scale.toFixed(3));
  }
  document.body.setAttribute("data-min-shown-font-pt", String(minPt));
  document.body.setAttribute("data-min-shown-panel-px", String(minPanel));
  document.body.setAttribute("data-min-figure-scale", String(minScale));
  var tables = document.querySelectorAll("table");
  var width = document.documentElement.clientWidth, cut = 0;
  for (var k = 0; k < tables.length; k++) {
    var box = tables[k].getBoundingClientRect();
    var wrap = tables[k].parentElement;
    if (box.right > width + 0.5 || box.left < -0.5 || (wrap && wrap.scrollWidth > wrap.clientWidth + 1)) { cut++; }
  }
  document.body.setAttribute("data-tables-cut", String(cut));
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
    r = f.figure
    data = base64.b64encode(r.png).decode("ascii")
    # at 96 dpi one PNG pixel is one CSS pixel: the width attribute keeps the natural size
    size = f' width="{r.width_px}"' if r.dpi == 96 else ""
    meta = f' data-dpi="{r.dpi}" data-min-font-pt="{r.min_font_pt:g}" data-min-panel-px="{r.min_panel_px:.0f}"'
    return f'<figure><img src="data:image/png;base64,{data}"{size}{meta} alt="{_e(f.title)}"><figcaption>{_e(f.caption)}</figcaption></figure>'


def _warnings_html(r: Report) -> str:
    if not r.warnings:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in r.warnings)
    return (
        '<div class="warn" id="warnings" role="alert"><h2>Warning: this twin may not be trustworthy</h2>'
        f"<p>Its predictions, forecasts and simulated curricula should be read with care:</p><ul>{items}</ul></div>"
    )


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
        ("adaptation", m.hyperparameters.adaptation.value if m.hyperparameters.adaptation else "–"),
        ("created", m.created_at.isoformat(timespec="seconds")),
        ("code version", m.code_version),
        ("data hash (SHA-256)", m.data_hash[:16] + "…"),
        ("weights file", m.weights_file),
    ]
    rows += [(f"metric: {k}", float(v)) for k, v in sorted(m.metrics.scores().items())]
    body = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(_fmt(v, 4))}</td></tr>' for k, v in rows)
    warnings = "; ".join(m.metrics.warnings) or "none (the fits converged)"  # free text: it wraps
    body += f'<tr><th class="l">fit warnings</th><td class="l" style="white-space: normal">{_e(warnings)}</td></tr>'
    hyper = _e(json.dumps({"spec": m.spec.to_dict(), "hyperparameters": m.hyperparameters.to_json()}, indent=2, sort_keys=True, default=str))
    return f"<table><tbody>{body}</tbody></table><details><summary>Specification and hyperparameters (JSON)</summary><pre>{hyper}</pre></details>"


def _feature_names(m: TwinVersion) -> tuple[str, ...]:
    return m.spec.features.names


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
    cols = [
        c
        for c in ("session", "label", "n_trials", "biased", "observed", "easy_observed", "predicted", "easy_predicted", "ll_per_trial", "trained", "bias", "threshold", "lapse_low", "lapse_high", "passes_1a", "passes_1b")
        if c in t.columns
    ]
    if "label" in cols and t["label"].astype(str).isin(["", "None", "nan"]).all():
        cols.remove("label")
    heads = {
        "n_trials": "trials",
        "biased": "biased blocks",
        "observed": "observed acc.",
        "easy_observed": "observed easy acc.",
        "predicted": "twin acc.",
        "easy_predicted": "twin easy acc.",
        "lapse_low": "lapse low",
        "lapse_high": "lapse high",
        "ll_per_trial": "twin LL/trial (nats)",
        "trained": "in training",
        "threshold": "threshold (%)",
        "bias": "bias (%)",
        "passes_1a": "passes 1a",
        "passes_1b": "passes 1b",
    }
    rows = [[row[c] for c in cols] for _, row in t.iterrows()]
    return '<div class="tablewrap">' + _table([heads.get(c, c) for c in cols], rows, left=2 if "label" in cols else 1) + "</div>"


def _pct(d: object) -> str:
    """A stored interval ``{"mean", "lo", "hi"}`` of a fraction as ``+12.3% [+4.0%, +20.1%]``."""
    if not isinstance(d, dict) or not all(isinstance(d.get(k), (int, float)) for k in ("mean", "lo", "hi")):
        return "–"
    return f"{d['mean']:+.1%} [{d['lo']:+.1%}, {d['hi']:+.1%}]"


def _search_html(r: Report) -> str:
    """The store's latest curriculum search: its proposal, per-family speed-ups and changes."""
    res = r.search
    assert res is not None
    p = res.payload
    best, default = p.get("best") or {}, p.get("default") or {}
    cap = p.get("max_sessions", best.get("max_sessions") if isinstance(best, dict) else None)
    cap_text = f"sessions cap {cap}" if cap is not None else "sessions cap not recorded (a search from before the cap was stated)"
    name = lambda s: (s.get("curriculum") or {}).get("name", "?") if isinstance(s, dict) else "?"  # noqa: E731
    trials = lambda s: (s.get("mean_trials") or {}).get("mean") if isinstance(s, dict) else None  # noqa: E731
    parts = [
        f"<p>Search {_e(res.name)} v{res.version} ({_e(res.created_at.isoformat(timespec='seconds'))}), over the store's twins (the cohort, not only this animal); "
        f"every prediction simulated with a {_e(cap_text)}.</p>",
        _table(
            ["curriculum", "mean trials to criterion", "predicted speed-up"],
            [[f"default: {name(default)}", trials(default), "–"], [f"proposed: {name(best)}", trials(best), _pct(p.get("predicted_speedup"))]],
        ),
    ]
    robust, objective = p.get("robust"), p.get("objective")
    if isinstance(robust, dict):
        stat = objective.get("statistic", "?") if isinstance(objective, dict) else "?"
        q = robust.get("quantile")
        lq = robust.get("lower_quantile")
        parts.append(f"<p>Ranked by {_e(stat)}; the {_e(f'{q:.0%}' if isinstance(q, float) else '?')} quantile of the per-(model, animal) speed-ups is {_e(f'{lq:+.1%}' if isinstance(lq, float) else '–')}.</p>")
        fams = [f for f in robust.get("by_family", []) if isinstance(f, dict)]
        if fams:
            parts.append(_table(["rule family", "predicted speed-up", "animals"], [[f.get("family", "?"), _pct(f), f.get("n_units")] for f in fams]))
    attribution = p.get("attribution")
    if isinstance(attribution, dict):
        changes = [c for c in attribution.get("changes", []) if isinstance(c, dict)]
        if changes:
            parts.append("<p>Changes of the best candidate against the default, each judged through the twins (drop-one: its contribution with the others kept; add-one: alone); only those that help robustly make the proposal.</p>")
            parts.append(
                _table(
                    ["change", "drop-one", "add-one", "kept"],
                    [[c.get("description", c.get("axis", "?")), _pct(c.get("drop_one")), _pct(c.get("add_one")), "yes" if c.get("kept") else f"no: {c.get('reason', '')}"] for c in changes],
                )
            )
        else:
            parts.append("<p>The best candidate made no change to the default.</p>")
    return "".join(parts)


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
    if r.search is not None:
        section("curriculum-search", "Curriculum search", _search_html(r))
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
        warnings=_warnings_html(r),
        notes=f'<div class="notes"><ul>{notes}</ul></div>' if notes else "",
        sections="\n".join(sections),
        n_figures=str(len(r.figures)),
        n_warnings=str(len(r.warnings)),
        footer=_e(f"Generated {r.generated_at.isoformat(timespec='seconds')} by learning-twins {m.code_version}."),
    )



__all__ = ["render_html"]
