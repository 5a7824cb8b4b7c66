"""Cost limits checked before any work (RESOURCE_EXHAUSTED naming the field and the limit),
per-role quotas, the bounded operation queue, validated ranges (INVALID_ARGUMENT) and bounded,
path-free error messages."""

from __future__ import annotations

import math
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from server_env import ADMIN, FAST_UPDATE, READER, RIG, TWIN_SUBJECTS

from optimizer.planning import CurriculumSearchOutcome, SearchProgress
from server.app import receive_ceiling
from server.status import MAX_MESSAGE_CHARS, MAX_STATUS_BYTES, scrub_paths, to_rpc_status
from service.config import DataPlaneConfig
from service.errors import FieldViolation, InvalidArgumentError
from service.limits import Limits, LimitExceededError, LimitViolation
from twin.errors import ModelFileError
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore
from twin_client.client import TwinClient, error_reason, field_violations, operation_metadata, trials_to_pb
from twin_proto.pb import common_pb2, curriculum_service_pb2, operations_service_pb2, protocol_pb2, twin_service_pb2

S = TWIN_SUBJECTS[0]

#: Small limits, so that requests over them stay small; the lab default's 700-trial sessions
#: at the default 50 rollouts (35,000 steps) stay within them.
SMALL = Limits(
    max_supplied_trials=50,
    max_history_trials=100,
    max_session_trials=1000,
    max_rollouts=100,
    max_forecast_trial_steps=50_000,
    max_fit_epochs=50,
    max_fit_trial_epochs=100_000,
    max_search_subjects=2,
    max_search_candidates=40,
    max_search_horizon_trials=1000,
    max_protocol_phases=8,
)


def _plane(limits: Limits) -> DataPlaneConfig:
    return DataPlaneConfig(limits=limits, update_fit=FAST_UPDATE.update_fit, default_rollouts=FAST_UPDATE.default_rollouts)


def _fake_search(request, store, ctx: SearchProgress) -> CurriculumSearchOutcome:
    return CurriculumSearchOutcome(candidates=())


@pytest.fixture
def small(serve):
    """A server with :data:`SMALL` limits and a fake curriculum search."""
    return serve(plane_config=_plane(SMALL), search=_fake_search)


def _status(e: grpc.RpcError):
    return rpc_status.from_call(e)


def _info(e: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    for d in _status(e).details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def _quota(e: grpc.RpcError) -> list[str]:
    out = []
    for d in _status(e).details:
        if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            q = error_details_pb2.QuotaFailure()
            d.Unpack(q)
            out += [v.subject for v in q.violations]
    return out


def _trials(n: int) -> list[common_pb2.Trial]:
    t = common_pb2.Trial(
        session=1, contrast_right=1.0, choice=common_pb2.SIDE_RIGHT, feedback=common_pb2.FEEDBACK_REWARDED, correct_side=common_pb2.SIDE_RIGHT, prob_left=0.5
    )
    return [t] * n


def _ref(subject: str = S) -> common_pb2.TwinRef:
    return common_pb2.TwinRef(subject=subject)


#: (role, method, request, field, limit) of requests over one of the SMALL limits
OVER_LIMIT = [
    (READER, "Predict", twin_service_pb2.PredictRequest(twin=_ref(), supplied=twin_service_pb2.SuppliedHistory(trials=_trials(51))), "supplied.trials", "max_supplied_trials"),
    (READER, "Predict", twin_service_pb2.PredictRequest(twin=_ref(), stored=twin_service_pb2.StoredHistory()), "stored", "max_history_trials"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), n_trials=1001), "n_trials", "max_session_trials"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), n_rollouts=101), "n_rollouts", "max_rollouts"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), n_rollouts=100, n_trials=600), "n_trials", "max_forecast_trial_steps"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), protocol=protocol_pb2.TaskProtocol(phases=[protocol_pb2.ContrastPhase(contrasts=[1.0])] * 9)), "protocol.phases", "max_protocol_phases"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), n_rollouts=101), "n_rollouts", "max_rollouts"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), constraints=curriculum_service_pb2.SessionConstraints(min_trials=1001)), "constraints.min_trials", "max_session_trials"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), n_rollouts=80), "n_rollouts", "max_forecast_trial_steps"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), n_rollouts=60, constraints=curriculum_service_pb2.SessionConstraints(min_trials=900)), "constraints.min_trials", "max_forecast_trial_steps"),
    (RIG, "UploadSession", twin_service_pb2.UploadSessionRequest(subject=S, trials=_trials(1001)), "trials", "max_session_trials"),
    (ADMIN, "FitCohort", twin_service_pb2.FitCohortRequest(epochs=51, adaptation=twin_service_pb2.ADAPTATION_NONE), "epochs", "max_fit_epochs"),
    (ADMIN, "FitCohort", twin_service_pb2.FitCohortRequest(epochs=40, adaptation=twin_service_pb2.ADAPTATION_NONE), "epochs", "max_fit_trial_epochs"),
    (ADMIN, "FitCohort", twin_service_pb2.FitCohortRequest(rule="ensemble", epochs=8), "epochs", "max_fit_trial_epochs"),  # 5 population fits (no refit)
    (ADMIN, "SearchCurricula", curriculum_service_pb2.SearchCurriculaRequest(subjects=[S], n_candidates=41), "n_candidates", "max_search_candidates"),
    (ADMIN, "SearchCurricula", curriculum_service_pb2.SearchCurriculaRequest(subjects=TWIN_SUBJECTS[:2], horizon_trials=1001), "horizon_trials", "max_search_horizon_trials"),
    (ADMIN, "SearchCurricula", curriculum_service_pb2.SearchCurriculaRequest(), "subjects", "max_search_subjects"),
]


def _call(c: TwinClient, method: str, request, timeout: float = 30):
    stub = c.curricula if method in ("NextSession", "SearchCurricula") else c.twins
    return getattr(stub, method)(request, metadata=c._metadata, timeout=timeout)


@pytest.mark.parametrize(("role", "method", "request_", "field", "limit"), OVER_LIMIT, ids=[f"{m}:{lim}:{f}" for _, m, _, f, lim in OVER_LIMIT])
def test_a_request_over_a_limit_is_refused_before_work_naming_field_and_limit(small, store_dir, role, method, request_, field, limit):
    before = [(r.session, r.data_hash) for r in SessionStore(TwinStore(store_dir)).sessions(S)]
    with TwinClient(small.target, role) as c:
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as e:
            _call(c, method, request_)
        ms = (time.perf_counter() - t0) * 1000
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    info = _info(e.value)
    assert info.reason == "LIMIT_EXCEEDED" and info.metadata["field"] == field and info.metadata["limit"] == limit
    assert int(info.metadata["requested"]) > int(info.metadata["maximum"]) == getattr(SMALL, limit)
    assert limit in _quota(e.value) and field in [f for f, _ in field_violations(e.value)]
    assert limit in e.value.details() and f"{getattr(SMALL, limit):,}" in e.value.details()
    assert ms < 1000  # refused before any work (the fuzz test holds it to 100 ms)
    assert [(r.session, r.data_hash) for r in SessionStore(TwinStore(store_dir)).sessions(S)] == before  # nothing stored
    assert small.plane.jobs.list() == []  # nothing queued


def test_a_request_over_max_request_bytes_is_refused_unparsed_within_100_ms(serve, store_dir):
    """Over ``max_request_bytes`` (and up to gRPC's receive limit, twice it) the service refuses
    the request without parsing it, naming the limit; over gRPC's limit gRPC refuses it."""
    cap = 64 * 1024
    running = serve(plane_config=_plane(Limits(max_request_bytes=cap)))
    before = [(r.session, r.data_hash) for r in SessionStore(TwinStore(store_dir)).sessions(S)]
    over = twin_service_pb2.UploadSessionRequest(subject=S, trials=_trials(cap // 20)).SerializeToString()
    beyond = twin_service_pb2.UploadSessionRequest(subject=S, trials=_trials(cap // 8)).SerializeToString()
    assert cap < len(over) <= receive_ceiling(cap) < len(beyond)
    with TwinClient(running.target, RIG) as c:
        call = c.channel.unary_unary("/twin.v1.TwinService/UploadSession")
        ms = []
        for _ in range(5):
            t0 = time.perf_counter()
            with pytest.raises(grpc.RpcError) as e:
                call(over, metadata=c._metadata, timeout=10)
            ms.append((time.perf_counter() - t0) * 1000)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = _info(e.value)
            assert info.metadata["limit"] == "max_request_bytes" and int(info.metadata["requested"]) == len(over) and int(info.metadata["maximum"]) == cap
        assert min(ms) < 100, ms  # gRPC's own refusal took 100-1000 ms
        with pytest.raises(grpc.RpcError) as e:
            call(beyond, metadata=c._metadata, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in e.value.details()
        assert c.get_twin(S).twin.version == 1
    with TwinClient(running.target, None) as anon, pytest.raises(grpc.RpcError) as e:  # authentication still comes first
        anon.channel.unary_unary("/twin.v1.TwinService/UploadSession")(over, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [(r.session, r.data_hash) for r in SessionStore(TwinStore(store_dir)).sessions(S)] == before


def test_requests_at_the_limits_are_served(small):
    with TwinClient(small.target, READER) as c:
        fc = c.twins.Forecast(twin_service_pb2.ForecastRequest(twin=_ref(), n_rollouts=50, n_trials=1000), metadata=c._metadata, timeout=60)
        assert fc.forecast.n_rollouts * fc.forecast.n_trials == SMALL.max_forecast_trial_steps
        req = twin_service_pb2.PredictRequest(twin=_ref(), stored=twin_service_pb2.StoredHistory(through_session=1))
        with pytest.raises(grpc.RpcError) as e:  # session 1 alone is still over 100 trials
            c.twins.Predict(req, metadata=c._metadata, timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "stored.through_session" in e.value.details()


def test_limits_are_read_from_names_and_refuse_nonsense():
    lim = Limits().replace({"max_rollouts": "1_000", "max_request_bytes": "16MiB", "max_supplied_trials": 2e5, "max_page_size": 10})
    assert (lim.max_rollouts, lim.max_request_bytes, lim.max_supplied_trials, lim.max_page_size) == (1000, 16 * 2**20, 200_000, 10)
    assert lim.as_dict()["max_rollouts"] == 1000 and set(lim.as_dict()) == set(Limits.names())
    for bad in ({"max_rollouts": 0}, {"max_rollouts": -3}, {"max_rollouts": "many"}, {"max_rollouts": 1.5}, {"max_rollouts": True}, {"no_such_limit": 3}):
        with pytest.raises(ValueError):
            Limits().replace(bad)
    with pytest.raises(ValueError, match="default_rollouts"):
        DataPlaneConfig(limits=Limits(max_rollouts=10))  # the default 200 rollouts would be over it


def test_the_operation_queue_is_bounded(serve):
    release, started = threading.Event(), threading.Event()

    def blocking(request, store, ctx):
        started.set()
        while not release.wait(0.05):
            ctx.check_cancelled()
        return CurriculumSearchOutcome(candidates=())

    running = serve(plane_config=_plane(Limits(max_pending_operations=1)), search=blocking)
    with TwinClient(running.target, ADMIN) as c:
        first = c.search_curricula(seed=1)
        assert started.wait(10)
        second = c.search_curricula(seed=2)  # waits behind the first: the queue holds one
        with pytest.raises(grpc.RpcError) as e:
            c.search_curricula(seed=3)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _info(e.value).metadata["limit"] == "max_pending_operations"
        with pytest.raises(grpc.RpcError) as e:  # a fit would queue too
            c.twins.FitCohort(twin_service_pb2.FitCohortRequest(epochs=2, adaptation=twin_service_pb2.ADAPTATION_NONE), metadata=c._metadata)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert operation_metadata(c.wait_operation(first.name, 30)).state == operation_metadata(c.wait_operation(second.name, 30)).state


def test_costly_calls_have_per_role_quotas(serve):
    entered, release = threading.Event(), threading.Event()

    def slow_propose(twin, state, constraints, target):
        entered.set()
        release.wait(20)
        return None

    running = serve(plane_config=_plane(Limits(max_concurrent_reader_calls=1, max_concurrent_watches=1)), propose=slow_propose)
    reader, rig = TwinClient(running.target, READER), TwinClient(running.target, RIG)
    try:
        t = threading.Thread(target=lambda: reader.next_session(S, n_rollouts=20))
        t.start()
        assert entered.wait(20)
        with pytest.raises(grpc.RpcError) as e:
            reader.forecast(S, n_rollouts=20)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _info(e.value).metadata["limit"] == "max_concurrent_reader_calls"
        assert rig.forecast(S, n_rollouts=20).forecast.n_rollouts == 20  # another role's share is untouched
        assert reader.get_twin(S).twin.version == 1 and reader.health() == "SERVING"  # cheap calls are not counted
        release.set()
        t.join(30)
        assert reader.forecast(S, n_rollouts=20).forecast.n_rollouts == 20  # the slot is free again
    finally:
        release.set()
        reader.close()
        rig.close()


def test_open_watch_streams_are_bounded(serve):
    release = threading.Event()

    def blocking(request, store, ctx):
        while not release.wait(0.05):
            ctx.check_cancelled()
        return CurriculumSearchOutcome(candidates=())

    running = serve(plane_config=_plane(Limits(max_concurrent_watches=1)), search=blocking)
    with TwinClient(running.target, ADMIN) as c:
        op = c.search_curricula()
        stream = c.operations.WatchOperation(operations_service_pb2.WatchOperationRequest(name=op.name), metadata=c._metadata, timeout=30)
        next(stream)
        with pytest.raises(grpc.RpcError) as e:
            next(c.operations.WatchOperation(operations_service_pb2.WatchOperationRequest(name=op.name), metadata=c._metadata, timeout=30))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _info(e.value).metadata["limit"] == "max_concurrent_watches"
        release.set()
        assert operation_metadata(list(stream)[-1]).state == operation_metadata(c.wait_operation(op.name, 30)).state


# -- ranges ---------------------------------------------------------------------------------------

BIG = "x" * 5000

#: (role, method, request, violated field) of requests with a value no limit could make valid
INVALID = [
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), seed=2**32), "seed"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), seed=2**40), "seed"),
    (ADMIN, "SearchCurricula", curriculum_service_pb2.SearchCurriculaRequest(subjects=[S], seed=2**32), "seed"),
    (ADMIN, "FitCohort", twin_service_pb2.FitCohortRequest(seed=2**63, adaptation=twin_service_pb2.ADAPTATION_NONE), "seed"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), interval_level=math.nan), "interval_level"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), protocol=protocol_pb2.TaskProtocol(blocks=protocol_pb2.BlockSettings(enabled=True, probabilities=[0.2, 0.8], min_length=20, max_length=100, mean_length=math.inf))), "protocol.blocks.mean_length"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(), protocol=protocol_pb2.TaskProtocol(phases=[protocol_pb2.ContrastPhase(contrasts=[math.nan])])), "protocol"),
    (READER, "Predict", twin_service_pb2.PredictRequest(twin=_ref(), stored=twin_service_pb2.StoredHistory(through_session=1, from_session=2)), "stored.from_session"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), constraints=curriculum_service_pb2.SessionConstraints(max_reward_volume_ul=math.nan)), "constraints.max_reward_volume_ul"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(S), constraints=curriculum_service_pb2.SessionConstraints(max_accuracy_interval_width=math.nan)), "constraints.max_accuracy_interval_width"),
    (READER, "GetTwin", twin_service_pb2.GetTwinRequest(twin=_ref(BIG)), "twin.subject"),
    (READER, "GetTwin", twin_service_pb2.GetTwinRequest(twin=common_pb2.TwinRef(subject=S, alias=BIG)), "twin.alias"),
    (READER, "Predict", twin_service_pb2.PredictRequest(twin=_ref(BIG)), "twin.subject"),
    (READER, "Forecast", twin_service_pb2.ForecastRequest(twin=_ref(BIG)), "twin.subject"),
    (READER, "NextSession", curriculum_service_pb2.NextSessionRequest(twin=_ref(BIG)), "twin.subject"),
    (READER, "ListTwins", twin_service_pb2.ListTwinsRequest(subject=BIG), "subject"),
    (READER, "ListSubjects", twin_service_pb2.ListSubjectsRequest(page_token=BIG), "page_token"),
    (RIG, "UploadSession", twin_service_pb2.UploadSessionRequest(subject=BIG, trials=_trials(3)), "subject"),
    (RIG, "UploadSession", twin_service_pb2.UploadSessionRequest(subject=S, label=BIG, trials=_trials(3)), "label"),
    (ADMIN, "SearchCurricula", curriculum_service_pb2.SearchCurriculaRequest(subjects=[BIG]), "subjects[0]"),
    (ADMIN, "FitCohort", twin_service_pb2.FitCohortRequest(subjects=[S, BIG], adaptation=twin_service_pb2.ADAPTATION_NONE), "subjects[1]"),
]


@pytest.mark.parametrize(("role", "method", "request_", "field"), INVALID, ids=[f"{m}:{f}" for _, m, _, f in INVALID])
def test_values_out_of_range_are_invalid_arguments_with_bounded_messages(small, role, method, request_, field):
    with TwinClient(small.target, role) as c:
        with pytest.raises(grpc.RpcError) as e:
            _call(c, method, request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert field in [f for f, _ in field_violations(e.value)], field_violations(e.value)
    assert len(e.value.details()) <= MAX_MESSAGE_CHARS and "x" * 300 not in e.value.details()


def test_reaction_times_are_checked(connect, cohort_trials):
    df = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)].head(10)
    trials = trials_to_pb(df, with_session=False)
    trials[4].reaction_time = -1.0
    c = connect(RIG)
    with pytest.raises(grpc.RpcError) as e:
        c.twins.UploadSession(twin_service_pb2.UploadSessionRequest(subject=S, trials=trials), metadata=c._metadata)
    assert field_violations(e.value) == [("trials[4].reaction_time", "must be a finite number of seconds >= 0 when set (NaN: not measured)")]


def test_operation_ids_are_bounded(connect):
    c = connect(ADMIN)
    for rpc in (c.operations.GetOperation, c.operations.CancelOperation):
        with pytest.raises(grpc.RpcError) as e:
            rpc(operations_service_pb2.GetOperationRequest(name="operations/" + BIG) if rpc is c.operations.GetOperation else operations_service_pb2.CancelOperationRequest(name="operations/" + BIG), metadata=c._metadata)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.value.details()) < 200
    with pytest.raises(grpc.RpcError) as e:  # not a name: INVALID_ARGUMENT, the value cut short
        c.get_operation(BIG)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.value.details()) < 200
    with pytest.raises(grpc.RpcError) as e:
        c.get_operation("operations/no-such-op")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- the status itself ---------------------------------------------------------------------------


def test_status_messages_are_bounded_and_free_of_paths(tmp_path):
    status = to_rpc_status(ModelFileError(f"{tmp_path}/twins/sim-000/00001-abc.safetensors: checksum mismatch for the weights of 'sim-000' v1"))
    assert str(tmp_path) not in status.message and "00001-abc.safetensors: checksum mismatch" in status.message
    many = InvalidArgumentError(*(FieldViolation(f"trials[{i}].contrast_left", "y" * 2000) for i in range(20)))
    status = to_rpc_status(many)
    assert len(status.message) <= MAX_MESSAGE_CHARS and status.ByteSize() <= MAX_STATUS_BYTES
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad) and 1 <= len(bad.field_violations) < 20 and bad.field_violations[0].field == "trials[0].contrast_left"
    limit = to_rpc_status(LimitExceededError(LimitViolation("n_trials", "max_session_trials", 5000, 6000, "trials")))
    assert limit.message == "n_trials: 6,000 trials exceeds the limit max_session_trials = 5,000"
    assert scrub_paths("C:\\store\\a.parquet and /srv/x/y.db, relative twins/b.safetensors; plain a/b") == "a.parquet and y.db, relative b.safetensors; plain a/b"


def test_an_unknown_subject_is_not_echoed_whole(connect):
    c = connect(READER)
    name = "m" * 200  # the longest name there may be
    with pytest.raises(grpc.RpcError) as e:
        c.forecast(name)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(e.value) == "SUBJECT_NOT_FOUND"
    assert len(e.value.details()) <= MAX_MESSAGE_CHARS
