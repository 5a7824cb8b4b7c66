"""Every twin.v1 RPC through the generated stubs against a real server on 127.0.0.1, plus
health, reflection, deadlines, message limits and graceful draining."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from server_env import ADMIN, NO_TWIN, READER, RIG, TOKENS, TWIN_SUBJECTS
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from server.app import ServerConfig
from server.auth import AuthConfig
from twin_client.client import TwinClient, error_reason, field_violations, operation_metadata, operation_result, prediction_frame
from twin_proto.pb import (
    SERVICE_NAMES,
    common_pb2,
    curriculum_service_pb2,
    operation_pb2,
    operations_service_pb2,
    protocol_pb2,
    twin_service_pb2,
    twin_service_pb2_grpc,
)
from optimizer.planning import CurriculumCandidate, CurriculumSearchOutcome, SearchProgress
from twin.sim.forecast import Interval
from twin.analysis.predict import predict
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT

S = TWIN_SUBJECTS[0]


def _code(excinfo: pytest.ExceptionInfo) -> grpc.StatusCode:
    return excinfo.value.code()


# -- health and reflection ----------------------------------------------------------------------


def test_health_serving_for_server_and_every_service(server):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.target))
    for name in ("", *SERVICE_NAMES):
        assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_every_service_without_a_token(server):
    db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(server.target))
    services = set(db.get_services())
    assert set(SERVICE_NAMES) <= services
    assert "grpc.health.v1.Health" in services
    # grpcurl describes methods from the file descriptors the reflection service returns
    assert db.FindFileContainingSymbol("twin.v1.TwinService").package == "twin.v1"


# -- TwinService ----------------------------------------------------------------------------


def test_list_subjects_paged(connect):
    c = connect(READER)
    first = c.twins.ListSubjects(twin_service_pb2.ListSubjectsRequest(page_size=3), metadata=c._metadata)
    assert [s.subject for s in first.subjects] == ["sim-000", "sim-001", "sim-002"] and first.subjects[0].name == "subjects/sim-000" and first.next_page_token
    rest = c.twins.ListSubjects(twin_service_pb2.ListSubjectsRequest(page_size=3, page_token=first.next_page_token), metadata=c._metadata)
    assert [s.subject for s in rest.subjects] == [NO_TWIN] and rest.next_page_token == ""
    subjects = {s.subject: s for s in c.list_subjects(page_size=1)}
    assert len(subjects) == 4
    assert subjects[S].serving_version == 1 and subjects[S].n_sessions == 2 and subjects[S].n_trials > 0
    assert subjects[NO_TWIN].serving_version == 0 and subjects[NO_TWIN].HasField("last_session_at")


def test_list_twins_paged_and_by_subject(connect):
    c = connect(READER)
    assert [(t.subject, t.version) for t in c.list_twins(page_size=2)] == [(s, 1) for s in TWIN_SUBJECTS]
    mine = c.list_twins(S)
    assert len(mine) == 1 and mine[0].aliases == ["serving"] and list(mine[0].feature_names) == ["stimulus", "bias"]
    assert c.list_twins(NO_TWIN) == []
    with pytest.raises(grpc.RpcError) as e:
        c.list_twins("nobody")
    assert _code(e) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        c.twins.ListTwins(twin_service_pb2.ListTwinsRequest(page_token="garbage!"), metadata=c._metadata)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value) == [("page_token", "not a page token issued by this server")]


def test_get_twin_by_default_version_and_alias(connect):
    c = connect(READER)
    r = c.get_twin(S)
    assert r.twin.subject == S and r.twin.version == 1 and r.twin.trained_through_session == 2 and "val_ll" in r.twin.metrics
    assert r.sessions_since_training == 0
    assert c.get_twin(S, version=1).twin == r.twin == c.get_twin(S, alias="serving").twin


@pytest.mark.parametrize(
    ("subject", "kw", "code", "reason"),
    [
        ("nobody", {}, grpc.StatusCode.NOT_FOUND, "SUBJECT_NOT_FOUND"),
        (NO_TWIN, {}, grpc.StatusCode.FAILED_PRECONDITION, "NO_TWIN"),
        (S, {"version": 9}, grpc.StatusCode.NOT_FOUND, "TWIN_NOT_FOUND"),
        (S, {"alias": "nope"}, grpc.StatusCode.NOT_FOUND, "TWIN_NOT_FOUND"),
        ("", {}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
def test_get_twin_errors(connect, subject, kw, code, reason):
    with pytest.raises(grpc.RpcError) as e:
        connect(READER).get_twin(subject, **kw)
    assert _code(e) == code and error_reason(e.value) == reason


def test_predict_stored_history_matches_the_core(connect, store_dir):
    c = connect(READER)
    resp = c.predict(S)
    store = TwinStore(store_dir)
    df = SessionStore(store).trials(S)
    twin = store.load_twin(S)
    expected = predict(twin.model, df)
    assert resp.n_trials == len(df) == len(resp.p_right) == len(resp.session)
    np.testing.assert_allclose(resp.p_right, expected.p_right, rtol=1e-6)
    np.testing.assert_allclose(resp.weights[1].values, expected.weights[:, 1], rtol=1e-6)
    assert resp.log_likelihood == pytest.approx(expected.log_likelihood, rel=1e-6)
    frame = prediction_frame(resp)
    assert list(frame.columns) == ["session", "trial", "p_right", "w_stimulus", "w_bias"]
    later = c.predict(S, from_session=2)
    assert set(later.session) == {2} and later.n_trials == int((df["session"] == 2).sum())
    np.testing.assert_allclose(later.p_right, expected.p_right[df["session"].to_numpy() == 2], rtol=1e-6)
    assert c.predict(S, through_session=1).n_trials == int((df["session"] == 1).sum())


def test_predict_supplied_history(connect, cohort_trials, store_dir):
    c = connect(READER)
    history = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session <= 2)]
    supplied = c.predict(S, history.drop(columns=["subject"]))
    np.testing.assert_allclose(supplied.p_right, c.predict(S).p_right, rtol=1e-6)
    nxt = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)]
    cont = c.predict(S, nxt, continue_from_twin=True)
    store = TwinStore(store_dir)
    twin = store.load_twin(S)
    expected = predict(twin.model, nxt, start=twin.state)
    np.testing.assert_allclose(cont.p_right, expected.p_right, rtol=1e-6)
    assert cont.n_trials == len(nxt) and set(cont.session) == {3}


def test_predict_without_stored_sessions_is_a_failed_precondition(connect, store_dir):
    # a twin whose sessions are not in the session store
    from twin.models.learner import LearnerModel, ModelSpec
    from twin.models.params import TwinModel

    TwinStore(store_dir).put("orphan", TwinModel.of(LearnerModel(ModelSpec("static"))), trained_through_session=1, data_hash="x")
    with pytest.raises(grpc.RpcError) as e:
        connect(READER).predict("orphan")
    assert _code(e) == grpc.StatusCode.FAILED_PRECONDITION


def test_forecast_default_and_custom_protocol(connect):
    c = connect(READER)
    r = c.forecast(S, n_rollouts=40, seed=1)
    f = r.forecast
    assert r.twin.version == 1 and f.n_rollouts == 40 and f.n_trials == 550 and f.interval_level == pytest.approx(0.9)
    assert f.accuracy.lo <= f.accuracy.mean <= f.accuracy.hi
    assert {round(b.contrast, 4) for b in f.by_contrast} <= {1.0, 0.5, 0.25, 0.125, 0.0625, 0.0}
    assert f.learning_curve[-1].trial == 550 and len(f.psychometric) >= 2
    assert [list(p.contrasts) for p in r.protocol.phases] == [list(p) for p in IBL_DEFAULT.stimulus.phases]
    easy = protocol_pb2.TaskProtocol(phases=[protocol_pb2.ContrastPhase(contrasts=[1.0])], debias=protocol_pb2.DebiasRule(enabled=False))
    r2 = c.forecast(S, easy, n_trials=100, n_rollouts=20)
    assert [b.contrast for b in r2.forecast.by_contrast] == [1.0] and r2.protocol.debias.enabled is False
    assert len(r2.protocol.phases) == 1 and not r2.protocol.phases[0].HasField("advance")  # one phase: no advancement
    # every phase carries its rule and proportions: iblrig's
    ph = r.protocol.phases
    assert [p.advance.WhichOneof("rule") for p in ph[:5]] == ["performance"] * 2 + ["after_trials"] * 3 and not ph[5].HasField("advance")
    assert list(ph[1].advance.performance.easy_contrasts) == [0.25] and ph[2].advance.after_trials == 200
    assert list(ph[4].proportions) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5] and r.protocol.zero_contrast_side == protocol_pb2.ZERO_CONTRAST_SIDE_LEFT
    assert list(r.protocol.debias.phases) == [0, 1, 2, 3, 4] and r.protocol.debias.side == protocol_pb2.DEBIAS_SIDE_AGAINST_BIAS


def test_forecast_bad_requests(connect):
    c = connect(READER)
    bad = protocol_pb2.TaskProtocol(phases=[protocol_pb2.ContrastPhase(contrasts=[1.5])])
    with pytest.raises(grpc.RpcError) as e:
        c.forecast(S, bad)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "protocol"
    with pytest.raises(grpc.RpcError) as e:
        c.forecast(S, n_rollouts=5000)
    assert field_violations(e.value)[0][0] == "n_rollouts"
    with pytest.raises(grpc.RpcError) as e:
        c.forecast(S, start_phase=17)
    assert field_violations(e.value) == [("start_phase", "must be in [0, 5] for this protocol")]


def test_upload_session_updates_the_twin_and_the_cache_follows_the_alias(connect, cohort_trials, server):
    c = connect(RIG)
    before = c.predict(S).p_right[-1]
    assert c.get_twin(S).twin.version == 1
    s3 = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)]
    up = c.upload_session(S, s3.drop(columns=["subject", "session"]), label="2024-05-03")
    assert (up.subject, up.session, up.n_trials) == (S, 3, len(s3)) and up.update_skipped_reason == ""
    started = operation_metadata(up.twin_update)
    assert started.kind == operation_pb2.OPERATION_KIND_TWIN_UPDATE and started.subject == S and up.twin_update.name.startswith("operations/")
    op = c.wait_operation(up.twin_update.name, timeout_s=120)
    assert op.done and operation_metadata(op).state == operation_pb2.OPERATION_STATE_SUCCEEDED, op.error
    result = operation_result(op)
    assert isinstance(result, operation_pb2.TwinUpdateResult) and op.response.type_url.endswith("/twin.v1.TwinUpdateResult")
    assert operation_metadata(op).progress == 1.0 and result.twin.version == 2 and result.twin.trained_through_session == 3
    assert result.twin.name == f"subjects/{S}/twins/2"
    got = c.get_twin(S)
    assert got.twin.version == 2 and got.twin.aliases == ["serving"] and got.sessions_since_training == 0
    after = c.predict(S)  # the serving alias moved: the cache loads v2
    assert after.twin.version == 2 and after.n_trials == len(cohort_trials[cohort_trials.subject == S])
    assert after.p_right[-1] != before
    assert (S, 2) in server.plane.cache


def test_upload_session_without_twin_or_with_skip_starts_no_update(connect, cohort_trials):
    c = connect(RIG)
    s3 = cohort_trials[(cohort_trials.subject == NO_TWIN) & (cohort_trials.session == 3)]
    up = c.upload_session(NO_TWIN, s3)
    assert up.session == 3 and not up.HasField("twin_update") and "no twin" in up.update_skipped_reason
    new = c.upload_session("new-mouse", s3)
    assert new.session == 1 and not new.HasField("twin_update")
    s3b = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)]
    skipped = c.upload_session(S, s3b, skip_twin_update=True)
    assert skipped.session == 3 and not skipped.HasField("twin_update") and "skipped" in skipped.update_skipped_reason
    assert {s.subject for s in c.list_subjects()} >= {"new-mouse", NO_TWIN}


def test_fit_cohort_long_running(connect):
    c = connect(ADMIN)
    with pytest.raises(grpc.RpcError) as e:
        c.fit_cohort([NO_TWIN], rule="reinforce")  # two sessions: too few to choose the adaptation
    assert field_violations(e.value)[0][0] == "adaptation"
    with pytest.raises(grpc.RpcError) as e:  # ADAPTATION_AUTO is what unset means
        c.fit_cohort([NO_TWIN], rule="reinforce", adaptation=twin_service_pb2.ADAPTATION_AUTO)
    assert field_violations(e.value)[0][0] == "adaptation"
    op = c.fit_cohort([NO_TWIN, TWIN_SUBJECTS[1]], rule="reinforce", epochs=2, patience=2, adaptation=twin_service_pb2.ADAPTATION_INITIAL_WEIGHTS)
    assert operation_metadata(op).kind == operation_pb2.OPERATION_KIND_FIT_COHORT and not op.done
    assert operation_metadata(op).state in (operation_pb2.OPERATION_STATE_PENDING, operation_pb2.OPERATION_STATE_RUNNING)
    done = c.wait_operation(op.name, timeout_s=180)
    assert operation_metadata(done).state == operation_pb2.OPERATION_STATE_SUCCEEDED, done.error
    assert sorted((t.subject, t.version) for t in operation_result(done).twins) == [(TWIN_SUBJECTS[1], 2), (NO_TWIN, 1)]
    assert c.get_twin(NO_TWIN).twin.rule == "reinforce"
    with pytest.raises(grpc.RpcError) as e:
        c.fit_cohort(rule="no-such-rule")
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "rule"
    with pytest.raises(grpc.RpcError) as e:
        c.fit_cohort(["nobody"])
    assert field_violations(e.value)[0][0] == "subjects[0]"


# -- CurriculumService ------------------------------------------------------------------------


def test_next_session_plan_with_twin(connect):
    plan = connect(RIG).next_session(S, n_rollouts=40)
    assert plan.subject == S and plan.twin.version == 1 and plan.source == curriculum_service_pb2.PLAN_SOURCE_DEFAULT_PROTOCOL
    assert not plan.fallback and plan.fallback_reason == curriculum_service_pb2.FALLBACK_REASON_NONE
    assert plan.rig.reward_volume_ul == 3.0 and plan.rig.error_timeout.seconds == 2
    assert plan.n_trials == 550 and plan.protocol.debias.enabled and plan.protocol.phases[0].advance.performance.threshold == pytest.approx(0.8)
    assert sum(c.proportion for c in plan.contrasts) == pytest.approx(1.0)
    assert [c.contrast for c in plan.contrasts] == list(plan.protocol.phases[plan.start_phase].contrasts)
    assert plan.HasField("forecast") and plan.forecast.accuracy.hi - plan.forecast.accuracy.lo <= 0.3


def test_next_session_takes_a_twin_ref(connect):
    c = connect(READER)
    assert c.next_session(S, version=1, n_rollouts=20).twin.version == 1
    assert c.next_session(S, alias="serving", n_rollouts=20).twin.name == f"subjects/{S}/twins/1"
    for kw, code, reason in (({"version": 9}, grpc.StatusCode.NOT_FOUND, "TWIN_NOT_FOUND"), ({"alias": "nope"}, grpc.StatusCode.NOT_FOUND, "TWIN_NOT_FOUND")):
        with pytest.raises(grpc.RpcError) as e:
            c.next_session(S, n_rollouts=20, **kw)  # a named version must exist: no silent fallback
        assert _code(e) == code and error_reason(e.value) == reason
    with pytest.raises(grpc.RpcError) as e:
        c.curricula.NextSession(curriculum_service_pb2.NextSessionRequest(), metadata=c._metadata)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "twin.subject"


def test_next_session_fallbacks_and_constraints(connect):
    c = connect(READER)
    new = c.next_session("brand-new-mouse")
    assert new.fallback and new.fallback_reason == curriculum_service_pb2.FALLBACK_REASON_NO_TWIN
    assert not new.HasField("forecast") and not new.HasField("twin") and new.start_phase == 0
    no_twin = c.next_session(NO_TWIN)
    assert no_twin.fallback_reason == curriculum_service_pb2.FALLBACK_REASON_NO_TWIN
    unsure = c.next_session(S, max_accuracy_interval_width=0.001, n_rollouts=20)
    assert unsure.fallback and unsure.fallback_reason == curriculum_service_pb2.FALLBACK_REASON_LOW_CONFIDENCE and unsure.HasField("forecast")
    short = c.next_session(S, max_trials=300, max_reward_volume_ul=2.0, n_rollouts=20)
    assert short.n_trials == 300 and short.rig.reward_volume_ul == 2.0 and short.forecast.n_trials == 300
    with pytest.raises(grpc.RpcError) as e:
        c.next_session(S, min_trials=500, max_trials=100)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "constraints.min_trials"
    with pytest.raises(grpc.RpcError) as e:
        c.next_session(S, max_reward_volume_ul=0.2)  # below the smallest reward a protocol gives
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "constraints.max_reward_volume_ul"


def test_search_curricula_unavailable_without_a_search(connect):
    with pytest.raises(grpc.RpcError) as e:
        connect(ADMIN).search_curricula()
    assert _code(e) == grpc.StatusCode.FAILED_PRECONDITION and "curriculum search not available in this build" in e.value.details()


def _fake_search(request, store, ctx: SearchProgress) -> CurriculumSearchOutcome:
    ctx.report(0.5, f"scoring {len(request.subjects)} twins")
    cand = CurriculumCandidate(IBL_DEFAULT, Interval(5000.0, 4000.0, 6500.0), 0.9)
    return CurriculumSearchOutcome((cand,), baseline=cand)


def test_search_curricula_with_an_injected_search(serve):
    running = serve(search=_fake_search)
    with TwinClient(running.target, ADMIN) as c:
        op = c.search_curricula(seed=3)
        done = c.wait_operation(op.name, timeout_s=30)
        assert operation_metadata(done).state == operation_pb2.OPERATION_STATE_SUCCEEDED
        res = operation_result(done)
        assert isinstance(res, operation_pb2.CurriculumSearchResult)
        assert res.candidates[0].trials_to_criterion.mean == 5000.0 and res.baseline.reached_criterion == pytest.approx(0.9)
        with pytest.raises(grpc.RpcError) as e:
            c.search_curricula([NO_TWIN])
        assert field_violations(e.value)[0][0] == "subjects[0]"


# -- OperationsService ---------------------------------------------------------------------------


def _blocking_search(release: threading.Event, started: threading.Event):
    def run(request, store, ctx: SearchProgress) -> CurriculumSearchOutcome:
        started.set()
        for i in range(200):
            if release.wait(0.05):
                break
            ctx.report(min(i / 100, 0.99), f"step {i}")  # checkpoint: raises once cancelled
        return CurriculumSearchOutcome(())

    return run


def test_operations_get_list_cancel_watch(serve):
    release, started = threading.Event(), threading.Event()
    running = serve(search=_blocking_search(release, started))
    with TwinClient(running.target, ADMIN) as c:
        first = c.search_curricula()
        second = c.search_curricula()  # queued behind the first (one job worker)
        assert started.wait(10)
        assert operation_metadata(c.get_operation(second.name)).state == operation_pb2.OPERATION_STATE_PENDING
        cancelled = c.cancel_operation(second.name)
        assert operation_metadata(cancelled).state == operation_pb2.OPERATION_STATE_CANCELLED and cancelled.done
        assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0] and operation_result(cancelled) is None
        ops = c.list_operations()
        assert [o.name for o in ops] == [second.name, first.name]  # newest first
        assert [o.name for o in c.list_operations(state=operation_pb2.OPERATION_STATE_CANCELLED)] == [second.name]
        assert c.list_operations(kind=operation_pb2.OPERATION_KIND_TWIN_UPDATE) == []
        page = c.operations.ListOperations(operations_service_pb2.ListOperationsRequest(page_size=1), metadata=c._metadata)
        assert len(page.operations) == 1 and page.next_page_token
        seen = []
        stream = c.watch_operation(first.name, timeout_s=30)
        for op in stream:
            seen.append(op)
            if len(seen) == 3:
                release.set()
        assert operation_metadata(seen[-1]).state == operation_pb2.OPERATION_STATE_SUCCEEDED and seen[-1].done
        assert not any(o.done for o in seen[:-1])
        progress = [operation_metadata(o).progress for o in seen]
        assert progress == sorted(progress) and progress[-1] == 1.0 and len(seen) >= 3
        # cancelling a running operation takes effect at its next checkpoint
        release.clear()
        started.clear()
        third = c.search_curricula()
        assert started.wait(10)
        c.cancel_operation(third.name)
        assert operation_metadata(c.wait_operation(third.name, timeout_s=30)).state == operation_pb2.OPERATION_STATE_CANCELLED
        with pytest.raises(grpc.RpcError) as e:
            c.get_operation("operations/no-such-op")
        assert _code(e) == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            c.get_operation(third.name.removeprefix("operations/"))  # a bare id is not a name
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "name"


# -- deadlines, limits, draining ------------------------------------------------------------------


def test_deadline_is_honoured(connect):
    c = connect(READER, timeout_s=0.001)
    with pytest.raises(grpc.RpcError) as e:
        c.forecast(S, n_rollouts=2000, n_trials=1000)
    assert _code(e) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_message_size_limit(serve, cohort_trials):
    running = serve(config=ServerConfig(address="127.0.0.1:0", auth=AuthConfig.from_tokens(TOKENS), max_receive_bytes=4096))
    with TwinClient(running.target, RIG) as c:
        big = cohort_trials[cohort_trials.subject == S]
        with pytest.raises(grpc.RpcError) as e:
            c.upload_session(S, big)
        assert _code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.get_twin(S).twin.version == 1


def test_drain_refuses_new_calls_and_finishes_in_flight_ones(serve):
    entered, release = threading.Event(), threading.Event()

    def slow_propose(twin, state, constraints, target):
        entered.set()
        release.wait(10)
        return None

    running = serve(propose=slow_propose)
    c = TwinClient(running.target, READER)
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.setdefault("plan", c.next_session(S, n_rollouts=20)))
    t.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=running.stop, kwargs={"grace_s": 10.0})
    stopper.start()
    deadline = time.monotonic() + 5
    while not running.state.draining and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.health() == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as e:
        c.get_twin(S)
    assert _code(e) == grpc.StatusCode.UNAVAILABLE
    release.set()
    t.join(10)
    stopper.join(15)
    plan = result["plan"]
    assert plan.fallback_reason == curriculum_service_pb2.FALLBACK_REASON_NO_PROPOSAL  # the in-flight call completed
    with pytest.raises(grpc.RpcError):
        c.health()
    c.close()


def test_raw_stub_calls(server):
    """The generated stubs work without the client library (as grpcurl or another language would)."""
    channel = grpc.insecure_channel(server.target)
    stub = twin_service_pb2_grpc.TwinServiceStub(channel)
    md = (("authorization", f"Bearer {READER}"),)
    req = twin_service_pb2.GetTwinRequest(twin=common_pb2.TwinRef(subject=S, alias="serving"))
    assert stub.GetTwin(req, metadata=md, timeout=10).twin.version == 1
    channel.close()


def test_metadata_follows_moved_aliases_and_predictions_are_cached(connect, server, store_dir):
    c = connect(READER)
    first = c.predict(S)
    hits = server.plane.predictions.cache.hits
    again = c.predict(S)
    assert server.plane.predictions.cache.hits == hits + 1 and list(again.p_right) == list(first.p_right)
    store = TwinStore(store_dir)
    twin = store.load_twin(S).twin
    store.put(S, twin, trained_through_session=2, data_hash="same-model", alias="serving")  # v2 takes the alias
    assert c.get_twin(S, version=1).twin.aliases == []  # not the cached v1 metadata
    time.sleep(server.plane.config.metadata_ttl_s + 0.05)  # a foreign write is seen within the TTL
    moved = c.predict(S)
    assert moved.twin.version == 2 and moved.twin.aliases == ["serving"]
    assert server.plane.predictions.cache.hits == hits + 1  # a new version is a new cache key


def test_a_search_outcome_survives_its_json_row_with_changes_and_family_speedups():
    import json

    from optimizer.attribution import ChangeEffect
    from optimizer.objective import FamilySpeedup
    from optimizer.planning import CurriculumCandidate, CurriculumSearchOutcome
    from service.curricula import search_outcome, search_outcome_json
    from twin.protocol import IBL_DEFAULT
    from twin.sim.forecast import Interval

    cand = CurriculumCandidate(IBL_DEFAULT, Interval(9000.0, 8000.0, 10000.0), 0.9)
    changes = (
        ChangeEffect("debias", True, False, "debiasing off", Interval(-0.1, -0.15, -0.05), Interval(-0.08, -0.12, -0.04), False, "harmful"),
        ChangeEffect("session_trials_low", 550, 420, "shorter sessions", Interval(0.12, 0.05, 0.2), Interval(0.1, 0.04, 0.16), True, "helps"),
    )
    out = CurriculumSearchOutcome((cand,), cand, changes, "trained_1a", 40, (FamilySpeedup("dnn", Interval(0.1, 0.0, 0.2), 20, 0.9),))
    back = search_outcome(json.loads(json.dumps(search_outcome_json(out))))
    assert back == out
    old_row = {"candidates": search_outcome_json(out)["candidates"], "baseline": None}  # written before the attribution was kept
    assert search_outcome(old_row) == CurriculumSearchOutcome((cand,))
