"""Error mapping: every validation rule of the core reaches the client as INVALID_ARGUMENT with
a located field violation, and each exception type maps to its status code.

Rules of ``twin.data.trials.validate_trials`` and ``SessionStore.add_session`` and where they are
exercised: not a number, contrast/prior range, both sides, rewarded side vs stimulus, feedback vs
choice (``TRIAL_RULES``); unknown choice/feedback/side codes (enums left unspecified or unknown,
``TRIAL_RULES``); positive/duplicated/ordered trial numbers (``test_trial_number_rules``);
sessions positive and in order, empty history (``test_supplied_history_rules``); empty session,
missing subject (``test_session_level_rules``). Missing columns and non-contiguous subjects
cannot be expressed through the API (every Trial carries every column; one subject per request).
"""

from __future__ import annotations

import math

import grpc
import pytest
from server_env import NO_TWIN, RIG, TWIN_SUBJECTS
from google.rpc import error_details_pb2

from twin_client.client import error_reason, field_violations, trials_to_pb
from server.status import status_code, to_rpc_status
from service.errors import (
    FeatureUnavailableError,
    InvalidArgumentError,
    NoTwinError,
    OperationNotFoundError,
    SubjectNotFoundError,
    UnavailableError,
)
from twin_proto.pb import common_pb2, twin_service_pb2
from twin.errors import ModelFileError, TrialDataError, TwinError, UnknownRuleError
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinNotFoundError, TwinStore

S = TWIN_SUBJECTS[0]
ROW = 7  # the corrupted trial (0-based index in the request)


@pytest.fixture
def session(cohort_trials):
    """One valid session of S as Trial messages."""
    df = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)].head(40)
    return trials_to_pb(df, with_session=False)


def _right_stim(t: common_pb2.Trial) -> None:
    t.contrast_left, t.contrast_right, t.correct_side = 0.0, 0.5, common_pb2.SIDE_RIGHT
    t.choice, t.feedback = common_pb2.SIDE_RIGHT, common_pb2.FEEDBACK_REWARDED


def _both_sides(t):
    _right_stim(t)
    t.contrast_left = 0.25


def _wrong_side(t):
    _right_stim(t)
    t.correct_side = common_pb2.SIDE_LEFT
    t.choice = common_pb2.SIDE_LEFT


def _left_but_right(t):
    _right_stim(t)
    t.contrast_left, t.contrast_right = 0.5, 0.0


def _feedback_mismatch(t):
    _right_stim(t)
    t.feedback = common_pb2.FEEDBACK_ERROR


def _nan(field):
    def f(t):
        setattr(t, field, math.nan)

    return f


def _set(field, value):
    def f(t):
        setattr(t, field, value)

    return f


#: (corruption of trial ROW, violated field, words of the core's reason)
TRIAL_RULES = [
    (_nan("contrast_left"), "contrast_left", "not a number"),
    (_nan("contrast_right"), "contrast_right", "not a number"),
    (_nan("prob_left"), "prob_left", "not a number"),
    (_set("contrast_left", 1.5), "contrast_left", "outside [0, 1]"),
    (_set("contrast_right", -0.25), "contrast_right", "outside [0, 1]"),
    (_set("prob_left", 1.2), "prob_left", "block prior outside"),
    (_both_sides, "contrast_right", "both sides"),
    (_set("choice", common_pb2.SIDE_UNSPECIFIED), "choice", "SIDE_LEFT or SIDE_RIGHT"),
    (_set("choice", 9), "choice", "SIDE_LEFT or SIDE_RIGHT"),
    (_set("feedback", common_pb2.FEEDBACK_UNSPECIFIED), "feedback", "FEEDBACK_REWARDED or FEEDBACK_ERROR"),
    (_set("correct_side", common_pb2.SIDE_UNSPECIFIED), "correct_side", "SIDE_LEFT or SIDE_RIGHT"),
    (_wrong_side, "correct_side", "stimulus on the right but the rewarded side is left"),
    (_left_but_right, "correct_side", "stimulus on the left but the rewarded side is right"),
    (_feedback_mismatch, "feedback", "feedback does not match"),
]


@pytest.mark.parametrize(("corrupt", "field", "words"), TRIAL_RULES, ids=[f"{r[1]}:{r[2]}" for r in TRIAL_RULES])
def test_bad_trial_is_located(connect, session, corrupt, field, words, store_dir):
    trials = list(session)
    corrupt(trials[ROW])
    c = connect(RIG)
    with pytest.raises(grpc.RpcError) as e:
        c.twins.UploadSession(twin_service_pb2.UploadSessionRequest(subject=S, trials=trials), metadata=c._metadata, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(path, description)] = field_violations(e.value)
    assert path == f"trials[{ROW}].{field}" and words in description
    assert error_reason(e.value) in ("INVALID_TRIALS", "INVALID_ARGUMENT")
    assert len(SessionStore(TwinStore(store_dir)).sessions(S)) == 2  # nothing stored


def _numbered(session, numbers):
    trials = list(session)
    for t, n in zip(trials, numbers):
        t.trial = n
    return trials


def test_trial_number_rules(connect, session):
    c = connect(RIG)
    n = len(session)
    cases = {
        "duplicated trial number": list(range(1, n + 1))[:ROW] + [ROW] + list(range(ROW + 1, n)),
        "out of order": list(range(1, ROW + 1)) + [ROW - 3] + list(range(ROW + 2, n + 1)),
        "positive integer": list(range(1, ROW + 1)) + [0] + list(range(ROW + 2, n + 1)),
    }
    for words, numbers in cases.items():
        with pytest.raises(grpc.RpcError) as e:
            c.twins.UploadSession(twin_service_pb2.UploadSessionRequest(subject=S, trials=_numbered(session, numbers)), metadata=c._metadata)
        [(path, description)] = field_violations(e.value)
        assert path == f"trials[{ROW}].trial" and words in description, (words, path, description)


def test_session_level_rules(connect, session):
    c = connect(RIG)
    with pytest.raises(grpc.RpcError) as e:
        c.twins.UploadSession(twin_service_pb2.UploadSessionRequest(subject=S), metadata=c._metadata)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value) == [("trials", "the session has no trials")]
    for subject in ("", "   ", "x" * 201):
        with pytest.raises(grpc.RpcError) as e:
            c.twins.UploadSession(twin_service_pb2.UploadSessionRequest(subject=subject, trials=session), metadata=c._metadata)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(e.value)[0][0] == "subject"


def test_supplied_history_rules(connect, cohort_trials):
    c = connect(RIG)
    df = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session <= 2)]
    trials = trials_to_pb(df)
    first_of_2 = int((df.session == 1).sum())
    trials[first_of_2 + 3].session = 1  # a session-1 trial inside session 2: sessions out of order
    req = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=S), supplied=twin_service_pb2.SuppliedHistory(trials=trials))
    with pytest.raises(grpc.RpcError) as e:
        c.twins.Predict(req, metadata=c._metadata)
    [(path, _)] = field_violations(e.value)
    assert path.startswith("supplied.trials[") and path.rsplit(".", 1)[1] in ("session", "trial")
    trials = trials_to_pb(df.head(5))
    trials[2].session = 0
    req = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=S), supplied=twin_service_pb2.SuppliedHistory(trials=trials))
    with pytest.raises(grpc.RpcError) as e:
        c.twins.Predict(req, metadata=c._metadata)
    assert field_violations(e.value) == [("supplied.trials[2].session", "must be a positive integer, got 0")]
    req = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=S), supplied=twin_service_pb2.SuppliedHistory())
    with pytest.raises(grpc.RpcError) as e:
        c.twins.Predict(req, metadata=c._metadata)
    assert field_violations(e.value) == [("supplied.trials", "no trials")]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidArgumentError.field("x", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (TrialDataError("bad", row=3, column="choice"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownRuleError("no rule 'x'"), grpc.StatusCode.INVALID_ARGUMENT),
        (SubjectNotFoundError("m"), grpc.StatusCode.NOT_FOUND),
        (TwinNotFoundError("no twin"), grpc.StatusCode.NOT_FOUND),
        (OperationNotFoundError("op"), grpc.StatusCode.NOT_FOUND),
        (NoTwinError("m"), grpc.StatusCode.FAILED_PRECONDITION),
        (FeatureUnavailableError("f", "off"), grpc.StatusCode.FAILED_PRECONDITION),
        (TwinError("up to date"), grpc.StatusCode.FAILED_PRECONDITION),
        (UnavailableError("draining"), grpc.StatusCode.UNAVAILABLE),
        (ModelFileError("checksum"), grpc.StatusCode.DATA_LOSS),
        (RuntimeError("secret internals"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(exc, code):
    status = to_rpc_status(exc)
    assert status_code(status) == code
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "twin.v1" and info.reason
    if code == grpc.StatusCode.INTERNAL:
        assert "secret" not in status.message  # internals are logged, not sent
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = error_details_pb2.BadRequest()
        assert status.details[1].Unpack(bad) and bad.field_violations


def test_no_twin_vs_unknown_subject(connect):
    c = connect(RIG)
    for subject, code in ((NO_TWIN, grpc.StatusCode.FAILED_PRECONDITION), ("ghost", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as e:
            c.forecast(subject)
        assert e.value.code() == code
