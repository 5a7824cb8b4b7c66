"""The rolling-origin evaluation (experiments/rolling_origin.py): its pieces on synthetic tables
(mixture scores, the sampled check, sign tests, verdicts), a tiny synthetic rolling run, and its
``--quick`` mode on the shared IBL export when present (< 60 s)."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from trial_tables import follower_trials
import torch

from twin.data.batch import make_batch
from twin.fit.train import FitConfig
from twin.models.ensemble import mixture_log_likelihood

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, file: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


ro = _load("experiments_rolling_origin", "rolling_origin.py")
rd = ro.rd


def _has_export() -> bool:
    try:
        from twin.data.ibl import default_export_path

        return default_export_path().exists()
    except FileNotFoundError:
        return False




def test_mixture_scores_match_the_ensemble_mixture() -> None:
    g = torch.Generator().manual_seed(0)
    ll = -torch.rand(3, 2, 5, generator=g) * 2
    w = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 4] = False
    mix, hit = ro.mixture_scores(ll, w, mask)
    np.testing.assert_allclose(mix[0].numpy(), mixture_log_likelihood(ll[:, 0], w[0]).numpy(), rtol=1e-5)
    np.testing.assert_allclose(mix[1, :4].numpy(), ll[0, 1, :4].numpy(), rtol=1e-5)  # all weight on one component
    assert float(mix[1, 4]) == 0.0 and float(hit[1, 4]) == 0.0
    assert torch.equal(hit[0].bool(), mix[0] > math.log(0.5))


def test_p_correct_from_ll() -> None:
    df = follower_trials({"a": [50, 50]})
    b = make_batch(df)
    p_right = torch.full_like(b.y, 0.7, dtype=torch.float64)
    ll = torch.where(b.y == 1, p_right, 1 - p_right).log()
    pc = ro.p_correct_from_ll(ll, b)
    np.testing.assert_allclose(pc.numpy(), torch.where(b.answer == 1, p_right, 1 - p_right).numpy())


def test_sampled_check_is_calibrated_for_the_true_probability() -> None:
    # animals correct with p = 0.85 on every trial; a forecast sampling p = 0.85 covers ~80% of sessions at 80%
    df = follower_trials({f"a{i}": [300] * 4 for i in range(12)}, seed=1)
    b = make_batch(df)
    test = b.with_mask((b.session >= 3) & b.valid)
    good = ro.sampled_check(test, torch.full(b.y.shape, 0.85, dtype=torch.float64), 200, 0)
    bad = ro.sampled_check(test, torch.full(b.y.shape, 0.6, dtype=torch.float64), 200, 0)
    assert len(good) == 24 and set(good["session"]) == {3, 4}
    assert 0.6 <= good["cov80_acc"].mean() <= 0.97
    assert bad["cov80_acc"].mean() < 0.1
    assert good["crps_acc"].mean() < bad["crps_acc"].mean()
    np.testing.assert_allclose(good["pred_acc"].to_numpy(), 0.85, atol=0.02)


def test_sign_test_and_verdict() -> None:
    r = ro.sign_test(np.array([1.0, 2.0, -1.0, 0.0, np.nan] + [1.0] * 7))
    assert (r["wins"], r["losses"], r["n_pairs"]) == (9, 1, 11)
    assert r["p"] == pytest.approx(2 * 11 / 1024)
    assert math.isnan(ro.sign_test(np.array([0.0]))["p"])
    tests = pd.DataFrame(
        [
            {"score": "ll", "baseline": "static", "origin": "all", "wins": 20, "losses": 1, "p": 1e-5},
            {"score": "ll", "baseline": "reinforce", "origin": "all", "wins": 12, "losses": 9, "p": 0.66},
        ]
    )
    ok, failed = ro.verdict(tests, "ll", ("static", "reinforce", "psytrack"))
    assert not ok and len(failed) == 2 and failed[1].startswith("psytrack")
    assert ro.verdict(tests, "ll", ("static",)) == (True, [])


def test_sign_tests_pair_animals_and_origins() -> None:
    rows = []
    for o in (4, 6):
        for s in ("a", "b", "c"):
            rows += [{"origin": o, "subject": s, "model": "ensemble", "ll": -0.3}, {"origin": o, "subject": s, "model": "static", "ll": -0.4 if s != "c" else -0.2}]
    t = ro.sign_tests(pd.DataFrame(rows), "x")
    pooled = t[(t["origin"] == "all") & (t["baseline"] == "static")].iloc[0]
    assert (pooled["wins"], pooled["losses"], pooled["n_pairs"]) == (4, 2, 6)
    assert set(t["origin"]) == {"all", "4", "6"}


TINY = dict(
    rules=("static", "reinforce", "dnn"),
    fit=FitConfig(epochs=2, patience=2),
    rule_fit=(),
    adapt=FitConfig(learning_rate=0.05, epochs=2, patience=2),
    psytrack=None,
)


def test_synthetic_rolling_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    df = follower_trials({"a": [120] * 6, "b": [120] * 6, "c": [120] * 4}, seed=2)
    cfg = ro.RollingConfig(origins=(3, 4), horizon=2, forecast=rd.ForecastConfig(**TINY), rollouts=5)
    saved = ro._saver(tmp_path / "parts", "ibl", ro.config_line(cfg, True), "test", time.perf_counter(), "0")
    rs = ro.run_rolling(df, cfg, generative=True, on_origin=saved)
    assert [r.k for r in rs] == [3, 4] and rs[1].excluded == ("c",)
    for r in rs:
        per = r.per_animal
        assert set(per["model"]) == {"ensemble", "static", "reinforce", "dnn", rd.LAST_ACCURACY}
        assert np.isfinite(per["ll"]).all() and (per["ll"] < 0).all()
        assert per["gen_crps_acc"].between(0, 1).all() and per["gen_cov80_acc"].between(0, 1).all()
        assert abs(sum(r.weights.values()) - 1) < 1e-6
        # the ensemble's LL lies within the range of its components' (a mixture per trial)
        w = per.pivot_table(index="subject", columns="model", values="ll")
        assert (w["ensemble"] >= w[["static", "reinforce", "dnn"]].min(axis=1) - 1e-6).all()
        assert set(r.per_session["session"]) <= set(range(r.k + 1, r.k + 3))
    per = pd.concat([r.per_animal for r in rs])
    tests = ro.sign_tests(per, "synthetic")
    assert set(tests["score"]) == {"ll", "gen_crps_acc", "gen_crps_easy"}
    text = ro.write_summary(tmp_path, [("synthetic", ro.config_line(cfg, True), rs, tests, "tiny")], "test", 1.0, ("0", "0"), [])
    assert "## Verdicts" in text and (tmp_path / "rolling_origin_per_animal.csv").exists()
    back = pd.read_csv(tmp_path / "rolling_origin_sign_tests.csv")
    assert len(back) == len(tests)
    # the saved origins combine into the same tests
    assert sorted(f.name for f in (tmp_path / "parts").iterdir()) == ["ibl_k3.json", "ibl_k4.json"]
    text2 = ro.combine(tmp_path / "parts", tmp_path / "combined", "ibl")
    assert "--combine" in text2
    again = pd.read_csv(tmp_path / "combined" / "rolling_origin_ibl_sign_tests.csv")
    pd.testing.assert_frame_equal(again.drop(columns="dataset"), back.drop(columns="dataset"))


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        ro.RollingConfig(origins=(1,))
    with pytest.raises(ValueError):
        ro.RollingConfig(rollouts=-1)
    cfg = ro.RollingConfig(origins=(5,), horizon=2)
    assert (cfg.at(5).k, cfg.at(5).m) == (5, 2)


@pytest.mark.skipif(not _has_export(), reason="shared IBL export not present")
def test_quick_mode_on_the_mice(tmp_path: Path) -> None:
    # CPU time, not wall time: on the shared 2-core machine the wall clock says more about the
    # other jobs than about this one (on a quiet machine the two agree)
    t0 = time.process_time()
    text = ro.main(["--quick", "--dataset", "ibl", "--max-subjects", "2", "--no-psytrack", "--rollouts", "5", "--origins", "2", "3", "--horizon", "1", "--out", str(tmp_path)])
    assert time.process_time() - t0 < 60
    assert "Quick mode" in text and "## Verdicts" in text
    per = pd.read_csv(tmp_path / "rolling_origin_ibl_per_animal.csv")
    assert set(per["origin"]) == {2, 3} and per["subject"].nunique() == 2
    assert {"ensemble", "static", "reinforce", "dnn", rd.LAST_ACCURACY} <= set(per["model"])
    assert per["ll"].notna().all() and per["gen_crps_acc"].notna().all()
