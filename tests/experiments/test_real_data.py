"""The real-data forecasting comparison (experiments/real_data.py) on a tiny subset of the
53-mouse IBL export: table structure, finite likelihoods, the static GLM beating chance on
held-out sessions; and its pieces (session capping, the reference predictor, summaries) on
synthetic tables."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from trial_tables import follower_trials
import torch

from twin.baselines.psytrack import PsyTrackConfig, psytrack_available
from twin.data.batch import make_batch
from twin.fit.train import FitConfig
from twin.data.ibl import default_export_path

REPO = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("experiments_real_data", REPO / "experiments" / "real_data.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


rd = _load_script()


def _export() -> Path | None:
    try:
        path = default_export_path()
    except FileNotFoundError:
        return None
    return path if path.exists() else None


needs_export = pytest.mark.skipif(_export() is None, reason="shared IBL export ibl_may2020_53mice_trained.csv.gz not present")




def test_prepare_sessions_caps_and_excludes() -> None:
    df = follower_trials({"a": [20] * 6, "b": [20] * 3, "c": [20] * 9})
    out, excluded = rd.prepare_sessions(df, k=4, m=2)
    assert excluded == ("b",)
    assert sorted(out["subject"].unique()) == ["a", "c"]
    assert out.groupby("subject")["session"].max().to_dict() == {"a": 6, "c": 6}
    out1, _ = rd.prepare_sessions(df, k=4, m=2, max_subjects=1)
    assert list(out1["subject"].unique()) == ["a"]


def test_last_accuracy_reference() -> None:
    df = follower_trials({"a": [200, 200, 200]})
    batch = make_batch(df)
    test = batch.with_mask(batch.sessions_mask(3))
    ll, hit = rd.last_accuracy_scores(test, 2)
    s2 = df[df["session"] == 2]
    acc = float((s2["choice"] == s2["correct_side"]).mean())
    s3 = df[df["session"] == 3]
    corr = (s3["choice"] == s3["correct_side"]).to_numpy()
    expected = np.where(corr, math.log(acc), math.log(1 - acc)).mean()
    assert float(ll.sum() / test.mask.sum()) == pytest.approx(expected, rel=1e-5)
    assert float(hit.sum() / test.mask.sum()) == pytest.approx(corr.mean())
    assert float(ll[~test.mask].abs().sum()) == 0.0


def test_sign_test() -> None:
    assert rd.sign_test_p(5, 5) == 1.0
    assert rd.sign_test_p(10, 0) == pytest.approx(2 / 1024)
    assert math.isnan(rd.sign_test_p(0, 0))


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        rd.ForecastConfig(k=1)
    with pytest.raises(ValueError):
        rd.ForecastConfig(rules=("static",), twin_rule="dnn")
    cfg = rd.ForecastConfig(seed=3)
    assert cfg.fit_for("rnn").epochs < cfg.fit_for("dnn").epochs and cfg.fit_for("static").seed == 3
    assert cfg.compared == ("dnn", "dnn_delta")


TINY = dict(
    k=3,
    m=2,
    rules=("static", "reinforce", "dnn"),
    fit=FitConfig(epochs=2, patience=2),
    rule_fit=(),
    adapt=FitConfig(learning_rate=0.05, epochs=2, patience=2),
    psytrack=PsyTrackConfig(optimize=("sigma",)) if psytrack_available() else None,
    psytrack_sessions=1,
    max_subjects=2,
)


def _check_result(res: object, n_animals: int) -> None:
    per = res.per_animal
    assert len(per) == n_animals
    assert res.models[0] == "dnn"
    expected_models = {"dnn", "static", "reinforce", rd.LAST_ACCURACY} | ({rd.PSYTRACK} if psytrack_available() else set())
    assert set(res.models) == expected_models
    for m in res.models:
        assert np.isfinite(per[f"ll_{m}"]).all() and (per[f"ll_{m}"] < 0).all()
        assert per[f"acc_{m}"].between(0, 1).all()
    assert (per["n_test_trials"] > 0).all() and (per["n_fit_trials"] > 0).all()
    assert set(res.per_session["model"]) == set(res.models)
    assert set(res.per_session["session"]) <= {4, 5}
    # per-session rows add up to the per-animal numbers
    ps = res.per_session[res.per_session["model"] == "dnn"]
    n = ps.groupby("subject")["n_trials"].sum()
    ll = (ps["ll"] * ps["n_trials"]).groupby(ps["subject"]).sum() / n
    got = per.set_index("subject")
    np.testing.assert_allclose(n.loc[got.index].to_numpy(), got["n_test_trials"].to_numpy())
    np.testing.assert_allclose(ll.loc[got.index].to_numpy(), got["ll_dnn"].to_numpy(), rtol=1e-4)
    assert res.adaptation["chosen"].groupby(res.adaptation["rule"]).sum().eq(1).all()
    models, gains = rd.summarize(res)
    assert list(models["model"]) == ["dnn (twin)", *res.models[1:], "chance"]
    assert set(gains["baseline"]) == set(res.models[1:]) | {"chance"}
    assert set(gains["model"]) == {"dnn (twin)"}
    assert gains["fraction_wins"].between(0, 1).all()


@needs_export
def test_tiny_ibl_comparison(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    from twin.data.ibl import read_ibl_export

    df, _ = read_ibl_export()
    res = rd.compare_forecasts(df, rd.ForecastConfig(**TINY))
    _check_result(res, 2)
    # the static GLM, fitted on earlier sessions, beats chance on every held-out mouse
    assert (res.per_animal["ll_static"] > -math.log(2)).all()
    text = rd.write_outputs(res, tmp_path, "real_data", "tiny", [], "test", 1.0)
    assert (tmp_path / "real_data_per_mouse.csv").exists() and (tmp_path / "real_data_summary.md").exists()
    assert "fraction_wins" in text
    back = pd.read_csv(tmp_path / "real_data_per_mouse.csv")
    assert list(back.columns) == list(res.per_animal.columns)


def test_synthetic_comparison_without_shared_data() -> None:
    df = follower_trials({"a": [150] * 5, "b": [150] * 5, "c": [150] * 2})
    cfg = rd.ForecastConfig(**{**TINY, "psytrack": None})
    res = rd.compare_forecasts(df, cfg)
    assert res.excluded == ("c",)
    assert set(res.models) == {"dnn", "static", "reinforce", rd.LAST_ACCURACY}
    for m in res.models:
        assert np.isfinite(res.per_animal[f"ll_{m}"]).all()


def test_markdown_keeps_small_p_values() -> None:
    table = pd.DataFrame({"model": ["a"], "gain": [0.012345], "n": [3], "sign_test_p": [f"{8.17e-05:.2g}"]})
    text = rd._md(table)
    assert "8.2e-05" in text and "0.0123" in text and "0.0000" not in text
