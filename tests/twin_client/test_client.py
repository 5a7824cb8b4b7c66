"""The client's helpers without a server (twin_client/client.py): trial conversion from tables
and CSV rows, long-running operation unpacking, status details from trailers."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2, status_pb2

from twin_client.client import error_reason, field_violations, operation_metadata, operation_result, operation_state_name, rpc_status, trial_pb, trials_to_pb
from twin_proto.pb import common_pb2, operation_pb2


def _table(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "session": 2,
            "trial": np.arange(n),
            "contrast_left": rng.random(n),
            "contrast_right": 0.0,
            "choice": rng.integers(0, 2, n),
            "feedback": rng.choice([-1, 1], n),
            "correct_side": rng.integers(0, 2, n),
            "prob_left": 0.5,
            "reaction_time": np.where(rng.random(n) < 0.5, np.nan, 0.25),
        }
    )


def test_table_and_csv_rows_give_the_same_messages():
    df = _table()
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    buf.seek(0)
    from_csv = [trial_pb(r) for r in csv.DictReader(buf)]
    from_table = trials_to_pb(df)
    assert [m.SerializeToString() for m in from_csv] == [m.SerializeToString() for m in from_table]
    t = from_table[1]
    assert t.session == 2 and t.trial == 1 and t.choice in (common_pb2.SIDE_LEFT, common_pb2.SIDE_RIGHT)
    assert [m.HasField("reaction_time") for m in from_table] == [not math.isnan(x) for x in df.reaction_time]
    assert all(m.session == 0 for m in trials_to_pb(df, with_session=False))


def test_unknown_codes_are_sent_unspecified():
    row = {"contrast_left": "1", "contrast_right": "0", "choice": "7", "feedback": "", "correct_side": "0", "prob_left": "0.5"}
    t = trial_pb(row)
    assert (t.choice, t.feedback, t.correct_side) == (common_pb2.SIDE_UNSPECIFIED, common_pb2.FEEDBACK_UNSPECIFIED, common_pb2.SIDE_LEFT)
    assert not t.HasField("reaction_time") and t.session == 0 and t.trial == 0


def test_operation_metadata_and_result_are_unpacked():
    op = operations_pb2.Operation(name="operations/abc", done=True)
    op.metadata.Pack(operation_pb2.OperationMetadata(kind=operation_pb2.OPERATION_KIND_FIT_COHORT, state=operation_pb2.OPERATION_STATE_SUCCEEDED, progress=1.0))
    op.response.Pack(operation_pb2.FitCohortResult(adaptation="w0"))
    assert operation_metadata(op).kind == operation_pb2.OPERATION_KIND_FIT_COHORT and operation_state_name(op) == "OPERATION_STATE_SUCCEEDED"
    result = operation_result(op)
    assert isinstance(result, operation_pb2.FitCohortResult) and result.adaptation == "w0"
    running = operations_pb2.Operation(name="operations/abc")
    running.metadata.CopyFrom(op.metadata)
    assert operation_result(running) is None
    failed = operations_pb2.Operation(name="operations/x", done=True, error=status_pb2.Status(code=13, message="boom"))
    assert operation_result(failed) is None
    with pytest.raises(ValueError, match="not twin.v1.OperationMetadata"):
        operation_metadata(failed)
    odd = operations_pb2.Operation(name="operations/y", done=True)
    odd.response.Pack(common_pb2.Interval())
    with pytest.raises(ValueError, match="unknown response type"):
        operation_result(odd)


class _Error:
    """The part of grpc.RpcError the helpers read."""

    def __init__(self, trailers):
        self._trailers = trailers

    def trailing_metadata(self):
        return self._trailers


def test_status_details_come_from_the_trailer():
    status = status_pb2.Status(code=3, message="bad")
    bad = error_details_pb2.BadRequest(field_violations=[error_details_pb2.BadRequest.FieldViolation(field="trials[2].feedback", description="required")])
    status.details.add().Pack(bad)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT"))
    err = _Error((("x-other", "1"), ("grpc-status-details-bin", status.SerializeToString())))
    assert rpc_status(err) == status  # type: ignore[arg-type]
    assert field_violations(err) == [("trials[2].feedback", "required")] and error_reason(err) == "INVALID_ARGUMENT"  # type: ignore[arg-type]
    assert rpc_status(_Error(())) is None and field_violations(_Error(None)) == [] and error_reason(_Error(())) is None  # type: ignore[arg-type]
