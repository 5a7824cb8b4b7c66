"""Deadlines honoured (issue 18, done-when 3): a client that gives up (its deadline passes, or it
cancels the call) stops the server's work within 1 s, measured from the moment the client's
call returned to the moment the server's handler returned (its access-log line); a cancelled
operation stops within 1 s of CancelOperation.

The work is the real thing: the optimizer's next-session proposal (seconds of simulation
through the twin), a forecast at the rollout limit, a prediction along 100,000 supplied trials,
a curriculum search through the twins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import pandas as pd
import pytest
from server_env import ADMIN, READER, TWIN_SUBJECTS

from service.optimizer_bridge import optimizer_proposer, optimizer_search
from twin_client.client import TwinClient, operation_metadata, trials_to_pb
from twin_proto.pb import common_pb2, curriculum_service_pb2, operation_pb2, twin_service_pb2

S = TWIN_SUBJECTS[0]
#: Most time the server may go on working after its client gave up.
STOP_WITHIN_S = 1.0


class _AccessLog(logging.Handler):
    """Keeps (monotonic time, method, code) of every access-log line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str, str]] = []
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.cond:
            self.lines.append((time.monotonic(), getattr(record, "method", ""), getattr(record, "code", "")))
            self.cond.notify_all()

    def wait_for(self, method: str, after: float, timeout: float = 120.0) -> tuple[float, str]:
        """Time and code of the first line of ``method`` logged after ``after``."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [(t, code) for t, m, code in self.lines if m.endswith(method) and t >= after]
                if found:
                    return found[0]
                left = end - time.monotonic()
                assert left > 0, f"no {method} line logged"
                self.cond.wait(left)


@pytest.fixture
def access_log() -> Iterator[_AccessLog]:
    handler = _AccessLog()
    logger = logging.getLogger("server.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def slow_server(serve):
    """A server whose NextSession runs the optimizer's full proposal (several seconds)."""
    return serve(propose=optimizer_proposer(), search=optimizer_search())


def _gave_up(call, timeout: float) -> tuple[float, float]:
    """Run ``call(timeout)``, expecting DEADLINE_EXCEEDED; (start, moment it returned)."""
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        call(timeout)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return t0, time.monotonic()


def _stops(access_log: _AccessLog, method: str, started: float, gave_up: float) -> float:
    t, code = access_log.wait_for(method, started)
    lag = t - gave_up
    assert lag < STOP_WITHIN_S, f"{method} went on for {lag:.2f} s after its client gave up"
    assert code in ("DEADLINE_EXCEEDED", "CANCELLED"), code
    return lag


@pytest.fixture(scope="module")
def long_history(cohort_trials) -> list[common_pb2.Trial]:
    """100,000 trials of S (its real trials, repeated as later sessions): the Predict limit."""
    one = cohort_trials[cohort_trials.subject == S]
    reps = -(-100_000 // len(one))
    df = pd.concat([one.assign(session=one.session + i * int(one.session.max())) for i in range(reps)], ignore_index=True).head(100_000)
    return trials_to_pb(df)


def test_work_stops_within_a_second_of_the_client_giving_up(slow_server, access_log, long_history):
    c = TwinClient(slow_server.target, READER)
    lags = {}
    try:
        plan = curriculum_service_pb2.NextSessionRequest(twin=common_pb2.TwinRef(subject=S))
        started, gave_up = _gave_up(lambda t: c.curricula.NextSession(plan, metadata=c._metadata, timeout=t), 1.0)
        lags["NextSession"] = _stops(access_log, "NextSession", started, gave_up)

        fc = twin_service_pb2.ForecastRequest(twin=common_pb2.TwinRef(subject=S), n_rollouts=2000, n_trials=1000)
        started, gave_up = _gave_up(lambda t: c.twins.Forecast(fc, metadata=c._metadata, timeout=t), 0.3)
        lags["Forecast"] = _stops(access_log, "Forecast", started, gave_up)

        pr = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=S), supplied=twin_service_pb2.SuppliedHistory(trials=long_history))
        # the batch-1 path runs 100,000 trials in well under a second: give up a quarter of the way in
        t0 = time.monotonic()
        c.twins.Predict(pr, metadata=c._metadata, timeout=60)
        quarter = (time.monotonic() - t0) / 4
        started, gave_up = _gave_up(lambda t: c.twins.Predict(pr, metadata=c._metadata, timeout=t), min(quarter, 1.0))
        lags["Predict"] = _stops(access_log, "Predict", started, gave_up)

        # no deadline at all: the client cancels the call
        started = time.monotonic()
        future = c.curricula.NextSession.future(plan, metadata=c._metadata)
        time.sleep(1.0)
        assert future.cancel()
        gave_up = time.monotonic()
        lags["NextSession (cancelled)"] = _stops(access_log, "NextSession", started + 0.01, gave_up)

        assert c.health() == "SERVING" and c.get_twin(S).twin.version == 1
    finally:
        c.close()
    print("server work after the client gave up, s:", {k: round(v, 3) for k, v in lags.items()})


def test_a_cancelled_operation_stops_within_a_second(slow_server):
    with TwinClient(slow_server.target, ADMIN) as c:
        op = c.search_curricula(list(TWIN_SUBJECTS), seed=3)
        deadline = time.monotonic() + 60
        while operation_metadata(c.get_operation(op.name)).state != operation_pb2.OPERATION_STATE_RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # well into the simulations
        asked = time.monotonic()
        c.cancel_operation(op.name)
        done = c.wait_operation(op.name, timeout_s=30)
        stopped = time.monotonic()
    assert operation_metadata(done).state == operation_pb2.OPERATION_STATE_CANCELLED
    assert stopped - asked < STOP_WITHIN_S, f"the search ran on for {stopped - asked:.2f} s after CancelOperation"
