"""Request ids over the wire: a retried UploadSession, FitCohort or SearchCurricula returns what
the first call did (same session, same operation), the same id with a different request is
refused, and operation ids (and their results) outlive the server."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from server_env import ADMIN, RIG, TWIN_SUBJECTS

from optimizer.planning import CurriculumCandidate, CurriculumSearchOutcome
from twin.protocol import IBL_DEFAULT
from twin.sim.forecast import Interval
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
        with pytest.raises(grpc.RpcError) as e:  # the same id, another request
            c.fit_cohort(TWIN_SUBJECTS[1:], rule="reinforce", epochs=3, patience=2, adaptation=twin_service_pb2.ADAPTATION_INITIAL_WEIGHTS, request_id="nightly-1")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in e.value.details() and "epochs" in e.value.details()
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


def test_retried_search_is_idempotent_and_its_result_survives_a_restart(serve):
    calls: list[tuple[str, ...]] = []
    shorter = dataclasses.replace(IBL_DEFAULT, name="shorter", session_trials=(300, 500))

    def search(req, store, ctx):
        calls.append(req.subjects)
        best = CurriculumCandidate(shorter, Interval(4100.0, 3500.5, 5200.25), 0.75)
        never = CurriculumCandidate(IBL_DEFAULT, Interval(float("inf"), 9000.0, float("inf")), 0.0)  # non-finite survives too
        return CurriculumSearchOutcome(candidates=(best, never), baseline=CurriculumCandidate(IBL_DEFAULT, Interval(6000.0, 5000.0, 7000.0), 0.5))

    first = serve(search=search)
    with TwinClient(first.target, ADMIN) as c:
        op = c.search_curricula(TWIN_SUBJECTS[:2], n_candidates=8, seed=7, request_id="lab/search-1")
        assert c.search_curricula(TWIN_SUBJECTS[:2], n_candidates=8, seed=7, request_id="lab/search-1").name == op.name
        done = c.wait_operation(op.name, timeout_s=60)
        assert operation_metadata(done).state == operation_pb2.OPERATION_STATE_SUCCEEDED and len(operation_result(done).candidates) == 2
        assert c.search_curricula(TWIN_SUBJECTS[:2], n_candidates=8, seed=7, request_id="lab/search-1").name == op.name  # after it finished, too
        with pytest.raises(grpc.RpcError) as e:
            c.search_curricula(TWIN_SUBJECTS[:2], n_candidates=8, seed=8, request_id="lab/search-1")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in e.value.details() and "seed" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.search_curricula(TWIN_SUBJECTS[:2], request_id="x" * 201)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in e.value.details()
        other = c.search_curricula(TWIN_SUBJECTS[:2], n_candidates=8, seed=7)  # no id: a new search
        assert other.name != op.name
        c.wait_operation(other.name, timeout_s=60)
    assert len(calls) == 2
    first.stop(grace_s=5.0)
    second = serve(search=search)
    with TwinClient(second.target, ADMIN) as c:
        again = c.get_operation(op.name)
        assert operation_metadata(again).state == operation_pb2.OPERATION_STATE_SUCCEEDED
        assert operation_result(again) == operation_result(done)  # every candidate, the baseline, the intervals
        assert operation_result(again).candidates[1].trials_to_criterion.mean == float("inf")
        assert c.search_curricula(TWIN_SUBJECTS[:2], n_candidates=8, seed=7, request_id="lab/search-1").name == op.name
        listed = c.list_operations(kind=operation_pb2.OPERATION_KIND_CURRICULUM_SEARCH)
        assert sorted(o.name for o in listed) == sorted([op.name, other.name])
    assert len(calls) == 2  # no search ran again
