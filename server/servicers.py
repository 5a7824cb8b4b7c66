"""Thin gRPC servicers over the data plane: convert the request, call one data-plane method,
convert the result. Errors propagate as exceptions; :mod:`server.interceptors` maps them to
status codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from server import convert
from service.dataplane import Deadline, TwinDataPlane
from twin_proto.pb import (
    curriculum_service_pb2,
    curriculum_service_pb2_grpc,
    operation_pb2,
    operations_service_pb2,
    operations_service_pb2_grpc,
    twin_service_pb2,
    twin_service_pb2_grpc,
)


def _deadline(context: grpc.ServicerContext) -> Deadline:
    return Deadline.after(context.time_remaining())


class TwinServicer(twin_service_pb2_grpc.TwinServiceServicer):
    """twin.v1.TwinService."""

    def __init__(self, plane: TwinDataPlane) -> None:
        self.plane = plane

    def ListSubjects(self, request: twin_service_pb2.ListSubjectsRequest, context: grpc.ServicerContext) -> twin_service_pb2.ListSubjectsResponse:
        page = self.plane.list_subjects(request.page_size, request.page_token)
        return twin_service_pb2.ListSubjectsResponse(subjects=[convert.subject_pb(s) for s in page.items], next_page_token=page.next_page_token)

    def ListTwins(self, request: twin_service_pb2.ListTwinsRequest, context: grpc.ServicerContext) -> twin_service_pb2.ListTwinsResponse:
        page = self.plane.list_twins(request.subject, request.page_size, request.page_token)
        return twin_service_pb2.ListTwinsResponse(twins=[convert.twin_version_pb(v) for v in page.items], next_page_token=page.next_page_token)

    def GetTwin(self, request: twin_service_pb2.GetTwinRequest, context: grpc.ServicerContext) -> twin_service_pb2.GetTwinResponse:
        meta, later = self.plane.get_twin(convert.twin_selector(request.twin))
        return twin_service_pb2.GetTwinResponse(twin=convert.twin_version_pb(meta), sessions_since_training=later)

    def Predict(self, request: twin_service_pb2.PredictRequest, context: grpc.ServicerContext) -> twin_service_pb2.PredictResponse:
        selector, history = convert.predict_request(request)
        return convert.predict_response(self.plane.predict(selector, history, _deadline(context)))

    def Forecast(self, request: twin_service_pb2.ForecastRequest, context: grpc.ServicerContext) -> twin_service_pb2.ForecastResponse:
        r = self.plane.forecast(convert.forecast_request(request), _deadline(context))
        return twin_service_pb2.ForecastResponse(twin=convert.twin_version_pb(r.twin), forecast=convert.forecast_pb(r.forecast), protocol=convert.protocol_pb(r.protocol))

    def UploadSession(self, request: twin_service_pb2.UploadSessionRequest, context: grpc.ServicerContext) -> twin_service_pb2.UploadSessionResponse:
        trials = convert.trials_frame(request.trials, "trials", with_session=False)
        out = self.plane.upload_session(request.subject, trials, request.label or None, request.skip_twin_update)
        rec = out.record
        resp = twin_service_pb2.UploadSessionResponse(
            subject=rec.subject, session=rec.session, n_trials=rec.n_trials, data_hash=rec.data_hash, update_skipped_reason=out.skipped_reason
        )
        if out.operation is not None:
            resp.twin_update.CopyFrom(convert.operation_pb(out.operation))
        return resp

    def FitCohort(self, request: twin_service_pb2.FitCohortRequest, context: grpc.ServicerContext) -> operation_pb2.Operation:
        return convert.operation_pb(self.plane.fit_cohort(convert.fit_cohort_request(request)))


class CurriculumServicer(curriculum_service_pb2_grpc.CurriculumServiceServicer):
    """twin.v1.CurriculumService."""

    def __init__(self, plane: TwinDataPlane) -> None:
        self.plane = plane

    def NextSession(self, request: curriculum_service_pb2.NextSessionRequest, context: grpc.ServicerContext) -> curriculum_service_pb2.NextSessionResponse:
        req = convert.next_session_request(request, self.plane.config.max_interval_width)
        return curriculum_service_pb2.NextSessionResponse(plan=convert.plan_pb(self.plane.next_session(req, _deadline(context))))

    def SearchCurricula(self, request: curriculum_service_pb2.SearchCurriculaRequest, context: grpc.ServicerContext) -> operation_pb2.Operation:
        return convert.operation_pb(self.plane.search_curricula(convert.search_request(request)))


class OperationsServicer(operations_service_pb2_grpc.OperationsServiceServicer):
    """twin.v1.OperationsService.

    Args:
        plane: the data plane.
        stopping: true once the server drains; open Watch streams then end (the client
            re-watches on another instance).
    """

    def __init__(self, plane: TwinDataPlane, stopping: Callable[[], bool] = lambda: False) -> None:
        self.plane = plane
        self.stopping = stopping

    def GetOperation(self, request: operations_service_pb2.GetOperationRequest, context: grpc.ServicerContext) -> operation_pb2.Operation:
        return convert.operation_pb(self.plane.get_operation(request.id))

    def ListOperations(self, request: operations_service_pb2.ListOperationsRequest, context: grpc.ServicerContext) -> operations_service_pb2.ListOperationsResponse:
        kind, state = convert.operation_filters(request)
        page = self.plane.list_operations(kind, state, request.subject, request.page_size, request.page_token)
        return operations_service_pb2.ListOperationsResponse(operations=[convert.operation_pb(s) for s in page.items], next_page_token=page.next_page_token)

    def CancelOperation(self, request: operations_service_pb2.CancelOperationRequest, context: grpc.ServicerContext) -> operation_pb2.Operation:
        return convert.operation_pb(self.plane.cancel_operation(request.id))

    def WatchOperation(self, request: operations_service_pb2.WatchOperationRequest, context: grpc.ServicerContext) -> Iterator[operation_pb2.Operation]:
        for snap in self.plane.watch_operation(request.id, lambda: context.is_active() and not self.stopping()):
            yield convert.operation_pb(snap)


__all__ = ["CurriculumServicer", "OperationsServicer", "TwinServicer"]
