"""The service round trip of the demo: a twin store from a cohort, a server on loopback, a
prediction, a next-session plan and a session upload through the client, a clean shutdown.

``twin demo`` (or anyone) calls :func:`service_roundtrip` with a simulated cohort.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from twin.fit.cohort import CohortFitConfig, fit_cohort
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore
from twin.models.params import Adaptation

from server.app import ServerConfig, build_plane, start_server
from twin_client.client import TwinClient, operation_result
from service.config import DataPlaneConfig
from twin_proto.pb import curriculum_service_pb2, operation_pb2
from optimizer.planning import ProposeFn


@dataclass(frozen=True)
class RoundtripReport:
    """What the round trip did.

    Attributes:
        subject: the animal used.
        predicted_trials: trials of the prediction.
        prediction_ll: its log-likelihood per trial, nats.
        plan_trials: trials of the planned next session.
        plan_accuracy: predicted accuracy of the plan (mean, lo, hi).
        plan_fallback: the plan's fallback reason ("" when none).
        updated_version: twin version after the upload.
        seconds: wall time.
    """

    subject: str
    predicted_trials: int
    prediction_ll: float
    plan_trials: int
    plan_accuracy: tuple[float, float, float]
    plan_fallback: str
    updated_version: int
    seconds: float

    def lines(self) -> list[str]:
        """Human-readable summary."""
        lo, mean, hi = self.plan_accuracy[1], self.plan_accuracy[0], self.plan_accuracy[2]
        return [
            f"Predict {self.subject}: {self.predicted_trials} trials, {self.prediction_ll:.4f} nats/trial",
            f"NextSession {self.subject}: {self.plan_trials} trials, predicted accuracy {mean:.2f} [{lo:.2f}, {hi:.2f}]"
            + (f", fallback {self.plan_fallback}" if self.plan_fallback else ""),
            f"UploadSession {self.subject}: twin updated to v{self.updated_version}; server stopped cleanly ({self.seconds:.1f} s)",
        ]


def service_roundtrip(
    trials: pd.DataFrame, store_root: str | Path, rule: str = "reinforce", epochs: int = 20, n_subjects: int = 4, propose: ProposeFn | None = None
) -> RoundtripReport:
    """Fit twins of the first ``n_subjects`` animals on all but their last session, serve them,
    and exercise the service through the client.

    Args:
        trials: a canonical cohort table (at least 3 sessions per animal).
        store_root: folder of the twin store to create.
        rule: learning rule of the twins.
        epochs: population epochs.
        n_subjects: animals given twins.
        propose: the next-session proposer the server uses (None: the lab default with the twin's forecast).
    """
    t0 = time.perf_counter()
    names = list(dict.fromkeys(trials["subject"]))[:n_subjects]
    cohort = trials[trials["subject"].isin(names)]
    last = cohort.groupby("subject")["session"].transform("max")
    before, final = cohort[cohort["session"] < last], cohort[cohort["session"] == last]
    store = TwinStore(store_root)
    SessionStore(store).add_table(before)
    cfg = CohortFitConfig(spec=ModelSpec(rule), fit=FitConfig(epochs=epochs, patience=max(3, epochs // 4)), adaptation=Adaptation.INITIAL_WEIGHTS)
    fit_cohort(before, store, cfg, progress=False)
    store.close()
    plane = build_plane(store_root, config=DataPlaneConfig(update_fit=FitConfig(epochs=max(3, epochs // 4), patience=3)), propose=propose)
    running = start_server(ServerConfig(address="127.0.0.1:0", auth=None, local_demo=True, grace_s=30.0), plane)
    subject = names[0]
    try:
        with TwinClient(running.target, None, timeout_s=120) as client:
            pred = client.predict(subject)
            plan = client.next_session(subject)
            up = client.upload_session(subject, final[final["subject"] == subject].drop(columns=["subject", "session"]), label="demo")
            op = client.wait_operation(up.twin_update.name, timeout_s=300) if up.HasField("twin_update") else None
    finally:
        running.stop()
    result = operation_result(op) if op is not None else None
    updated = result.twin.version if isinstance(result, operation_pb2.TwinUpdateResult) else 1
    fc = plan.forecast.accuracy
    return RoundtripReport(
        subject=subject,
        predicted_trials=pred.n_trials,
        prediction_ll=pred.log_likelihood / max(pred.n_trials, 1),
        plan_trials=plan.n_trials,
        plan_accuracy=(fc.mean, fc.lo, fc.hi),
        plan_fallback=curriculum_service_pb2.FallbackReason.Name(plan.fallback_reason) if plan.fallback else "",
        updated_version=updated,
        seconds=time.perf_counter() - t0,
    )


__all__ = ["RoundtripReport", "service_roundtrip"]
