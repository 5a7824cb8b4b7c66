"""Request ids over the wire: a retried UploadSession or FitCohort returns what the first call
did (same session, same operation), and operation ids outlive the server."""

from __future__ import annotations

import grpc
import pytest
from server_env import ADMIN, RIG, TWIN_SUBJECTS

from twin_client.client import TwinClient, operation_metadata, operation_result
from twin_proto.pb import operation_pb2, twin_service_pb2

S = TWIN_SUBJECTS[0]


def test_retried_upload_and_fit_return_the_first_answer_even_after_a_restart(serve, cohort_trials):
    s3 = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)].drop(columns=["subject", "session"])
    first_server = serve()
    with TwinClient(first_server.target, RIG) as c:
        up = c.upload_session(S, s3, request_id="rig-7/run-1")
        again = c.upload_session(S, s3, request_id="rig-7/run-1")
        assert (again.session, again.twin_update.name) == (up.session, up.twin_update.name) and up.session == 3
        with pytest.raises(grpc.RpcError) as e:
            c.upload_session(S, s3, request_id="x" * 201)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in e.value.details()
        assert operation_metadata(c.wait_operation(up.twin_update.name, timeout_s=120)).state == operation_pb2.OPERATION_STATE_SUCCEEDED
    with TwinClient(first_server.target, ADMIN) as c:
        fit = c.fit_cohort(TWIN_SUBJECTS[1:], rule="reinforce", epochs=2, patience=2, adaptation=twin_service_pb2.ADAPTATION_INITIAL_WEIGHTS, request_id="nightly-1")
        assert c.fit_cohort(TWIN_SUBJECTS[1:], rule="reinforce", epochs=2, patience=2, adaptation=twin_service_pb2.ADAPTATION_INITIAL_WEIGHTS, request_id="nightly-1").name == fit.name
        assert operation_metadata(c.wait_operation(fit.name, timeout_s=180)).state == operation_pb2.OPERATION_STATE_SUCCEEDED
    first_server.stop(grace_s=5.0)
    second = serve()
    with TwinClient(second.target, ADMIN) as c:
        update = c.get_operation(up.twin_update.name)  # ids survive the restart, results included
        assert operation_metadata(update).state == operation_pb2.OPERATION_STATE_SUCCEEDED and operation_result(update).twin.version == 2
        fitted = c.get_operation(fit.name)
        assert sorted((t.subject, t.version) for t in operation_result(fitted).twins) == [(s, 2) for s in TWIN_SUBJECTS[1:]]
        assert c.upload_session(S, s3, request_id="rig-7/run-1").session == 3
        assert len(c.list_operations(kind=operation_pb2.OPERATION_KIND_TWIN_UPDATE)) == 1
