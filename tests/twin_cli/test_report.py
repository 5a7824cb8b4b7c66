"""``twin report``: the per-animal HTML page, its computed pieces, the CLI, and the page rendered
in headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it, the browser test skips
without it)."""

from __future__ import annotations

import base64
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
from twin_cli.report import ReportConfig, build_report, resolve_trials, write_report
from twin.fit.cohort import CohortFitConfig, fit_cohort
from twin.analysis.criteria import training_criteria
from twin.data.readers import write_trials
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.persist.sessions import SessionStore
from twin.sim.simulate import simulate
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT
from twin.models.params import Adaptation

STORED = 'mouse <A&B>"1'  # has stored sessions; a name that must be escaped on the page
FILED = "m2"  # no stored sessions: its trials come from a file; its last session is not trained on
FIGURES = ("learning-curve", "psychometrics", "weights", "delta-w", "history", "generative-check", "forecast")
FAST = ReportConfig(forecast_rollouts=40, dw_states=24, seed=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Path]:
    """A tiny store: two REINFORCE-fitted twins (few epochs), one animal's sessions stored."""
    root = tmp_path_factory.mktemp("report")
    trials = simulate(DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), IBL_DEFAULT, 2, 2000, seed=3).trials
    trials["subject"] = trials["subject"].map({"sim-000": STORED, "sim-001": FILED})
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


def test_report_contents_match_the_core(cohort: tuple[Path, pd.DataFrame, Path]) -> None:
    root, trials, _ = cohort
    store = TwinStore(root)
    twin = store.load_twin(STORED)
    df, source = resolve_trials(store, STORED, trials)
    assert source.endswith("not used")  # stored sessions win over a given table
    rep = build_report(twin, df, FAST, source)
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


def test_cli_report_from_a_trials_file(cohort: tuple[Path, pd.DataFrame, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, path = cohort
    out = tmp_path / "m2.html"
    rc = main(["report", FILED, "--store", str(root), "--trials", str(path), "--out", str(out), "--rollouts", "20", "--forecast-trials", "120", "--alias", "serving"])
    assert rc == 0 and f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert str(path) in text  # the trials' source is named
    assert "Session 4 came after the twin" in text  # the last session was not trained on
    assert "20 simulated copies of session 5" in text  # --rollouts reached the forecast
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
