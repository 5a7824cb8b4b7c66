"""A Python client of the twin.v1 service.

Example::

    from twin_client.client import TwinClient

    with TwinClient("twins.lab:50051", token=os.environ["TWIN_TOKEN"], tls=True) as c:
        plan = c.next_session("mouse-7")                # before the session
        ...                                              # run it on the rig
        up = c.upload_session("mouse-7", trials_df)     # after it
        if up.HasField("twin_update"):
            op = c.wait_operation(up.twin_update.name, timeout_s=600)
            print(operation_metadata(op).state, operation_result(op))

Calls return the response messages; failures raise ``grpc.RpcError`` (see
:func:`field_violations` for a bad request's located fields). Every call carries the bearer
token and a deadline (``timeout_s``). Long-running calls return ``google.longrunning.Operation``
messages: :func:`operation_metadata` and :func:`operation_result` unpack their typed metadata
and result.

The client needs grpcio, protobuf, googleapis-common-protos and the generated stubs
(:mod:`twin_proto`) only; it is the rig client distribution (``clients/python``), which installs
on Python >= 3.9. :meth:`TwinClient.health` also needs grpcio-health-checking (the
distribution's ``health`` extra); the helpers that take or return trial tables
(:func:`trials_to_pb`, :func:`prediction_frame`, the ``trials`` arguments) work on pandas
DataFrames, and import pandas when called.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Union

import grpc
from google.longrunning import operations_pb2
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2, status_pb2

from twin_proto.pb import (
    common_pb2,
    curriculum_service_pb2,
    curriculum_service_pb2_grpc,
    operation_pb2,
    operations_service_pb2,
    operations_service_pb2_grpc,
    protocol_pb2,
    teaching_service_pb2,
    teaching_service_pb2_grpc,
    twin_service_pb2,
    twin_service_pb2_grpc,
)

if TYPE_CHECKING:
    import pandas as pd

#: Operation states after which nothing changes (``Operation.done`` is then true).
DONE_STATES = (operation_pb2.OPERATION_STATE_SUCCEEDED, operation_pb2.OPERATION_STATE_FAILED, operation_pb2.OPERATION_STATE_CANCELLED)

#: The result messages a succeeded operation's ``response`` packs.
RESULT_TYPES = (operation_pb2.TwinUpdateResult, operation_pb2.FitCohortResult, operation_pb2.CurriculumSearchResult)

OperationResult = Union[operation_pb2.TwinUpdateResult, operation_pb2.FitCohortResult, operation_pb2.CurriculumSearchResult]


def operation_metadata(op: operations_pb2.Operation) -> operation_pb2.OperationMetadata:
    """The twin.v1.OperationMetadata packed in an operation's ``metadata`` (kind, state,
    progress, message, subject, times).

    Raises:
        ValueError: the metadata is not a twin.v1.OperationMetadata.
    """
    meta = operation_pb2.OperationMetadata()
    if not op.metadata.Unpack(meta):
        raise ValueError(f"operation {op.name}: metadata is {op.metadata.type_url or 'unset'}, not twin.v1.OperationMetadata")
    return meta


def operation_result(op: operations_pb2.Operation) -> OperationResult | None:
    """The typed result of a succeeded operation (TwinUpdateResult, FitCohortResult or
    CurriculumSearchResult); None while it runs or when it failed (see ``op.error``).

    Raises:
        ValueError: the response is of a type this client does not know.
    """
    if op.WhichOneof("result") != "response":
        return None
    for cls in RESULT_TYPES:
        if op.response.Is(cls.DESCRIPTOR):
            out = cls()
            op.response.Unpack(out)
            return out
    raise ValueError(f"operation {op.name}: unknown response type {op.response.type_url}")


def operation_state_name(op: operations_pb2.Operation) -> str:
    """The operation's state as a name (``OPERATION_STATE_RUNNING``, ...)."""
    return operation_pb2.OperationState.Name(operation_metadata(op).state)


_SIDE_PB = {0: common_pb2.SIDE_LEFT, 1: common_pb2.SIDE_RIGHT}
_FEEDBACK_PB = {1: common_pb2.FEEDBACK_REWARDED, -1: common_pb2.FEEDBACK_ERROR}


def _number(value: object) -> float:
    """A cell as a float (strings too, as csv.DictReader gives them; blank: NaN)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)  # type: ignore[arg-type]


def _code(value: object) -> int | None:
    x = _number(value)
    return int(x) if math.isfinite(x) and x == int(x) else None


def trial_pb(row: Mapping[str, object], with_session: bool = True) -> common_pb2.Trial:
    """One Trial message from a row of a canonical trials table: a mapping column -> value
    (``choice``/``correct_side`` 1 = right, 0 = left; ``feedback`` +1/-1; numbers or their
    strings, as :class:`csv.DictReader` gives them). ``session`` and ``trial`` are sent when
    present, ``reaction_time`` when finite; a code other than those is sent as unspecified, which
    the server refuses naming the row and column."""
    t = common_pb2.Trial(
        session=int(_number(row["session"])) if with_session and "session" in row else 0,
        trial=int(_number(row["trial"])) if "trial" in row else 0,
        contrast_left=_number(row["contrast_left"]),
        contrast_right=_number(row["contrast_right"]),
        choice=_SIDE_PB.get(_code(row["choice"]), common_pb2.SIDE_UNSPECIFIED),  # type: ignore[arg-type]
        feedback=_FEEDBACK_PB.get(_code(row["feedback"]), common_pb2.FEEDBACK_UNSPECIFIED),  # type: ignore[arg-type]
        correct_side=_SIDE_PB.get(_code(row["correct_side"]), common_pb2.SIDE_UNSPECIFIED),  # type: ignore[arg-type]
        prob_left=_number(row["prob_left"]),
    )
    rt = _number(row.get("reaction_time"))
    if math.isfinite(rt):
        t.reaction_time = rt
    return t


def trials_to_pb(df: pd.DataFrame, with_session: bool = True) -> list[common_pb2.Trial]:
    """Trial messages from a canonical trials table: the rows of :func:`trial_pb`, read column by
    column (a table of 100,000 trials converts in about a second)."""
    n = len(df)

    def numbers(name: str, default: float) -> list[float]:
        return df[name].astype(float).tolist() if name in df.columns else [default] * n

    def codes(name: str, table: dict[int, int], unset: int) -> list[int]:
        return [table.get(int(x), unset) if math.isfinite(x) else unset for x in numbers(name, math.nan)]

    session = numbers("session", 0.0) if with_session else [0.0] * n
    trial = numbers("trial", 0.0)
    left, right, prob_left = numbers("contrast_left", math.nan), numbers("contrast_right", math.nan), numbers("prob_left", math.nan)
    choice = codes("choice", _SIDE_PB, common_pb2.SIDE_UNSPECIFIED)
    feedback = codes("feedback", _FEEDBACK_PB, common_pb2.FEEDBACK_UNSPECIFIED)
    correct = codes("correct_side", _SIDE_PB, common_pb2.SIDE_UNSPECIFIED)
    rts = numbers("reaction_time", math.nan)
    out = []
    for i in range(n):
        t = common_pb2.Trial(
            session=int(session[i]), trial=int(trial[i]), contrast_left=left[i], contrast_right=right[i],
            choice=choice[i], feedback=feedback[i], correct_side=correct[i], prob_left=prob_left[i],  # type: ignore[arg-type]
        )  # fmt: skip
        if math.isfinite(rts[i]):
            t.reaction_time = rts[i]
        out.append(t)
    return out


def prediction_frame(resp: twin_service_pb2.PredictResponse) -> pd.DataFrame:
    """A PredictResponse as a table: session, trial, p_right and one ``w_<feature>`` column
    per weight."""
    import pandas as pd  # only this helper needs pandas

    df = pd.DataFrame({"session": list(resp.session), "trial": list(resp.trial), "p_right": list(resp.p_right)})
    for w in resp.weights:
        df[f"w_{w.feature}"] = list(w.values)
    return df


def message_dict(message: object) -> dict[str, object]:
    """A message as a JSON-ready dict (field names as in the proto)."""
    try:
        return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)  # type: ignore[arg-type]
    except TypeError:  # protobuf before 5.26 calls the option including_default_value_fields
        return MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)  # type: ignore[arg-type,call-arg]


def rpc_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a failed call carries in its ``grpc-status-details-bin`` trailer
    (None without one); what grpcio-status's ``rpc_status.from_call`` returns, without needing
    that package."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None  # type: ignore[attr-defined]
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """``(field, description)`` of every BadRequest field violation in a failed call."""
    status = rpc_status(error)
    out: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def error_reason(error: grpc.RpcError) -> str | None:
    """The ``ErrorInfo.reason`` of a failed call (``NO_TWIN``, ``SUBJECT_NOT_FOUND``, ...)."""
    status = rpc_status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def _ref(subject: str, version: int | None, alias: str | None) -> common_pb2.TwinRef:
    if version is not None:
        return common_pb2.TwinRef(subject=subject, version=version)
    if alias is not None:
        return common_pb2.TwinRef(subject=subject, alias=alias)
    return common_pb2.TwinRef(subject=subject)


_CHOICES = {"left": teaching_service_pb2.TRIAL_CHOICE_LEFT, "right": teaching_service_pb2.TRIAL_CHOICE_RIGHT, "no_go": teaching_service_pb2.TRIAL_CHOICE_NO_GO}


class TeachSession:
    """One open Teach stream, driven trial by trial (:meth:`TwinClient.teach`).

    ``first`` is trial 0's stimulus; :meth:`report` sends the outcome of the trial last served
    and returns the next one (None when the server ended the session: ``max_trials`` reached);
    :meth:`close` ends the stream. A server error raises ``grpc.RpcError``.

    Attributes:
        first: trial 0's stimulus (``contrast``, ``side``, ``phase``, ``source``, ...).
        last: the stimulus last served.
    """

    _END = object()

    def __init__(self, stub: teaching_service_pb2_grpc.TeachingServiceStub, open_req: teaching_service_pb2.TeachOpen, kw: Mapping[str, object]) -> None:
        import queue

        self._q: "queue.Queue[object]" = queue.Queue()
        self._q.put(teaching_service_pb2.TeachRequest(open=open_req))
        self._call = stub.Teach(iter(self._next_request, self._END), **kw)
        self.first = self.last = next(self._call)

    def _next_request(self) -> object:
        return self._q.get()

    def report(self, choice: str, rewarded: bool, contrast: float | None = None, side: int | None = None) -> "teaching_service_pb2.TeachResponse | None":
        """Send the outcome of the trial last served (``choice``: ``left``, ``right`` or
        ``no_go``; the stimulus shown defaults to the one served) and return the next trial's."""
        last = self.last
        out = teaching_service_pb2.TrialOutcome(
            trial=last.trial,
            contrast=last.contrast if contrast is None else contrast,
            side=last.side if side is None else (common_pb2.SIDE_RIGHT if side == 1 else common_pb2.SIDE_LEFT),
            choice=_CHOICES[choice],
            rewarded=rewarded,
        )
        self._q.put(teaching_service_pb2.TeachRequest(outcome=out))
        nxt = next(self._call, None)
        if nxt is not None:
            self.last = nxt
        return nxt

    def close(self) -> None:
        """End the stream (the server ends the session)."""
        self._q.put(self._END)

    def __enter__(self) -> "TeachSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TwinClient:
    """A connection to a twin.v1 server.

    Args:
        target: ``host:port``.
        token: bearer token (None: send none, for a local demo server).
        tls: connect over TLS.
        root_certificates: PEM CA bundle to trust (None: the system's).
        timeout_s: deadline of each call.
        options: extra channel options.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout_s: float = 60.0,
        options: Sequence[tuple[str, object]] = (),
    ) -> None:
        opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024), *options]
        if tls:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates), options=opts)
        else:
            self.channel = grpc.insecure_channel(target, options=opts)
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.twins = twin_service_pb2_grpc.TwinServiceStub(self.channel)
        self.curricula = curriculum_service_pb2_grpc.CurriculumServiceStub(self.channel)
        self.operations = operations_service_pb2_grpc.OperationsServiceStub(self.channel)
        self.teaching = teaching_service_pb2_grpc.TeachingServiceStub(self.channel)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> "TwinClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kw(self, timeout_s: float | None = None) -> dict[str, object]:
        return {"metadata": self._metadata, "timeout": self.timeout_s if timeout_s is None else timeout_s}

    # -- health ---------------------------------------------------------------------------------

    def health(self, service: str = "") -> str:
        """The server's health (``SERVING``, ``NOT_SERVING``, ...) for ``service`` ("" = overall).

        Raises:
            ImportError: grpcio-health-checking is not installed (the distribution's ``health``
                extra).
        """
        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError as exc:
            raise ImportError("TwinClient.health needs grpcio-health-checking: pip install 'learning-twins-client[health]'") from exc
        resp = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    # -- twins -----------------------------------------------------------------------------------

    def list_subjects(self, page_size: int = 0) -> list[twin_service_pb2.Subject]:
        """Every subject (all pages)."""
        out, token = [], ""
        while True:
            resp = self.twins.ListSubjects(twin_service_pb2.ListSubjectsRequest(page_size=page_size, page_token=token), **self._kw())
            out += list(resp.subjects)
            token = resp.next_page_token
            if not token:
                return out

    def list_twins(self, subject: str = "", page_size: int = 0) -> list[common_pb2.TwinVersion]:
        """Every twin version of ``subject`` ("" = all subjects; all pages)."""
        out, token = [], ""
        while True:
            resp = self.twins.ListTwins(twin_service_pb2.ListTwinsRequest(subject=subject, page_size=page_size, page_token=token), **self._kw())
            out += list(resp.twins)
            token = resp.next_page_token
            if not token:
                return out

    def get_twin(self, subject: str, version: int | None = None, alias: str | None = None) -> twin_service_pb2.GetTwinResponse:
        """One twin version's metadata (default: the serving one)."""
        return self.twins.GetTwin(twin_service_pb2.GetTwinRequest(twin=_ref(subject, version, alias)), **self._kw())

    def predict(
        self,
        subject: str,
        trials: pd.DataFrame | None = None,
        *,
        continue_from_twin: bool = False,
        through_session: int = 0,
        from_session: int = 0,
        version: int | None = None,
        alias: str | None = None,
        timeout_s: float | None = None,
    ) -> twin_service_pb2.PredictResponse:
        """Per-trial p(right) and weights along ``trials`` (None: the stored sessions)."""
        req = twin_service_pb2.PredictRequest(twin=_ref(subject, version, alias))
        if trials is None:
            req.stored.CopyFrom(twin_service_pb2.StoredHistory(through_session=through_session, from_session=from_session))
        else:
            req.supplied.CopyFrom(twin_service_pb2.SuppliedHistory(trials=trials_to_pb(trials), continue_from_twin=continue_from_twin))
        return self.twins.Predict(req, **self._kw(timeout_s))

    def forecast(
        self,
        subject: str,
        protocol: protocol_pb2.TaskProtocol | None = None,
        *,
        n_trials: int = 0,
        n_rollouts: int = 0,
        seed: int = 0,
        start_phase: int | None = None,
        version: int | None = None,
        alias: str | None = None,
    ) -> twin_service_pb2.ForecastResponse:
        """The twin's forecast of its next session under ``protocol`` (None: the lab default)."""
        req = twin_service_pb2.ForecastRequest(twin=_ref(subject, version, alias), n_trials=n_trials, n_rollouts=n_rollouts, seed=seed)
        if protocol is not None:
            req.protocol.CopyFrom(protocol)
        if start_phase is not None:
            req.start_phase = start_phase
        return self.twins.Forecast(req, **self._kw())

    def upload_session(
        self, subject: str, trials: pd.DataFrame | Sequence[common_pb2.Trial], label: str = "", skip_twin_update: bool = False, request_id: str = ""
    ) -> twin_service_pb2.UploadSessionResponse:
        """Store one finished session (its trials in order: a canonical trials table, or Trial
        messages, which need no pandas) and start the twin update; a retry with the same
        ``request_id`` returns what the first attempt stored."""
        messages = list(trials) if isinstance(trials, Sequence) else trials_to_pb(trials, with_session=False)
        req = twin_service_pb2.UploadSessionRequest(
            subject=subject, trials=messages, label=label, skip_twin_update=skip_twin_update, request_id=request_id
        )
        return self.twins.UploadSession(req, **self._kw())

    def fit_cohort(
        self, subjects: Sequence[str] = (), rule: str = "", epochs: int = 0, patience: int = 0, adaptation: int = 0, seed: int = 0, request_id: str = ""
    ) -> operations_pb2.Operation:
        """Start a cohort fit (admin); ``adaptation`` is a ``twin_service_pb2.ADAPTATION_*`` value; a
        retry with the same ``request_id`` returns the same operation."""
        req = twin_service_pb2.FitCohortRequest(
            subjects=list(subjects), rule=rule, epochs=epochs, patience=patience, adaptation=adaptation, seed=seed, request_id=request_id  # type: ignore[arg-type]
        )
        return self.twins.FitCohort(req, **self._kw())

    # -- curricula -------------------------------------------------------------------------------

    def next_session(
        self,
        subject: str,
        *,
        min_trials: int = 0,
        max_trials: int = 0,
        max_reward_volume_ul: float = 0.0,
        max_accuracy_interval_width: float = 0.0,
        n_rollouts: int = 0,
        seed: int = 0,
        version: int | None = None,
        alias: str | None = None,
    ) -> curriculum_service_pb2.SessionPlan:
        """The plan of ``subject``'s next session, by its serving twin (or ``version``/``alias``)."""
        c = curriculum_service_pb2.SessionConstraints(
            min_trials=min_trials, max_trials=max_trials, max_reward_volume_ul=max_reward_volume_ul, max_accuracy_interval_width=max_accuracy_interval_width
        )
        req = curriculum_service_pb2.NextSessionRequest(twin=_ref(subject, version, alias), constraints=c, n_rollouts=n_rollouts, seed=seed)
        return self.curricula.NextSession(req, **self._kw()).plan

    def teach(
        self,
        subject: str,
        *,
        rig_profile: str = "",
        start_phase: int | None = None,
        seed: int = 0,
        max_trials: int = 0,
        constraints: "teaching_service_pb2.TeachingConstraints | None" = None,
        protocol: "protocol_pb2.TaskProtocol | None" = None,
        version: int | None = None,
        alias: str | None = None,
        timeout_s: float = 8 * 3600.0,
    ) -> TeachSession:
        """Open a trial-by-trial teaching session of ``subject`` (TeachingService.Teach): its
        ``first`` is trial 0's stimulus; ``report(choice, rewarded)`` after each trial returns
        the next one. ``timeout_s`` is the deadline of the whole session (default 8 hours, not the
        client's per-call deadline: a session lasts an hour or more).

        Example::

            with client.teach("mouse-7", rig_profile="custom") as s:
                stim = s.first
                while stim is not None:
                    choice, rewarded = run_trial(stim.contrast, stim.side)  # the rig's own code
                    stim = s.report(choice, rewarded)
        """
        req = teaching_service_pb2.TeachOpen(twin=_ref(subject, version, alias), rig_profile=rig_profile, seed=seed, max_trials=max_trials)
        if start_phase is not None:
            req.start_phase = start_phase
        if constraints is not None:
            req.constraints.CopyFrom(constraints)
        if protocol is not None:
            req.protocol.CopyFrom(protocol)
        return TeachSession(self.teaching, req, self._kw(timeout_s))

    def search_curricula(self, subjects: Sequence[str] = (), n_candidates: int = 0, horizon_trials: int = 0, seed: int = 0, request_id: str = "") -> operations_pb2.Operation:
        """Start a curriculum search (admin); a retry with the same ``request_id`` returns the
        same operation."""
        req = curriculum_service_pb2.SearchCurriculaRequest(subjects=list(subjects), n_candidates=n_candidates, horizon_trials=horizon_trials, seed=seed, request_id=request_id)
        return self.curricula.SearchCurricula(req, **self._kw())

    # -- operations -----------------------------------------------------------------------------

    def get_operation(self, name: str) -> operations_pb2.Operation:
        """One operation, by its name ``operations/{id}``."""
        return self.operations.GetOperation(operations_service_pb2.GetOperationRequest(name=name), **self._kw())

    def list_operations(self, kind: int = 0, state: int = 0, subject: str = "") -> list[operations_pb2.Operation]:
        """Every operation matching the filters (``operation_pb2.OPERATION_KIND_*`` and
        ``OPERATION_STATE_*`` values; 0: any), newest first (all pages)."""
        out, token = [], ""
        while True:
            req = operations_service_pb2.ListOperationsRequest(kind=kind, state=state, subject=subject, page_token=token)  # type: ignore[arg-type]
            resp = self.operations.ListOperations(req, **self._kw())
            out += list(resp.operations)
            token = resp.next_page_token
            if not token:
                return out

    def cancel_operation(self, name: str) -> operations_pb2.Operation:
        """Request an operation's cancellation (admin)."""
        return self.operations.CancelOperation(operations_service_pb2.CancelOperationRequest(name=name), **self._kw())

    def watch_operation(self, name: str, timeout_s: float | None = None) -> Iterator[operations_pb2.Operation]:
        """The operation after every change, until it is done."""
        return self.operations.WatchOperation(operations_service_pb2.WatchOperationRequest(name=name), **self._kw(timeout_s))

    def wait_operation(self, name: str, timeout_s: float = 600.0) -> operations_pb2.Operation:
        """Watch an operation until it is done (or the stream ends); return its last state."""
        last = None
        for op in self.watch_operation(name, timeout_s):
            last = op
            if op.done:
                return op
        return last if last is not None else self.get_operation(name)


__all__ = [
    "DONE_STATES",
    "RESULT_TYPES",
    "OperationResult",
    "TeachSession",
    "TwinClient",
    "error_reason",
    "field_violations",
    "message_dict",
    "operation_metadata",
    "operation_result",
    "operation_state_name",
    "prediction_frame",
    "rpc_status",
    "trial_pb",
    "trials_to_pb",
]
