"""Thin gRPC servicers over the parts of the data plane: convert the request, call one method,
convert the result. Errors propagate as exceptions; :mod:`server.interceptors` maps them to
status codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from google.longrunning import operations_pb2

from server import convert
from service.admission import Admission
from service.catalog import TwinCatalog, check_page
from service.config import Deadline
from service.errors import InvalidArgumentError
from service.limits import Limits, raise_invalid
from service.curricula import Curricula
from service.operations import Operations
from service.predictions import Predictions
from service.teaching import Teaching
from service.updates import Updates
from twin_proto.pb import (
    curriculum_service_pb2,
    curriculum_service_pb2_grpc,
    operations_service_pb2,
    operations_service_pb2_grpc,
    teaching_service_pb2,
    teaching_service_pb2_grpc,
    twin_service_pb2,
    twin_service_pb2_grpc,
)


def _deadline(context: grpc.ServicerContext) -> Deadline:
    """The call's deadline, and whether its client still waits (it may cancel without one)."""
    return Deadline.after(context.time_remaining(), context.is_active)


class TwinServicer(twin_service_pb2_grpc.TwinServiceServicer):
    """twin.v1.TwinService.

    Args:
        catalog: subjects and twin versions.
        predictions: predictions and forecasts.
        updates: session uploads and cohort fits.
        admission: the checks of uploads and cohort fits before any work.
    """

    def __init__(self, catalog: TwinCatalog, predictions: Predictions, updates: Updates, admission: Admission) -> None:
        self.catalog, self.predictions, self.updates, self.admission = catalog, predictions, updates, admission
        self.limits = catalog.config.limits

    def ListSubjects(self, request: twin_service_pb2.ListSubjectsRequest, context: grpc.ServicerContext) -> twin_service_pb2.ListSubjectsResponse:
        page = self.catalog.list_subjects(request.page_size, request.page_token)
        return twin_service_pb2.ListSubjectsResponse(subjects=[convert.subject_pb(s) for s in page.items], next_page_token=page.next_page_token)

    def ListTwins(self, request: twin_service_pb2.ListTwinsRequest, context: grpc.ServicerContext) -> twin_service_pb2.ListTwinsResponse:
        page = self.catalog.list_twins(request.subject, request.page_size, request.page_token)
        return twin_service_pb2.ListTwinsResponse(twins=[convert.twin_version_pb(v) for v in page.items], next_page_token=page.next_page_token)

    def GetTwin(self, request: twin_service_pb2.GetTwinRequest, context: grpc.ServicerContext) -> twin_service_pb2.GetTwinResponse:
        meta, later = self.catalog.get_twin(convert.twin_selector(request.twin))
        return twin_service_pb2.GetTwinResponse(twin=convert.twin_version_pb(meta), sessions_since_training=later)

    def Predict(self, request: twin_service_pb2.PredictRequest, context: grpc.ServicerContext) -> twin_service_pb2.PredictResponse:
        deadline = _deadline(context)
        with deadline.scope("reading the trials"):  # 100,000 supplied trials take a while to convert
            selector, history = convert.predict_request(request, self.limits)
        return convert.predict_response(self.predictions.predict(selector, history, deadline))

    def Forecast(self, request: twin_service_pb2.ForecastRequest, context: grpc.ServicerContext) -> twin_service_pb2.ForecastResponse:
        r = self.predictions.forecast(convert.forecast_request(request, self.limits), _deadline(context))
        return twin_service_pb2.ForecastResponse(twin=convert.twin_version_pb(r.twin), forecast=convert.forecast_pb(r.forecast), protocol=convert.protocol_pb(r.protocol))

    def UploadSession(self, request: twin_service_pb2.UploadSessionRequest, context: grpc.ServicerContext) -> twin_service_pb2.UploadSessionResponse:
        self.admission.upload(request.subject, len(request.trials), request.label, request.skip_twin_update)
        trials = convert.trials_frame(request.trials, "trials", with_session=False)
        out = self.updates.upload_session(request.subject, trials, request.label or None, request.skip_twin_update, request_id=request.request_id)
        rec = out.record
        resp = twin_service_pb2.UploadSessionResponse(
            subject=rec.subject, session=rec.session, n_trials=rec.n_trials, data_hash=rec.data_hash, update_skipped_reason=out.skipped_reason
        )
        if out.operation is not None:
            resp.twin_update.CopyFrom(convert.operation_pb(out.operation))
        return resp

    def FitCohort(self, request: twin_service_pb2.FitCohortRequest, context: grpc.ServicerContext) -> operations_pb2.Operation:
        req = convert.fit_cohort_request(request)
        self.admission.fit_cohort(req)
        return convert.operation_pb(self.updates.fit_cohort(req, request_id=request.request_id))


class CurriculumServicer(curriculum_service_pb2_grpc.CurriculumServiceServicer):
    """twin.v1.CurriculumService.

    Args:
        curricula: next-session plans and curriculum searches.
        default_width: widest acceptable accuracy interval of a plan when a request sets none.
    """

    def __init__(self, curricula: Curricula, default_width: float) -> None:
        self.curricula, self.default_width = curricula, default_width

    def NextSession(self, request: curriculum_service_pb2.NextSessionRequest, context: grpc.ServicerContext) -> curriculum_service_pb2.NextSessionResponse:
        req = convert.next_session_request(request, self.default_width)
        return curriculum_service_pb2.NextSessionResponse(plan=convert.plan_pb(self.curricula.next_session(req, _deadline(context))))

    def SearchCurricula(self, request: curriculum_service_pb2.SearchCurriculaRequest, context: grpc.ServicerContext) -> operations_pb2.Operation:
        return convert.operation_pb(self.curricula.search_curricula(convert.search_request(request), request_id=request.request_id))


class OperationsServicer(operations_service_pb2_grpc.OperationsServiceServicer):
    """twin.v1.OperationsService.

    Args:
        operations: the long-running operations.
        stopping: true once the server drains; open Watch streams then end (the client
            re-watches on another instance).
    """

    def __init__(self, operations: Operations, stopping: Callable[[], bool] = lambda: False, limits: Limits = Limits()) -> None:
        self.operations = operations
        self.stopping = stopping
        self.limits = limits

    def _id(self, name: str) -> str:
        """The operation id of a request's ``name`` (``operations/{id}``)."""
        op_id = convert.operation_id(name)
        raise_invalid([self.limits.name("name", op_id)])
        return op_id

    def GetOperation(self, request: operations_service_pb2.GetOperationRequest, context: grpc.ServicerContext) -> operations_pb2.Operation:
        return convert.operation_pb(self.operations.get_operation(self._id(request.name)))

    def ListOperations(self, request: operations_service_pb2.ListOperationsRequest, context: grpc.ServicerContext) -> operations_service_pb2.ListOperationsResponse:
        raise_invalid([self.limits.name("subject", request.subject, required=False)])
        check_page(request.page_size, request.page_token, self.limits)
        kind, state = convert.operation_filters(request)
        page = self.operations.list_operations(kind, state, request.subject, request.page_size, request.page_token)
        return operations_service_pb2.ListOperationsResponse(operations=[convert.operation_pb(s) for s in page.items], next_page_token=page.next_page_token)

    def CancelOperation(self, request: operations_service_pb2.CancelOperationRequest, context: grpc.ServicerContext) -> operations_pb2.Operation:
        return convert.operation_pb(self.operations.cancel_operation(self._id(request.name)))

    def WatchOperation(self, request: operations_service_pb2.WatchOperationRequest, context: grpc.ServicerContext) -> Iterator[operations_pb2.Operation]:
        for snap in self.operations.watch_operation(self._id(request.name), lambda: context.is_active() and not self.stopping()):
            yield convert.operation_pb(snap)


class TeachingServicer(teaching_service_pb2_grpc.TeachingServiceServicer):
    """twin.v1.TeachingService.

    Args:
        teaching: opens teaching sessions.
        limits: the request limits.
    """

    def __init__(self, teaching: Teaching, limits: Limits = Limits()) -> None:
        self.teaching, self.limits = teaching, limits

    def Teach(self, request_iterator: Iterator[teaching_service_pb2.TeachRequest], context: grpc.ServicerContext) -> Iterator[teaching_service_pb2.TeachResponse]:
        deadline = _deadline(context)
        first = next(request_iterator, None)
        if first is None:
            return
        if first.WhichOneof("kind") != "open":
            raise InvalidArgumentError.field("open", "the first request of a Teach stream must open the session")
        session = self.teaching.open(convert.teach_open(first.open, self.limits), deadline)
        yield convert.teach_response_pb(session.first())
        session.prepare()  # runs once gRPC has the response: while the rig runs the trial
        for req in request_iterator:
            if req.WhichOneof("kind") != "outcome":
                raise InvalidArgumentError.field("outcome", "every request after the first reports the outcome of the trial last served")
            stimulus = session.next(convert.trial_outcome(req.outcome), deadline)
            if stimulus is None:
                return
            yield convert.teach_response_pb(stimulus)
            session.prepare()


__all__ = ["CurriculumServicer", "OperationsServicer", "TeachingServicer", "TwinServicer"]
