"""The PsyTrack baseline adapter: optional import with a clear error, recovery of a drifting
weight on synthetic data (sign, order of the weights, choice coding), and the carried-forward
forecast on a trial batch."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from twin.baselines import psytrack as adapter
from twin.baselines.psytrack import (
    PsyTrackConfig,
    PsyTrackMissingError,
    carried_forward_log_likelihood,
    fit_psytrack,
    forecast_psytrack,
    psytrack_available,
    require_psytrack,
)
from twin.data.batch import make_batch

needs_psytrack = pytest.mark.skipif(not psytrack_available(), reason="psytrack not installed (pip install psytrack==2.0.2)")

FAST = PsyTrackConfig(optimize=("sigma",))


def _drifting(n_sessions: int = 4, per_session: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic animal: the stimulus weight drifts from -2 to +3 (changes sign), the bias stays at +1."""
    rng = np.random.default_rng(seed)
    n = n_sessions * per_session
    s = rng.choice([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], size=n)
    x = np.stack([s, np.ones(n)], 1)
    w = np.stack([np.linspace(-2.0, 3.0, n), np.full(n, 1.0)], 1)
    p = 1.0 / (1.0 + np.exp(-(x * w).sum(1)))
    y = (rng.random(n) < p).astype(int)
    return x, y, w, np.full(n_sessions, per_session)


def test_missing_psytrack_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def fake(name: str, *a: object, **kw: object) -> object:
        if name == "psytrack":
            raise ModuleNotFoundError("No module named 'psytrack'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(adapter.importlib, "import_module", fake)
    with pytest.raises(PsyTrackMissingError, match=r"pip install psytrack==2\.0\.2"):
        require_psytrack()
    assert not psytrack_available()
    with pytest.raises(ImportError):  # also an ImportError, for callers that catch those
        fit_psytrack(np.ones((4, 1)), np.array([0, 1, 0, 1]), [4], ["bias"])


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PsyTrackConfig(sigma=0.0)
    with pytest.raises(ValueError):
        PsyTrackConfig(optimize=("alpha",))
    with pytest.raises(ValueError):
        PsyTrackConfig(sig_day=None, optimize=("sigDay",))


def test_carried_forward_log_likelihood() -> None:
    x = np.array([[1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]])
    y = np.array([1, 0, 1])
    w = np.array([2.0, 0.0])
    ll = carried_forward_log_likelihood(w, x, y)
    np.testing.assert_allclose(ll, [np.log(1 / (1 + np.exp(-2))), np.log(1 / (1 + np.exp(-2))), np.log(0.5)])
    np.testing.assert_allclose(carried_forward_log_likelihood(np.zeros(2), x, y), np.full(3, -np.log(2)))


@needs_psytrack
def test_recovers_a_drifting_weight_and_its_sign() -> None:
    x, y, w_true, lengths = _drifting()
    y_before = y.copy()
    res = fit_psytrack(x, y, lengths, ["stimulus", "bias"], FAST)
    np.testing.assert_array_equal(y, y_before)  # PsyTrack recodes y in place: the adapter passes a copy
    assert res.names == ("stimulus", "bias") and res.weights.shape == (len(y), 2)
    stim, bias = res.weights[:, 0], res.weights[:, 1]
    n = len(y)
    # the stimulus weight starts negative and ends positive (choices coded right = 1 -> positive weight)
    assert stim[: n // 8].mean() < -0.5
    assert stim[-n // 8 :].mean() > 1.5
    assert res.final_weights[0] > 1.5
    assert np.corrcoef(stim, w_true[:, 0])[0, 1] > 0.9
    # the order of the weights is the caller's: the constant column carries the constant +1 bias
    assert 0.4 < bias.mean() < 1.6
    assert np.isfinite(res.log_evidence) and (res.sigma > 0).all()


@needs_psytrack
def test_input_validation() -> None:
    x, y, _, lengths = _drifting(n_sessions=2, per_session=50)
    with pytest.raises(ValueError, match="add up"):
        fit_psytrack(x, y, [10, 10], ["stimulus", "bias"], FAST)
    with pytest.raises(ValueError, match="both choices"):
        fit_psytrack(x, np.ones_like(y), lengths, ["stimulus", "bias"], FAST)
    with pytest.raises(ValueError, match="0 \\(left\\) or 1"):
        fit_psytrack(x, y + 1, lengths, ["stimulus", "bias"], FAST)


@needs_psytrack
def test_forecast_carries_the_last_weights_forward() -> None:
    x, y, _, _ = _drifting(n_sessions=4, per_session=300, seed=1)
    side = (x[:, 0] > 0).astype(int)
    c = np.abs(x[:, 0])
    df = pd.DataFrame(
        {
            "subject": "a",
            "session": np.repeat(np.arange(1, 5), 300),
            "trial": np.tile(np.arange(1, 301), 4),
            "contrast_left": np.where(side == 0, c, 0.0),
            "contrast_right": np.where(side == 1, c, 0.0),
            "choice": y,
            "feedback": np.where(y == side, 1, -1),
            "correct_side": side,
            "prob_left": 0.5,
        }
    )
    batch = make_batch(df)
    test = batch.with_mask(batch.sessions_mask(4))
    fc = forecast_psytrack(test, fit_through=3, config=FAST)
    row = fc.per_animal.iloc[0]
    assert row["n_trials"] == 300 and row["fit_trials"] == 900
    # the score is the fixed last weights' likelihood on session 4
    sess4 = (batch.session[0] == 4).numpy()
    xb, yb = batch.x[0].numpy().astype(float)[sess4], batch.y[0].numpy()[sess4]
    w_last = np.array([row["w_stimulus"], row["w_bias"]])
    expected = carried_forward_log_likelihood(w_last, xb, yb)
    assert row["ll"] == pytest.approx(expected.mean(), rel=1e-6)
    np.testing.assert_allclose(fc.ll[0, sess4], expected, rtol=1e-6)
    assert (fc.ll[0, ~sess4] == 0).all() and fc.ll.shape == tuple(batch.y.shape)
    assert row["w_stimulus"] > 0 and row["ll"] > -np.log(2)  # late in the drift the stimulus weight is positive
    # fitting only the last sessions
    fc2 = forecast_psytrack(test, fit_through=3, config=FAST, fit_from=3)
    assert fc2.per_animal.iloc[0]["fit_trials"] == 300


@needs_psytrack
def test_a_failed_evidence_search_falls_back_to_the_map_at_the_initial_hyperparameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """PsyTrack's hyperparameter search can fail numerically on real animals ("Factor is exactly
    singular"): the fit then keeps PsyTrack's MAP weights at the initial hyperparameters, says so,
    and is still a fit (it tracks the drifting weight)."""
    import psytrack

    def singular(*_a: object, **_k: object) -> object:
        raise RuntimeError("Factor is exactly singular")

    monkeypatch.setattr(psytrack, "hyperOpt", singular)
    x, y, w, lengths = _drifting(n_sessions=3, per_session=300)
    res = fit_psytrack(x, y, lengths, ("stimulus", "bias"), FAST)
    assert res.note is not None and "Factor is exactly singular" in res.note and "initial hyperparameters" in res.note
    assert np.allclose(res.sigma, FAST.sigma) and res.weights.shape == (900, 2) and np.isfinite(res.log_evidence)
    assert res.weights[-1, 0] > res.weights[0, 0] + 1.0  # the stimulus weight still rises as it did
