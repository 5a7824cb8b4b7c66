"""TeachingService.Teach over gRPC: a 50-trial stream through a twin, the fallbacks (no twin, a
failing and a slow decision, a stock-iblrig profile), auth, the limits and the stream quota."""

from __future__ import annotations

import random
import time

import grpc
import pytest

from server.app import build_plane
from server.auth import AuthConfig
from service.limits import Limits
from twin.models import batch1
from service.config import DataPlaneConfig
from service.teaching import Teaching
from twin_client.client import TwinClient, error_reason
from twin_proto.pb import common_pb2, teaching_service_pb2 as tpb

from server_env import NO_TWIN, READER, TOKENS, TWIN_SUBJECTS

TWIN = tpb.STIMULUS_SOURCE_TWIN
FALLBACK = tpb.STIMULUS_SOURCE_FALLBACK


def _run(session, n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = [session.first]
    stim = session.first
    for _ in range(n - 1):
        choice = rng.choice(["left", "right"])
        rewarded = (choice == "right") == (stim.side == common_pb2.SIDE_RIGHT)
        stim = session.report(choice, rewarded)
        if stim is None:
            break
        out.append(stim)
    session.close()
    return out


@pytest.fixture
def patient(store_dir):
    """A client of a server whose decision budget is generous (30 s): the stimuli then depend on
    the seed and the outcomes only, not on how loaded the test machine is (on a fresh CI clone one
    decision of the 50 once took over 1 s; the budget's fallback has its own test below)."""
    running = _start(store_dir, 30_000.0)
    c = TwinClient(running.target, READER)
    yield c
    c.close()
    running.stop(grace_s=2.0)


def _start(store_dir, budget_ms: float, decide=None, limits: Limits = Limits()):
    from server.app import ServerConfig, start_server

    plane = build_plane(store_dir, config=DataPlaneConfig(limits=limits, teach_decision_budget_ms=budget_ms))
    if decide is not None:
        plane.teaching = Teaching(plane.catalog, budget_ms=budget_ms, decide=decide)
    running = start_server(ServerConfig(address="127.0.0.1:0", auth=AuthConfig.from_tokens(TOKENS), max_workers=8), plane)
    t0 = time.monotonic()
    while not batch1.kernels_ready() and time.monotonic() - t0 < 120:  # one decision path for every trial
        time.sleep(0.05)
    return running


def test_fifty_trials_through_the_twin(patient):
    c = patient
    served = _run(c.teach(TWIN_SUBJECTS[0], seed=3), 50)
    assert [s.trial for s in served] == list(range(50))
    assert served[0].twin.subject == TWIN_SUBJECTS[0]
    twin = [s for s in served if s.source == TWIN]
    assert len(twin) == 50, [tpb.TeachFallbackReason.Name(s.fallback_reason) for s in served if s.source != TWIN]
    for s in twin:
        assert s.fallback_reason == tpb.TEACH_FALLBACK_REASON_NONE
        assert 0.0 <= s.predicted_p_correct <= 1.0
        assert 0.0 <= s.contrast <= 1.0 and s.side in (common_pb2.SIDE_LEFT, common_pb2.SIDE_RIGHT)
        assert s.signed_contrast == (s.contrast if s.side == common_pb2.SIDE_RIGHT else -s.contrast)
    # the same seed and outcomes give the same stimuli
    again = _run(c.teach(TWIN_SUBJECTS[0], seed=3), 50)
    assert [(s.contrast, s.side, s.source) for s in again] == [(s.contrast, s.side, s.source) for s in served]


def test_max_trials_ends_the_stream_and_limits_are_checked_first(connect):
    c = connect(READER)
    served = _run(c.teach(TWIN_SUBJECTS[1], max_trials=5), 20)
    assert len(served) == 5
    with pytest.raises(grpc.RpcError) as err:
        c.teach(TWIN_SUBJECTS[1], max_trials=Limits().max_session_trials + 1)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_no_twin_and_stock_iblrig_fall_back_to_the_protocol(connect):
    c = connect(READER)
    served = _run(c.teach(NO_TWIN), 10)
    assert all(s.source == FALLBACK and s.fallback_reason == tpb.TEACH_FALLBACK_REASON_NO_TWIN for s in served)
    assert not served[0].HasField("predicted_p_correct")
    served = _run(c.teach(TWIN_SUBJECTS[0], rig_profile="iblrig-training"), 5)
    assert all(s.fallback_reason == tpb.TEACH_FALLBACK_REASON_RIG_PROFILE for s in served)


def test_a_failing_or_slow_decision_falls_back_without_ending_the_stream(serve, store_dir):
    calls = {"n": 0}

    def flaky(teacher):
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise RuntimeError("injected decision error")
        if calls["n"] % 3 == 0:
            time.sleep(0.03)
        return teacher.decide()

    running = _start(store_dir, 15.0, flaky)
    try:
        with TwinClient(running.target, READER) as c:
            served = _run(c.teach(TWIN_SUBJECTS[0]), 12)
    finally:
        running.stop(grace_s=2.0)
    assert len(served) == 12
    reasons = [s.fallback_reason for s in served]
    assert tpb.TEACH_FALLBACK_REASON_DECISION_ERROR in reasons
    assert tpb.TEACH_FALLBACK_REASON_DECISION_TIMEOUT in reasons
    assert tpb.TEACH_FALLBACK_REASON_NONE in reasons
    for s in served:
        assert (s.source == TWIN) == (s.fallback_reason == tpb.TEACH_FALLBACK_REASON_NONE)


def test_auth_bad_requests_and_the_stream_quota(store_dir):
    running = _start(store_dir, 1000.0, limits=Limits(max_teach_streams_per_client=1))
    with TwinClient(running.target, None) as anon:
        with pytest.raises(grpc.RpcError) as err:
            anon.teach(TWIN_SUBJECTS[0])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with TwinClient(running.target, READER) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.teach(TWIN_SUBJECTS[0], rig_profile="no-such-rig")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        s = c.teach(TWIN_SUBJECTS[0])
        with pytest.raises(grpc.RpcError) as err:
            s.report("left", False, contrast=2.0)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # one stream of this client open: a second is refused at once
        first = c.teach(TWIN_SUBJECTS[0])
        with pytest.raises(grpc.RpcError) as err:
            c.teach(TWIN_SUBJECTS[1])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(err.value) is not None
        first.close()
    running.stop(grace_s=2.0)


def _session_pair():
    import torch

    from twin.data.features import FeatureSpec
    from twin.models.learner import LearnerModel, ModelSpec
    from twin.protocol import IBL_DEFAULT
    from twin.sim.teaching import TwinTeacher
    from service.teaching import TeachingSession

    torch.manual_seed(0)
    m = LearnerModel(ModelSpec("dnn", FeatureSpec(history=True))).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    w, h = m.initial(1)

    def make() -> TeachingSession:
        t = TwinTeacher(m, w.clone(), h, IBL_DEFAULT, torch.Generator().manual_seed(5), start_phase=1)
        return TeachingSession(t.env, t, None, 200, 10.0, None)

    return make(), make()


def test_prepared_trials_are_the_ones_computed_on_receipt():
    from service.teaching import Choice, Outcome

    live, ahead = _session_pair()
    rng = random.Random(0)
    a, b = live.first(), ahead.first()
    hits = 0
    for i in range(60):
        assert (a.contrast, a.side, a.phase, a.source) == (b.contrast, b.side, b.phase, b.source)
        ahead.prepare()
        r = rng.random()
        if r < 0.1:
            o = Outcome(a.trial, a.contrast, a.side, Choice.NO_GO, False)  # not prepared: computed on receipt
        else:
            choice = Choice.RIGHT if r < 0.55 else Choice.LEFT
            o = Outcome(a.trial, a.contrast, a.side, choice, (choice is Choice.RIGHT) == (a.side == 1))
            hits += 1
        a, b = live.next(o), ahead.next(o)
    assert hits > 40
    assert torch_equal(live.teacher.w, ahead.teacher.w)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))
