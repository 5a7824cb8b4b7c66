"""Predict and Forecast of an ensemble twin (rule ``ensemble``) through the service."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from server_env import READER, TWIN_SUBJECTS

from twin.analysis.predict import predict, predict_ensemble
from twin.fit.cohort import twin_end_state
from twin.models.ensemble import ENSEMBLE_RULE, TwinEnsemble
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel
from twin.persist.sessions import SessionStore
from twin.persist.store import NewVersion, TwinStore
from twin.protocol import IBL_DEFAULT
from twin.sim.forecast import forecast_ensemble_session, forecast_session

S = TWIN_SUBJECTS[0]


def _put_ensemble(store_dir) -> TwinEnsemble:
    """An ensemble of the subject's stored REINFORCE twin and a biased static twin (v2, serving)."""
    store = TwinStore(store_dir)
    single = store.load_twin(S)
    torch.manual_seed(0)
    static = LearnerModel(ModelSpec("static"))
    with torch.no_grad():
        static.w0.copy_(torch.tensor([0.5, 1.0]))  # stimulus weight 0.5, strong right bias
    static_twin = TwinModel.of(static.eval().requires_grad_(False))
    df = SessionStore(store).trials(S)
    states = (single.state, twin_end_state(static_twin.model, df))
    ens = TwinEnsemble.of([single.twin, static_twin], [0.6, 0.4], ["reinforce/seed0", "static/seed0"], states)
    store.put_many([NewVersion(S, ens, single.meta.trained_through_session, single.meta.data_hash)], alias="serving")
    store.close()
    return ens


def test_predict_and_forecast_use_the_whole_ensemble(serve, store_dir, cohort_trials):
    ens = _put_ensemble(store_dir)
    from twin_client.client import TwinClient

    server = serve()
    c = TwinClient(server.target, READER, timeout_s=60.0)
    try:
        meta = c.get_twin(S)
        assert meta.twin.rule == ENSEMBLE_RULE and meta.twin.version == 2
        resp = c.predict(S)
        df = SessionStore(TwinStore(store_dir)).trials(S)
        expected = predict_ensemble(ens, df)
        np.testing.assert_allclose(resp.p_right, expected.p_right, rtol=1e-6)
        assert resp.log_likelihood == pytest.approx(expected.log_likelihood, rel=1e-6)
        parts = [predict(comp.model, df).p_right for comp in ens.components]
        np.testing.assert_allclose(resp.p_right, 0.6 * parts[0] + 0.4 * parts[1], rtol=1e-6)  # the weighted mixture
        nxt = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)]
        cont = c.predict(S, nxt, continue_from_twin=True)
        np.testing.assert_allclose(cont.p_right, predict_ensemble(ens, nxt, ens.states).p_right, rtol=1e-6)
        # forecast: the core's ensemble forecast (one component drawn per rollout), not the
        # largest-weight component's alone
        f = c.forecast(S, n_rollouts=200, n_trials=200, seed=2).forecast
        core = forecast_ensemble_session(ens, IBL_DEFAULT, 200, n_rollouts=200, seed=2)
        alone = forecast_session(ens.components[0].model, ens.states[0], IBL_DEFAULT, 200, n_rollouts=200, seed=2)
        assert f.n_rollouts == 200
        assert f.accuracy.mean == pytest.approx(core.accuracy.mean, abs=1e-9) and f.accuracy.hi == pytest.approx(core.accuracy.hi, abs=1e-9)
        left = [p.p_right for p in f.psychometric if p.signed_contrast == pytest.approx(-1.0)][0]
        alone_left = [iv for c_, iv in alone.psychometric if c_ == pytest.approx(-1.0)][0]
        assert left.hi > alone_left.hi + 0.1  # the biased static component's rollouts widen it
    finally:
        c.close()
