"""``twin report``: the per-animal HTML page, its computed pieces, the CLI, and the page rendered
in headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it, the browser test skips
without it)."""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin_cli.cli import main
from twin_cli.report import Report, ReportConfig, build_report, resolve_trials, write_report
from twin.fit.cohort import CohortFitConfig, fit_cohort
from twin.analysis.criteria import training_criteria
from twin.data.readers import write_trials
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.persist.sessions import SessionStore
from twin.sim.simulate import simulate
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT
from twin.models.params import Adaptation, TwinModel
from twin.analysis.generative import GenerativeCheck
from twin.persist.records import TwinMetrics
from twin.persist.store import hash_trials
from twin_cli.report.build import check_warnings, fit_warnings

STORED = 'mouse <A&B>"1'  # has stored sessions; a name that must be escaped on the page
FILED = "m2"  # no stored sessions: its trials come from a file; its last session is not trained on
FIGURES = ("learning-curve", "psychometrics", "weights", "delta-w", "history", "generative-check", "forecast")
FAST = ReportConfig(forecast_rollouts=40, dw_states=24, seed=1, weight_band_rollouts=30)


BIASED = dataclasses.replace(IBL_DEFAULT, feedback=dataclasses.replace(IBL_DEFAULT.feedback, biased_blocks=True))


def _with_biased_sessions(trials: pd.DataFrame, subject: str, n_trials: int, seed: int) -> pd.DataFrame:
    """``trials`` with biased-block sessions (P(left) 0.2/0.8 after 90 unbiased trials) appended to
    ``subject``'s, simulated by the same truth (from its starting weights: a fixture, not a learner)."""
    extra = simulate(DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), BIASED, 1, n_trials, seed=seed).trials
    extra["subject"] = subject
    extra["session"] += int(trials.loc[trials.subject == subject, "session"].max())
    return pd.concat([trials, extra]).sort_values(["subject", "session", "trial"], kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Path]:
    """A tiny store: two REINFORCE-fitted twins (few epochs), one animal's sessions stored (its
    last sessions with biased blocks)."""
    root = tmp_path_factory.mktemp("report")
    trials = simulate(DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), IBL_DEFAULT, 2, 1500, seed=3).trials
    trials["subject"] = trials["subject"].map({"sim-000": STORED, "sim-001": FILED})
    trials = _with_biased_sessions(trials, STORED, 900, seed=4)
    last = int(trials.loc[trials.subject == FILED, "session"].max())
    before = trials[~((trials.subject == FILED) & (trials.session == last))]
    store = TwinStore(root / "twins")
    cfg = CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=2, patience=2), adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE)
    fit_cohort(before, store, cfg, progress=False)
    SessionStore(store).add_table(trials[trials.subject == STORED])
    path = write_trials(trials, root / "cohort.parquet")
    return root / "twins", trials, Path(path)


@pytest.fixture(scope="module")
def report_file(cohort: tuple[Path, pd.DataFrame, Path]) -> Path:
    root, _, _ = cohort
    return write_report(TwinStore(root), STORED, root.parent / "out" / "report.html", config=FAST)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(text)
    return p.tags


def test_report_is_one_self_contained_page(report_file: Path) -> None:
    text = report_file.read_text(encoding="utf-8")
    tags = _tags(text)
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == len(FIGURES)
    for a in imgs:
        src = a["src"] or ""
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # nothing is fetched: no external URLs, style sheets, scripts or fonts; CSP forbids them too
    for t, a in tags:
        for k in ("src", "href"):
            v = a.get(k)
            assert v is None or v.startswith(("data:", "#")), f"<{t} {k}={v!r}>"
        assert t not in ("link", "iframe", "object", "embed")
    assert "url(" not in text and "@import" not in text
    assert "default-src 'none'" in text
    ids = {a.get("id") for _, a in tags if a.get("id")}
    assert set(FIGURES) | {"status", "twin", "sessions"} <= ids
    # the subject's name is escaped everywhere
    assert 'mouse &lt;A&amp;B&gt;&quot;1' in text and STORED not in text
    assert "stored sessions in the twin store" in text
    assert f'data-figures-expected="{len(FIGURES)}"' in text
    assert oct(report_file.stat().st_mode & 0o777) == oct(0o644)


@pytest.fixture(scope="module")
def built(cohort: tuple[Path, pd.DataFrame, Path]) -> tuple[Report, str]:
    """The stored animal's report, computed (not rendered), and where its trials came from."""
    root, trials, _ = cohort
    store = TwinStore(root)
    df, source = resolve_trials(store, STORED, trials)
    return build_report(store.load_twin(STORED), df, FAST, source), source


def test_report_contents_match_the_core(cohort: tuple[Path, pd.DataFrame, Path], built: tuple[Report, str]) -> None:
    _, trials, _ = cohort
    rep, source = built
    assert source.endswith("not used")  # stored sessions win over a given table
    assert [f.key for f in rep.figures] == list(FIGURES)
    sub = trials[trials.subject == STORED]
    obs = (sub["feedback"] > 0).groupby(sub["session"]).mean()
    np.testing.assert_allclose(rep.sessions["observed"], obs.to_numpy())
    assert rep.sessions["predicted"].between(0, 1).all() and rep.sessions["trained"].all()
    assert {"bias", "threshold", "lapse_low", "lapse_high", "passes_1a", "passes_1b"} <= set(rep.sessions.columns)
    want = training_criteria(sub)
    assert rep.status is not None
    for c in ("session_1a", "trials_1a", "session_1b", "trials_1b"):
        assert str(rep.status[c].iloc[0]) == str(want[c].iloc[0])
    fc = rep.forecast
    assert fc is not None and fc.n_rollouts == FAST.forecast_rollouts
    assert fc.n_trials == int(np.median(sub.groupby("session").size().to_numpy()[-3:]))
    assert fc.accuracy.lo <= fc.accuracy.mean <= fc.accuracy.hi
    assert rep.forecast_from_session == int(sub["session"].max())
    assert set(rep.history["outcome"]) == {"reward", "error"} and rep.history["n"].sum() > 0
    assert rep.notes == ()
    # IBL's learning curve: easy-trial (contrast >= 0.5) performance per session, biased sessions marked
    easy = sub[(sub["contrast_left"] + sub["contrast_right"]) >= 0.5]
    np.testing.assert_allclose(rep.sessions["easy_observed"], (easy["feedback"] > 0).groupby(easy["session"]).mean().to_numpy())
    biased = sub["prob_left"].isin([0.2, 0.8]).groupby(sub["session"]).any().to_numpy()  # 0 and 1 are debiasing repeats
    assert biased.any() and not biased.all()
    np.testing.assert_array_equal(rep.sessions["biased"].to_numpy(), biased)


def test_report_figures_are_readable_at_1280_px(built: tuple[Report, str]) -> None:
    """Every figure at 96 dpi fits the page's 1,132-px column at its natural size, with no font
    under 9 pt; psychometric panels are at least 250 px wide."""
    rep, _ = built
    for f in rep.figures:
        assert f.figure.dpi == 96 and f.figure.width_px <= 1132, (f.key, f.figure.width_px)
        assert f.figure.min_font_pt >= 9.0, (f.key, f.figure.min_font_pt)
    psy = next(f for f in rep.figures if f.key == "psychometrics")
    assert psy.figure.min_panel_px >= 250, psy.figure.min_panel_px
    assert "split by block" in psy.caption and "5–95% range of the twin's weights over 30 free runs" in next(f for f in rep.figures if f.key == "weights").caption


def test_block_psychometrics_split_biased_sessions(cohort: tuple[Path, pd.DataFrame, Path]) -> None:
    from twin.analysis.summary import block_psychometric_fits, session_psychometric_fits

    _, trials, _ = cohort
    sub = trials[trials.subject == STORED].reset_index(drop=True)
    fits = block_psychometric_fits(sub)
    last = int(sub["session"].max())
    assert sorted(fits.loc[fits.session == last, "prob_left"]) == [0.2, 0.5, 0.8]
    assert fits.loc[fits.session == 1, "prob_left"].tolist() == [0.5]
    assert fits.groupby("session")["n_trials"].sum().tolist() == sub.groupby("session").size().tolist()
    # an unbiased session's one block is the session's own fit
    whole = session_psychometric_fits(sub).set_index("session")
    np.testing.assert_allclose(fits.loc[fits.session == 1, ["bias", "threshold"]].to_numpy()[0], whole.loc[1, ["bias", "threshold"]].to_numpy(), rtol=1e-6)
    # the 0.8 block (more left stimuli) of the animal's data differs from the 0.2 block in its stimuli
    blk = sub[sub.session == last]
    assert (blk.loc[blk.prob_left == 0.8, "correct_side"] == 0).mean() > (blk.loc[blk.prob_left == 0.2, "correct_side"] == 0).mean()
    # an unbiased session is one block (iblrig v8's debiasing, the default now, keeps P(left) at 0.5;
    # repeat-on-error sessions with P(left) 0 or 1: tests/twin/analysis/test_summary.py)
    assert len(fits[fits.session == 1]) == 1


# ----------------------------------------------------------------------------- warnings


def _check(obs: float, lo: float, hi: float, cov: list[float], scored: bool = True, reached: bool = True) -> GenerativeCheck:
    animals = pd.DataFrame(
        {"subject": ["m"], "scored_1a": [scored], "obs_trials_1a": [obs], "obs_reached_1a": [reached], "pred_lo95_trials_1a": [lo], "pred_hi95_trials_1a": [hi], "pred_mean_trials_1a": [(lo + hi) / 2]}
    )
    sessions = pd.DataFrame({"subject": ["m"] * len(cov), "session": range(1, len(cov) + 1), "cov95_easy_accuracy": cov})
    return GenerativeCheck(animals, sessions, {})


def test_check_warnings_fire_when_the_check_fails_and_not_otherwise() -> None:
    assert check_warnings(_check(3000, 2000, 5000, [1, 1, 0, 1])) == []
    out = check_warnings(_check(9000, 2000, 5000, [1, 1, 1]))
    assert len(out) == 1 and "after 9,000 trials, outside the twin's 95% interval [2,000, 5,000]" in out[0]
    assert "had not reached" in check_warnings(_check(900, 2000, 5000, [1.0], reached=False))[0]
    assert check_warnings(_check(9000, 2000, 5000, [1.0], scored=False)) == []  # reached before the cut-off: not judged
    out = check_warnings(_check(3000, 2000, 5000, [1, 0, 0, 0]))
    assert len(out) == 1 and "only 1 of 4 free sessions (25%, below 50%)" in out[0]
    assert check_warnings(_check(3000, 2000, 5000, [0, 0])) == []  # too few sessions to judge coverage
    assert check_warnings(_check(3000, 2000, 5000, [1, 0, 0, 0]), min_coverage=0.2) == []


def test_fit_warnings_come_from_the_twins_metadata(cohort: tuple[Path, pd.DataFrame, Path]) -> None:
    root, _, _ = cohort
    meta = TwinStore(root).load_twin(STORED).meta
    assert meta.metrics.warnings, "a 2-epoch population fit stops at its cap: the store keeps its warning"
    assert any("epoch cap" in w for w in fit_warnings(meta))
    clean = dataclasses.replace(meta, metrics=TwinMetrics(val_ll=-0.5))
    assert fit_warnings(clean) == []
    chance = fit_warnings(dataclasses.replace(meta, metrics=TwinMetrics(val_ll=-0.8)))
    assert len(chance) == 1 and "worse than a coin flip" in chance[0] and f"{-math.log(2):.3f}" in chance[0]


def test_report_shows_the_warning_box(report_file: Path) -> None:
    text = report_file.read_text(encoding="utf-8")
    ids = {a.get("id") for _, a in _tags(text)}
    assert "warnings" in ids and "this twin may not be trustworthy" in text and "epoch cap" in text
    assert 'data-warnings="0"' not in text


def test_a_good_twin_gets_no_warning(tmp_path: Path) -> None:
    """The true learner stored as the twin of an animal it generated: it fits and passes its
    generative check, so the page carries no warning."""
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    trials = simulate(truth, IBL_DEFAULT, 1, 2000, seed=11).trials
    subject = str(trials["subject"].iloc[0])
    store = TwinStore(tmp_path / "twins")
    store.put(subject, TwinModel.of(truth), trained_through_session=int(trials["session"].max()), data_hash=hash_trials(trials), metrics=TwinMetrics(val_ll=-0.45))
    rep = build_report(store.load_twin(subject), trials, FAST)
    assert rep.warnings == ()
    text = rep.html()
    assert 'data-warnings="0"' in text and 'id="warnings"' not in text
    # the same twin stored with a convergence warning is flagged
    store.put(subject, TwinModel.of(truth), trained_through_session=int(trials["session"].max()), data_hash=hash_trials(trials), metrics=TwinMetrics(val_ll=-0.45, population_warnings=("best epoch 2 is the epoch cap 2",)))
    meta = store.load_twin(subject).meta
    assert meta.version == 2 and meta.metrics.warnings == ("population fit: best epoch 2 is the epoch cap 2",)  # kept by the store
    flagged = dataclasses.replace(rep, meta=meta, warnings=tuple(fit_warnings(meta)))
    assert len(flagged.warnings) == 1 and 'id="warnings"' in flagged.html() and 'data-warnings="1"' in flagged.html()


def test_cli_report_from_a_trials_file(cohort: tuple[Path, pd.DataFrame, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, trials, path = cohort
    last = int(trials.loc[trials.subject == FILED, "session"].max())
    out = tmp_path / "m2.html"
    rc = main(["report", FILED, "--store", str(root), "--trials", str(path), "--out", str(out), "--rollouts", "20", "--forecast-trials", "120", "--alias", "serving"])
    assert rc == 0 and f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert str(path) in text  # the trials' source is named
    assert f"Session {last} came after the twin" in text  # the last session was not trained on
    assert f"20 simulated copies of session {last + 1}" in text  # --rollouts reached the forecast
    assert len([a for t, a in _tags(text) if t == "img"]) == len(FIGURES)


def test_cli_report_errors(cohort: tuple[Path, pd.DataFrame, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, trials, _ = cohort
    out = tmp_path / "x.html"
    assert main(["report", "nobody", "--store", str(root), "--out", str(out)]) == 2
    assert "no twin stored for subject 'nobody'" in capsys.readouterr().err
    assert main(["report", FILED, "--store", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no stored sessions" in err and "--trials FILE" in err
    other = write_trials(trials[trials.subject == STORED], tmp_path / "other.parquet")
    assert main(["report", FILED, "--store", str(root), "--trials", str(other), "--out", str(out)]) == 2
    assert "no trials of subject 'm2'" in capsys.readouterr().err
    assert main(["report", STORED, "--store", str(root), "--out", str(out), "--rollouts", "0"]) == 2
    assert "forecast_rollouts" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    env = os.environ.get("TWIN_TEST_CHROMIUM")
    if env:
        return env
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (Debian's `chromium` package; .ci/run installs it)")
def test_report_renders_in_headless_chromium(report_file: Path, tmp_path: Path) -> None:
    binary = _chromium()
    assert binary is not None
    url = report_file.resolve().as_uri()
    shot = tmp_path / "report.png"
    res = _browser(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,3000", url)
    assert shot.is_file(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    img = mpimg.imread(shot)  # floats in [0, 1], [H, W, 3 or 4]
    assert img.shape[0] == 3000 and img.shape[1] == 1280
    rgb = img[..., :3]
    ink = (rgb < 0.9).any(-1)
    assert ink.mean() > 0.05, f"screenshot nearly blank: {ink.mean():.3f} of pixels non-white"
    assert (rgb.std(axis=(0, 1)) > 0.05).all()  # not one flat colour
    # every figure decoded: the page's load handler counts <img> with naturalWidth > 0
    res = _browser(binary, tmp_path / "profile", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    body = next(a for t, a in _tags(res.stdout) if t == "body")
    n_img = len([1 for t, _ in _tags(res.stdout) if t == "img"])
    assert n_img == len(FIGURES)
    assert body.get("data-figures-total") == str(n_img)
    assert body.get("data-figures-loaded") == str(n_img), f"only {body.get('data-figures-loaded')} of {n_img} figures loaded"
    assert re.search(r"Twin report: mouse &lt;A&amp;B&gt;", res.stdout)
    # readable at 1280 px: figures shown at their natural size (no 9-pt text shrunk below 9 pt),
    # psychometric panels at least 250 px wide, no table wider than the window or cut off
    assert body.get("data-tables-cut") == "0", "a table is cut off at 1280 px"
    assert float(body.get("data-min-shown-font-pt") or 0) >= 9.0, body.get("data-min-shown-font-pt")
    for t, a in _tags(res.stdout):
        if t == "img":
            assert float(a.get("data-shown-scale") or 0) >= 0.99, (a.get("alt"), a.get("data-shown-scale"))
            if (a.get("alt") or "").startswith("Psychometric"):
                assert float(a["data-min-panel-px"] or 0) * float(a["data-shown-scale"] or 0) >= 250
    assert body.get("data-warnings") not in (None, "0")  # the 2-epoch twin is flagged


def test_report_shows_the_latest_curriculum_search_with_families_and_changes(built: tuple[Report, str]) -> None:
    import dataclasses
    import datetime as dt

    from twin.persist.store import ResultKind, StoredResult

    rep, _ = built
    iv = lambda m, lo, hi: {"mean": m, "lo": lo, "hi": hi}  # noqa: E731
    payload = {
        "best": {"curriculum": {"name": "trial-3-minimal"}, "mean_trials": iv(5200.0, 5000.0, 5400.0), "max_sessions": 7},
        "default": {"curriculum": {"name": "ibl-default"}, "mean_trials": iv(6000.0, 5800.0, 6200.0), "max_sessions": 7},
        "predicted_speedup": iv(0.133, 0.08, 0.18),
        "max_sessions": 7,
        "objective": {"statistic": "lower_quantile", "quantile": 0.1, "level": 0.95},
        "robust": {"lower_quantile": 0.04, "quantile": 0.1, "by_family": [{"family": "dnn", "n_units": 3, **iv(0.15, 0.1, 0.2)}, {"family": "gru", "n_units": 3, **iv(0.11, 0.02, 0.2)}], "max_sessions": 7},
        "attribution": {
            "changes": [
                {"axis": "session_trials_low", "description": "shortest session (trials) 550 → 420", "drop_one": iv(0.12, 0.06, 0.18), "add_one": iv(0.1, 0.05, 0.15), "kept": True, "reason": "helps"},
                {"axis": "debias", "description": "repeat-on-error debiasing switched off <b>", "drop_one": iv(-0.1, -0.14, -0.06), "add_one": iv(-0.09, -0.12, -0.05), "kept": False, "reason": "harmful"},
            ]
        },
    }
    now = dt.datetime.now(dt.timezone.utc)
    html = dataclasses.replace(rep, search=StoredResult(ResultKind.CURRICULUM_SEARCH, "lab", 2, payload, now)).html()
    assert 'id="curriculum-search"' in html and "sessions cap 7" in html
    assert "+15.0% [+10.0%, +20.0%]" in html and ">gru<" in html  # the per-family table
    assert "no: harmful" in html and "+12.0% [+6.0%, +18.0%]" in html  # the per-change table
    assert "switched off &lt;b&gt;" in html  # escaped
    old = dataclasses.replace(rep, search=StoredResult(ResultKind.CURRICULUM_SEARCH, "old", 1, {"best": payload["best"] | {"max_sessions": None}, "default": payload["default"], "predicted_speedup": payload["predicted_speedup"]}, now)).html()
    assert 'id="curriculum-search"' in old and "+13.3% [+8.0%, +18.0%]" in old
    assert 'id="curriculum-search"' not in rep.html()
