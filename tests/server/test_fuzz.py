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

from server.app import RunningServer, ServerConfig, build_plane, receive_ceiling, start_server
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


# -- every RPC and role, sizes up to the limits and beyond ----------------------------------------
#
# Requests are drawn from a seeded generator (reproducible, and fast enough for 10,000 of them):
# each picks an RPC, a caller (no token, a bad token, reader, rig, admin) and, field by field,
# values from the edges: zero, one, typical, the limit, one past it, the type's maximum, NaN,
# overlong strings. Heavy requests within the limits run with short client deadlines, so the
# server's deadline checks are exercised too. The server's own access log is read as well: a
# client that gave up sees DEADLINE_EXCEEDED whatever the server did.

import logging  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import pandas as pd  # noqa: E402
from server_env import ADMIN, FAST_UPDATE, NO_TWIN, READER  # noqa: E402

from service.limits import Limits  # noqa: E402
from service.optimizer_bridge import optimizer_proposer, optimizer_search  # noqa: E402
from twin_proto.pb import curriculum_service_pb2, operations_service_pb2, protocol_pb2  # noqa: E402

LIMITS = Limits()
U32, U64 = 2**32 - 1, 2**64 - 1
ROLES = {"none": None, "bad": "not-a-token", "reader": READER, "rig": RIG, "admin": ADMIN}
SUBJECTS = [*TWIN_SUBJECTS, NO_TWIN, "never-seen", "", " ", "m" * 200, "m" * 201, "x" * 5000, "ünïcødé-🐭", "../../etc/passwd", "a\x00b", "a/b.safetensors"]
COUNTS = [0, 1, 2, 3, 7, 100, 1000, U32]
FLOATS = [0.0, 0.05, 0.5, 1.0, 1.5, -1.0, math.nan, math.inf, -math.inf, 1e300]
SEEDS = [0, 1, 12345, 2**31, 2**32 - 1, 2**32, 2**63, U64]
#: Codes the service may answer with; INTERNAL and UNKNOWN never.
ALLOWED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
}  # fmt: skip
#: Slowest answer an oversized request may get. Measured on the client, from sending the
#: (already serialised) request to its status: the transfer of its bytes over loopback (a few
#: ms for 8 MiB) plus the server's answer. What the server controls is the answer, so the
#: client's figure bounds it from above.
OVERSIZED_MS = 100.0
#: A request over ``max_request_bytes`` (up to gRPC's receive limit, twice it): the service
#: refuses it unparsed, an oversized case like the others.
OVER_BYTES = "UploadSession>max_request_bytes"
#: A request over gRPC's own receive limit (:func:`server.app.receive_ceiling`): gRPC refuses it
#: before the service sees it; held to :data:`OVERSIZED_MS` like the others (grpcio 1.82-1.85
#: took 100-1000 ms for it, hence the pin below 1.82: ``bench/oversized_requests.py``), and its
#: times are also reported apart.
OVER_CEILING = "UploadSession>receive_ceiling"


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


@dataclass
class Case:
    """One request: method, caller, serialised request, client deadline, and whether it is over
    a limit by construction (it must then be answered within :data:`OVERSIZED_MS`)."""

    method: str
    role: str
    body: bytes
    timeout: float = 5.0
    oversized: bool = False
    stream: bool = False
    label: str = ""

    @property
    def rpc(self) -> str:
        return self.label or self.method.rsplit("/", 1)[1]


@dataclass
class Tally:
    codes: Counter = field(default_factory=Counter)
    per_rpc_role: Counter = field(default_factory=Counter)
    oversized_ms: list[float] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)
    over_ceiling_ms: list[float] = field(default_factory=list)
    remeasured: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)


class _Codes(logging.Handler):
    """Status codes of the server's access-log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: Counter = Counter()
        self.bad: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        code = getattr(record, "code", "")
        self.codes[code] += 1
        if code in ("INTERNAL", "UNKNOWN"):
            self.bad.append((getattr(record, "method", ""), code))


class Generator:
    """Random requests of every RPC (see the section comment)."""

    def __init__(self, rng: random.Random, big: dict[str, bytes], session: list[common_pb2.Trial]) -> None:
        self.rng, self.big, self.session = rng, big, session
        self.op_ids: list[str] = ["", "operations/no-such-operation", "operations/" + "x" * 5000]
        self.page_tokens: list[str] = ["", "garbage!", "eyJ4IjoxfQ", "x" * 5000]

    def pick(self, xs):  # noqa: ANN001, ANN201
        return xs[self.rng.randrange(len(xs))]

    def subject(self) -> str:
        return self.pick(SUBJECTS) if self.rng.random() < 0.6 else self.pick(TWIN_SUBJECTS)

    def count(self, limit: int | None = None) -> int:
        if limit and self.rng.random() < 0.4:
            return self.rng.randrange(0, min(limit, 600) + 1)  # an ordinary value
        extra = [limit - 1, limit, limit + 1, 10 * limit] if limit else []
        return self.pick(COUNTS + extra)

    def seed(self) -> int:
        return self.rng.randrange(1000) if self.rng.random() < 0.5 else self.pick(SEEDS)

    def ref(self) -> common_pb2.TwinRef:
        if self.rng.random() < 0.5:
            return common_pb2.TwinRef(subject=self.pick(TWIN_SUBJECTS))
        r = common_pb2.TwinRef(subject=self.subject())
        k = self.rng.random()
        if k < 0.2:
            r.version = self.pick([0, 1, 2, 3, U32])
        elif k < 0.4:
            r.alias = self.pick(["", "serving", "nope", "x" * 5000])
        return r

    def trials(self) -> tuple[list[common_pb2.Trial], bool]:
        """(trials, over a limit)."""
        k = self.rng.random()
        if k < 0.5:
            trials = [common_pb2.Trial.FromString(t.SerializeToString()) for t in self.session]
            for _ in range(self.rng.randrange(4)):
                t = self.pick(trials)
                attr = self.pick(["contrast_left", "contrast_right", "prob_left", "choice", "feedback", "correct_side", "trial", "session", "reaction_time"])
                if attr in ("contrast_left", "contrast_right", "prob_left", "reaction_time"):
                    setattr(t, attr, self.pick(FLOATS))
                else:
                    setattr(t, attr, self.pick([0, 1, 2, 3, 99, U32]) if attr in ("trial", "session") else self.pick([0, 1, 2, 7, -1, 2**31 - 1]))
            return trials, False
        if k < 0.6:
            return [], False
        if k < 0.8:
            return self.session[: self.rng.randrange(1, len(self.session) + 1)], False
        return [common_pb2.Trial(contrast_left=self.pick(FLOATS), choice=self.rng.randrange(3), feedback=self.rng.randrange(3)) for _ in range(self.rng.randrange(1, 40))], False

    def protocol(self) -> protocol_pb2.TaskProtocol:
        p = protocol_pb2.TaskProtocol()
        r = self.rng
        for _ in range(self.pick([0, 1, 2, 6, 17])):
            p.phases.add(contrasts=[self.pick([1.0, 0.5, 0.25, 0.0, 0.125, 1.5, -0.1, math.nan]) for _ in range(self.pick([0, 1, 2, 4, 17]))])
        if r.random() < 0.5:
            p.advancement.CopyFrom(protocol_pb2.AdvancementRule(window=self.pick([0, 1, 50, 1001, U32]), threshold=self.pick(FLOATS), easy_contrasts=[self.pick(FLOATS) for _ in range(r.randrange(3))]))
        if r.random() < 0.3:
            p.debias.CopyFrom(protocol_pb2.DebiasRule(enabled=r.random() < 0.5, min_contrast=self.pick(FLOATS)))
        if r.random() < 0.4:
            p.blocks.CopyFrom(
                protocol_pb2.BlockSettings(
                    enabled=r.random() < 0.7, probabilities=[self.pick(FLOATS) for _ in range(self.pick([0, 2, 2, 3]))], min_length=self.pick([0, 1, 20, U32]),
                    max_length=self.pick([0, 1, 100, 5001, U32]), mean_length=self.pick([60.0, *FLOATS]), unbiased_trials=self.pick([0, 90, 5001, U32]),
                )
            )  # fmt: skip
        if r.random() < 0.5:
            p.min_session_trials, p.max_session_trials = self.pick([0, 1, 400, 5000, U32]), self.pick([0, 1, 700, 5000, 5001, U32])
        return p

    def case(self) -> Case:
        r = self.rng
        role = r.choices(list(ROLES), weights=[1, 1, 2, 2, 2])[0]
        rpc = self.pick(RPCS)
        return getattr(self, "_" + rpc)(role)

    # one method per RPC ----------------------------------------------------------------------

    def _ListSubjects(self, role: str) -> Case:
        req = twin_service_pb2.ListSubjectsRequest(page_size=self.count(LIMITS.max_page_size), page_token=self.pick(self.page_tokens))
        return Case("/twin.v1.TwinService/ListSubjects", role, req.SerializeToString())

    def _ListTwins(self, role: str) -> Case:
        req = twin_service_pb2.ListTwinsRequest(subject=self.pick(["", *SUBJECTS]), page_size=self.count(LIMITS.max_page_size), page_token=self.pick(self.page_tokens))
        return Case("/twin.v1.TwinService/ListTwins", role, req.SerializeToString())

    def _GetTwin(self, role: str) -> Case:
        return Case("/twin.v1.TwinService/GetTwin", role, twin_service_pb2.GetTwinRequest(twin=self.ref()).SerializeToString())

    def _Predict(self, role: str) -> Case:
        k = self.rng.random()
        if k < 0.08:
            return Case("/twin.v1.TwinService/Predict", role, self.big["predict_at_limit"], timeout=self.pick([0.05, 0.2, 0.5]))
        if k < 0.16:
            return Case("/twin.v1.TwinService/Predict", role, self.big["predict_over_limit"], oversized=True, label="Predict")
        req = twin_service_pb2.PredictRequest(twin=self.ref())
        if k < 0.55:
            req.stored.CopyFrom(twin_service_pb2.StoredHistory(through_session=self.pick([0, 1, 2, 3, U32]), from_session=self.pick([0, 1, 2, 3, U32])))
        else:
            trials, _ = self.trials()
            for t in trials:
                t.session = t.session or 1
            req.supplied.CopyFrom(twin_service_pb2.SuppliedHistory(trials=trials, continue_from_twin=self.rng.random() < 0.5))
        return Case("/twin.v1.TwinService/Predict", role, req.SerializeToString(), timeout=self.pick([0.2, 0.5, 2.0]))

    def _Forecast(self, role: str) -> Case:
        n_trials, n_rollouts = self.count(LIMITS.max_session_trials), self.count(LIMITS.max_rollouts)
        level = 0.0 if self.rng.random() < 0.5 else self.pick([0.9, *FLOATS])
        req = twin_service_pb2.ForecastRequest(twin=self.ref(), n_trials=n_trials, n_rollouts=n_rollouts, seed=self.seed(), interval_level=level)
        if self.rng.random() < 0.3:
            req.start_phase = self.pick([0, 1, 5, 6, U32])
        if self.rng.random() < 0.25:
            req.protocol.CopyFrom(self.protocol())
        over = n_trials > LIMITS.max_session_trials or n_rollouts > LIMITS.max_rollouts or (n_rollouts or 50) * (n_trials or 550) > LIMITS.max_forecast_trial_steps
        return Case("/twin.v1.TwinService/Forecast", role, req.SerializeToString(), timeout=self.pick([0.05, 0.2, 0.5]), oversized=over)

    def _UploadSession(self, role: str) -> Case:
        k = self.rng.random()
        if k < 0.08:
            return Case("/twin.v1.TwinService/UploadSession", role, self.big["upload_over_limit"], oversized=True)
        if k < 0.14:  # over max_request_bytes: refused unparsed by the service
            return Case("/twin.v1.TwinService/UploadSession", role, self.big["over_request_bytes"], oversized=True, label=OVER_BYTES)
        if k < 0.15:  # over gRPC's receive limit: refused by gRPC (reported apart)
            return Case("/twin.v1.TwinService/UploadSession", role, self.big["over_receive_ceiling"], oversized=True, label=OVER_CEILING)
        trials, _ = self.trials()
        req = twin_service_pb2.UploadSessionRequest(subject=self.subject(), trials=trials, label=self.pick(["", "2026-01-01", "x" * 5000]), skip_twin_update=self.rng.random() < 0.5)
        return Case("/twin.v1.TwinService/UploadSession", role, req.SerializeToString())

    def _FitCohort(self, role: str) -> Case:
        subjects = [self.subject() for _ in range(self.pick([0, 0, 1, 2, 3]))]
        epochs = self.count(LIMITS.max_fit_epochs)
        req = twin_service_pb2.FitCohortRequest(
            subjects=subjects, rule=self.pick(["", "static", "reinforce", "dnn", "no-such-rule", "x" * 5000]), epochs=epochs,
            patience=self.pick([0, 1, 30, U32]), adaptation=self.pick([0, 1, 2, 3, 4, 9]), seed=self.seed(),
        )  # fmt: skip
        return Case("/twin.v1.TwinService/FitCohort", role, req.SerializeToString(), oversized=epochs > LIMITS.max_fit_epochs and role == "admin")

    def _NextSession(self, role: str) -> Case:
        c = curriculum_service_pb2.SessionConstraints()
        if self.rng.random() < 0.6:
            c = curriculum_service_pb2.SessionConstraints(
                min_trials=self.count(LIMITS.max_session_trials), max_trials=self.count(LIMITS.max_session_trials),
                max_reward_volume_ul=self.pick([0.0, 1.0, 1.5, 3.0, *FLOATS]), max_accuracy_interval_width=self.pick([0.0, 0.3, *FLOATS]),
            )  # fmt: skip
        n_rollouts = self.count(LIMITS.max_rollouts)
        req = curriculum_service_pb2.NextSessionRequest(twin=common_pb2.TwinRef(subject=self.subject()), constraints=c, n_rollouts=n_rollouts, seed=self.seed())
        over = c.min_trials > LIMITS.max_session_trials or n_rollouts > LIMITS.max_rollouts
        return Case("/twin.v1.CurriculumService/NextSession", role, req.SerializeToString(), timeout=self.pick([0.05, 0.2, 0.5]), oversized=over)

    def _SearchCurricula(self, role: str) -> Case:
        n, h = self.count(LIMITS.max_search_candidates), self.count(LIMITS.max_search_horizon_trials)
        subjects = [self.subject() for _ in range(self.pick([0, 1, 2]))] if self.rng.random() < 0.9 else ["s"] * 1001
        req = curriculum_service_pb2.SearchCurriculaRequest(subjects=subjects, n_candidates=n, horizon_trials=h, seed=self.seed())
        over = role == "admin" and (n > LIMITS.max_search_candidates or h > LIMITS.max_search_horizon_trials or len(subjects) > LIMITS.max_search_subjects)
        return Case("/twin.v1.CurriculumService/SearchCurricula", role, req.SerializeToString(), oversized=over)

    def _GetOperation(self, role: str) -> Case:
        return Case("/twin.v1.OperationsService/GetOperation", role, operations_service_pb2.GetOperationRequest(name=self.pick(self.op_ids)).SerializeToString())

    def _ListOperations(self, role: str) -> Case:
        req = operations_service_pb2.ListOperationsRequest(
            kind=self.pick([0, 1, 2, 3, 99]), state=self.pick([0, 1, 2, 3, 4, 5, 99]), subject=self.pick(["", *SUBJECTS]),
            page_size=self.count(LIMITS.max_page_size), page_token=self.pick(self.page_tokens),
        )  # fmt: skip
        return Case("/twin.v1.OperationsService/ListOperations", role, req.SerializeToString())

    def _CancelOperation(self, role: str) -> Case:
        return Case("/twin.v1.OperationsService/CancelOperation", role, operations_service_pb2.CancelOperationRequest(name=self.pick(self.op_ids)).SerializeToString())

    def _WatchOperation(self, role: str) -> Case:
        req = operations_service_pb2.WatchOperationRequest(name=self.pick(self.op_ids))
        return Case("/twin.v1.OperationsService/WatchOperation", role, req.SerializeToString(), timeout=0.3, stream=True)

    def _Bytes(self, role: str) -> Case:
        method = self.pick([m for m in RPC_PATHS if "Watch" not in m])
        return Case(method, role, self.rng.randbytes(self.rng.randrange(0, 300)), label="Bytes")


RPC_PATHS = [
    "/twin.v1.TwinService/ListSubjects", "/twin.v1.TwinService/ListTwins", "/twin.v1.TwinService/GetTwin", "/twin.v1.TwinService/Predict",
    "/twin.v1.TwinService/Forecast", "/twin.v1.TwinService/UploadSession", "/twin.v1.TwinService/FitCohort",
    "/twin.v1.CurriculumService/NextSession", "/twin.v1.CurriculumService/SearchCurricula", "/twin.v1.OperationsService/GetOperation",
    "/twin.v1.OperationsService/ListOperations", "/twin.v1.OperationsService/CancelOperation", "/twin.v1.OperationsService/WatchOperation",
]  # fmt: skip
RPCS = [p.rsplit("/", 1)[1] for p in RPC_PATHS] + ["Bytes"]


@pytest.fixture(scope="module")
def rpc_fuzz_server(base_store, tmp_path_factory) -> Iterator[RunningServer]:
    """A server with the production limits, the real optimizer (proposals and searches) and 16
    threads over a copy of the base store."""
    root = tmp_path_factory.mktemp("rpc-fuzz") / "store"
    shutil.copytree(base_store, root)
    plane = build_plane(root, config=FAST_UPDATE, propose=optimizer_proposer(), search=optimizer_search())
    assert plane.config.limits == LIMITS
    running = start_server(ServerConfig(address="127.0.0.1:0", auth=AuthConfig.from_tokens(TOKENS), max_workers=16), plane)
    yield running
    running.stop(grace_s=5.0)


@pytest.fixture(scope="module")
def big_requests(cohort_trials) -> dict[str, bytes]:
    """Requests at a limit and one past it, serialised once."""
    one = cohort_trials[cohort_trials.subject == S]
    reps = -(-LIMITS.max_supplied_trials // len(one)) + 1
    df = pd.concat([one.assign(session=one.session + i * int(one.session.max())) for i in range(reps)], ignore_index=True)
    trials = trials_to_pb(df.head(LIMITS.max_supplied_trials + 1))
    ref = common_pb2.TwinRef(subject=S)
    at = twin_service_pb2.PredictRequest(twin=ref, supplied=twin_service_pb2.SuppliedHistory(trials=trials[:-1]))
    over = twin_service_pb2.PredictRequest(twin=ref, supplied=twin_service_pb2.SuppliedHistory(trials=trials))
    upload = twin_service_pb2.UploadSessionRequest(subject=S, trials=trials_to_pb(df.head(LIMITS.max_session_trials + 1), with_session=False))
    huge = twin_service_pb2.UploadSessionRequest(subject=S, trials=[trials[0]] * (LIMITS.max_request_bytes // trials[0].ByteSize() + 10))
    ceiling = receive_ceiling(LIMITS.max_request_bytes)
    huger = twin_service_pb2.UploadSessionRequest(subject=S, trials=[trials[0]] * (ceiling // trials[0].ByteSize() + 10))
    out = {
        "predict_at_limit": at.SerializeToString(), "predict_over_limit": over.SerializeToString(), "upload_over_limit": upload.SerializeToString(),
        "over_request_bytes": huge.SerializeToString(), "over_receive_ceiling": huger.SerializeToString(),
    }  # fmt: skip
    assert ceiling > len(out["over_request_bytes"]) > LIMITS.max_request_bytes > len(out["predict_over_limit"])
    assert len(out["over_receive_ceiling"]) > ceiling
    return out


def _send(channel: grpc.Channel, case: Case) -> grpc.StatusCode:
    token = ROLES[case.role]
    md = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        if case.stream:
            stream = channel.unary_stream(case.method)(case.body, metadata=md, timeout=case.timeout)
            for i, _ in enumerate(stream):
                if i >= 1:
                    stream.cancel()
                    return grpc.StatusCode.OK
            return grpc.StatusCode.OK
        channel.unary_unary(case.method)(case.body, metadata=md, timeout=case.timeout)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _remember(gen: Generator, case: Case, channel: grpc.Channel) -> None:
    """Keep operation ids and page tokens the server hands out, for later requests to use, and
    cancel most started operations (they would otherwise queue up behind each other)."""
    if case.role != "admin" or case.method.rsplit("/", 1)[1] not in ("FitCohort", "SearchCurricula", "ListOperations"):
        return
    md = (("authorization", f"Bearer {ADMIN}"),)
    lst = channel.unary_unary(
        "/twin.v1.OperationsService/ListOperations",
        request_serializer=operations_service_pb2.ListOperationsRequest.SerializeToString,
        response_deserializer=operations_service_pb2.ListOperationsResponse.FromString,
    )
    resp = lst(operations_service_pb2.ListOperationsRequest(page_size=5), metadata=md, timeout=5)
    ops = resp.operations
    gen.op_ids[3:] = [o.name for o in ops]
    if resp.next_page_token and len(gen.page_tokens) < 8:
        gen.page_tokens.append(resp.next_page_token)
    cancel = channel.unary_unary("/twin.v1.OperationsService/CancelOperation")
    for o in ops:
        if not o.done and gen.rng.random() < 0.9:
            cancel(operations_service_pb2.CancelOperationRequest(name=o.name).SerializeToString(), metadata=md, timeout=5)


def _fuzz_rpcs(server: RunningServer, big: dict[str, bytes], session: list[common_pb2.Trial], n: int, seed: int, remeasure: bool = False) -> dict[str, object]:
    """Send ``n`` requests drawn with ``seed``; with ``remeasure``, an oversized case answered
    slower than :data:`OVERSIZED_MS` is sent twice more and its fastest answer counts (what
    varies between the repeats is the machine's other load: the request is refused before any
    work, so it changes nothing)."""
    gen = Generator(random.Random(seed), big, session)
    tally = Tally()
    codes = _Codes()
    access = logging.getLogger("server.access")
    level = access.level
    access.addHandler(codes)
    access.setLevel(logging.INFO)
    health_bad: list[str] = []
    health_n = [0]
    stop = threading.Event()

    def watch_health() -> None:
        with TwinClient(server.target, None, timeout_s=2) as hc:
            while not stop.wait(0.1):
                try:
                    state = hc.health()
                except grpc.RpcError as e:
                    state = e.code().name
                health_n[0] += 1
                if state != "SERVING":
                    health_bad.append(state)

    channel = grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)])
    health = threading.Thread(target=watch_health, daemon=True)
    rss0 = _rss_mib()
    rss_samples = [round(rss0)]
    t0 = time.perf_counter()
    health.start()
    try:
        for i in range(n):
            if i and i % (n // 4) == 0:
                rss_samples.append(round(_rss_mib()))
            case = gen.case()
            start = time.perf_counter()
            code = _send(channel, case)
            ms = (time.perf_counter() - start) * 1000
            if remeasure and case.oversized and ms >= OVERSIZED_MS:
                tally.remeasured += 1
                for _ in range(2):
                    start = time.perf_counter()
                    if _send(channel, case) is code:
                        ms = min(ms, (time.perf_counter() - start) * 1000)
            tally.codes[code.name] += 1
            tally.per_rpc_role[(case.method.rsplit("/", 1)[1] if case.rpc in (OVER_BYTES, OVER_CEILING) else case.rpc, case.role)] += 1
            if case.oversized and code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                if case.rpc == OVER_CEILING:
                    tally.over_ceiling_ms.append(ms)
                tally.oversized_ms.append(ms)
                tally.slowest[case.rpc] = max(ms, tally.slowest.get(case.rpc, 0.0))
            if code not in ALLOWED:
                tally.bad.append((case.method, case.role, code.name))
            _remember(gen, case, channel)
    finally:
        stop.set()
        health.join(5)
        channel.close()
        access.removeHandler(codes)
        access.setLevel(level)
    seconds = time.perf_counter() - t0
    server.plane.jobs.list()  # still answering
    for op in server.plane.jobs.list():
        if not op.state.done:
            server.plane.jobs.cancel(op.id)
    rss1 = _rss_mib()
    ms = sorted(tally.oversized_ms)
    report = {
        "requests": n,
        "seconds": round(seconds, 1),
        "client_codes": dict(tally.codes.most_common()),
        "server_codes": dict(codes.codes.most_common()),
        "rss_mib_before": round(rss0),
        "rss_mib_after": round(rss1),
        "rss_mib_by_quarter": [*rss_samples, round(rss1)],
        "oversized": len(ms),
        "oversized_ms_p50": round(ms[len(ms) // 2], 1) if ms else None,
        "oversized_ms_p99": round(ms[int(len(ms) * 0.99)], 1) if ms else None,
        "oversized_ms_max": round(ms[-1], 1) if ms else None,
        "oversized_slowest_ms": {k: round(v, 1) for k, v in sorted(tally.slowest.items())},
        "over_receive_ceiling": len(tally.over_ceiling_ms),
        "over_receive_ceiling_ms_max": round(max(tally.over_ceiling_ms), 1) if tally.over_ceiling_ms else None,
        "health_checks": health_n[0],
        "health_not_serving": len(health_bad),
        "oversized_remeasured": tally.remeasured,
    }
    print("\nRPC fuzz:", report)
    assert not tally.bad, tally.bad[:20]
    assert not codes.bad, codes.bad[:20]
    assert not health_bad, health_bad[:10]
    assert health_n[0] > 0
    rpcs = {m for m, _ in tally.per_rpc_role}
    assert rpcs == set(RPCS), set(RPCS) - rpcs
    assert all(tally.per_rpc_role[(m, r)] for m in RPCS for r in ROLES) or n < 2000  # every RPC from every caller
    return {**report, "oversized_ms": ms, "over_ceiling_ms": sorted(tally.over_ceiling_ms), "slowest": tally.slowest, "rss_growth": rss1 - rss0}


def test_fuzz_every_rpc_and_role(rpc_fuzz_server, big_requests, good_session):
    """~1,000 requests, part of the default run: every oversized request answered within 100 ms
    (an outlier re-measured, see :func:`_fuzz_rpcs`; the slow variant counts every first answer)."""
    rep = _fuzz_rpcs(rpc_fuzz_server, big_requests, good_session, 1000, seed=1, remeasure=True)
    assert rep["oversized"] >= 20 and rep["oversized_ms"][-1] < OVERSIZED_MS, rep["slowest"]
    assert rep["slowest"][OVER_BYTES] < OVERSIZED_MS  # over max_request_bytes: was 100-1000 ms when gRPC refused it
    assert rep["over_receive_ceiling"] >= 1 and rep["over_ceiling_ms"][-1] < OVERSIZED_MS  # refused by gRPC itself
    assert rep["rss_growth"] < 1500


@pytest.mark.slow
def test_fuzz_10000_requests_every_rpc_and_role(rpc_fuzz_server, big_requests, good_session):
    """Issue 18, done-when 2: 10,000 requests; 0 INTERNAL/UNKNOWN (client and server side),
    health SERVING throughout, RSS bounded, every oversized request answered within 100 ms."""
    rep = _fuzz_rpcs(rpc_fuzz_server, big_requests, good_session, 10_000, seed=18)
    assert rep["oversized"] >= 200 and rep["oversized_ms"][-1] < OVERSIZED_MS
    assert rep["over_receive_ceiling"] >= 1 and rep["over_ceiling_ms"][-1] < OVERSIZED_MS  # refused by gRPC itself (16 MiB each: a few per run; bench/oversized_requests.py sends 30)
    assert rep["rss_growth"] < 1500
