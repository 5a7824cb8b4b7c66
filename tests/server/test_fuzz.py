"""Fuzzing: malformed requests (corrupted trials, bad subjects, random bytes) are all refused,
the server stays healthy and the store is unchanged."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator

import grpc
import pytest
from server_env import RIG, TOKENS, TWIN_SUBJECTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import RunningServer, ServerConfig, build_plane, start_server
from server.auth import AuthConfig
from twin_client.client import TwinClient, trials_to_pb
from twin_proto.pb import common_pb2, twin_service_pb2
from twin.persist.sessions import SessionStore

S = TWIN_SUBJECTS[0]
N_TRIALS = 30


@pytest.fixture(scope="module")
def fuzz_server(base_store, tmp_path_factory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("fuzz") / "store"
    shutil.copytree(base_store, root)
    running = start_server(ServerConfig(address="127.0.0.1:0", auth=AuthConfig.from_tokens(TOKENS), max_workers=4), build_plane(root))
    yield running
    running.stop(grace_s=2.0)


@pytest.fixture(scope="module")
def fuzz_client(fuzz_server) -> Iterator[TwinClient]:
    with TwinClient(fuzz_server.target, RIG, timeout_s=30) as c:
        yield c


@pytest.fixture(scope="module")
def good_session(cohort_trials) -> list[common_pb2.Trial]:
    df = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)].head(N_TRIALS)
    return trials_to_pb(df, with_session=False)


def _snapshot(plane) -> tuple:
    store = plane.store
    sessions = SessionStore(store)
    subjects = sorted(set(store.subjects()) | set(sessions.subjects()))
    files = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file() and ".db" not in p.name)
    return (
        tuple((s, tuple((r.session, r.data_hash) for r in sessions.sessions(s)), tuple((v.version, v.aliases) for v in store.versions(s))) for s in subjects),
        tuple(files),
    )


bad_float = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1.0 + 1e-9, allow_nan=False, allow_infinity=False),
)
bad_side = st.integers(min_value=-(2**31), max_value=2**31 - 1).filter(lambda v: v not in (common_pb2.SIDE_LEFT, common_pb2.SIDE_RIGHT))
bad_feedback = st.integers(min_value=-(2**31), max_value=2**31 - 1).filter(lambda v: v not in (common_pb2.FEEDBACK_REWARDED, common_pb2.FEEDBACK_ERROR))

#: one corruption: (kind, row, value); every kind makes a session invalid on its own (and
#: corruptions of different rows cannot cancel out)
corruption = st.one_of(
    st.tuples(st.sampled_from(["contrast_left", "contrast_right", "prob_left"]), st.integers(0, N_TRIALS - 1), bad_float),
    st.tuples(st.sampled_from(["choice", "correct_side"]), st.integers(0, N_TRIALS - 1), bad_side),
    st.tuples(st.just("feedback"), st.integers(0, N_TRIALS - 1), bad_feedback),
    st.tuples(st.sampled_from(["flip_feedback", "flip_side", "both_sides", "dup_trial", "zero_trial"]), st.integers(1, N_TRIALS - 1), st.none()),
)


def _corrupt(trials: list[common_pb2.Trial], kind: str, row: int, value: object) -> None:
    t = trials[row]
    if kind in ("contrast_left", "contrast_right", "prob_left", "choice", "correct_side", "feedback"):
        setattr(t, kind, value)
    elif kind == "flip_feedback":
        t.feedback = common_pb2.FEEDBACK_ERROR if t.feedback == common_pb2.FEEDBACK_REWARDED else common_pb2.FEEDBACK_REWARDED
    elif kind == "flip_side":
        t.correct_side = common_pb2.SIDE_LEFT if t.correct_side == common_pb2.SIDE_RIGHT else common_pb2.SIDE_RIGHT
    elif kind == "both_sides":
        t.contrast_left, t.contrast_right = 0.5, 0.25
    else:  # trial numbering: number every trial, then break one
        for i, x in enumerate(trials):
            x.trial = i + 1
        t.trial = trials[row - 1].trial if kind == "dup_trial" else 0


request_case = st.one_of(
    st.tuples(st.just("trials"), st.lists(corruption, min_size=1, max_size=4, unique_by=lambda c: c[1]), st.sampled_from(["upload", "predict"])),
    st.tuples(st.just("subject"), st.sampled_from(["", " ", "\t", "x" * 201]), st.just("upload")),
    st.tuples(st.just("empty"), st.sampled_from([S, "new-mouse"]), st.just("upload")),
    st.tuples(st.just("bytes"), st.binary(max_size=300), st.just("upload")),
)


def _fuzz_once(client: TwinClient, session: list[common_pb2.Trial], case: tuple) -> None:
    kind, payload, target = case
    md = client._metadata
    if kind == "bytes":
        call = client.channel.unary_unary("/twin.v1.TwinService/UploadSession")
        try:
            call(b"\x0a\x00" + payload if payload[:1] != b"\x0a" else payload, metadata=md, timeout=10)
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.OK
            return
        pytest.fail("random bytes were accepted as a session")
    trials = [common_pb2.Trial.FromString(t.SerializeToString()) for t in session]
    subject = S
    if kind == "trials":
        for c in payload:
            _corrupt(trials, *c)
    elif kind == "subject":
        subject = payload
    else:
        subject, trials = payload, []
    with pytest.raises(grpc.RpcError) as e:
        if target == "upload":
            client.twins.UploadSession(twin_service_pb2.UploadSessionRequest(subject=subject, trials=trials), metadata=md, timeout=10)
        else:
            for t in trials:
                t.session = 1
            req = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=S), supplied=twin_service_pb2.SuppliedHistory(trials=trials))
            client.twins.Predict(req, metadata=md, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, e.value.details())


def _run(fuzz_server, fuzz_client, good_session, n: int) -> None:
    before = _snapshot(fuzz_server.plane)

    @settings(max_examples=n, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(request_case)
    def fuzz(case: tuple) -> None:
        _fuzz_once(fuzz_client, good_session, case)

    fuzz()
    assert fuzz_client.health() == "SERVING"
    assert fuzz_client.get_twin(S).twin.version == 1  # still answering
    assert _snapshot(fuzz_server.plane) == before


def test_fuzz_1000_malformed_requests(fuzz_server, fuzz_client, good_session):
    """~6 s on 2 cores: part of the default run."""
    _run(fuzz_server, fuzz_client, good_session, 1000)
