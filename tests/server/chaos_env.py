"""The chaos harness: a ``twin`` server in a child process over a store, killed with SIGKILL at
random moments while a client uploads sessions (with request ids, retried after each restart)
and starts cohort fits; restarted each time; the store checked after every kill and at the end.

Used by ``test_chaos.py`` (a few kills in the default suite, 50 in the slow one). Every figure
in :class:`ChaosReport` is counted from the store and the client's own record.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pandas as pd

from twin.persist.integrity import ProblemKind, verify_store
from twin.persist.oplog import OperationKind, OperationLog, OperationState
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore
from twin_client.client import TwinClient
from twin_proto.pb import twin_service_pb2

ROOT = Path(__file__).resolve().parents[2]

SERVER = """
import sys, os, torch
torch.set_num_threads(1)
from server.app import ServerConfig, build_plane, serve
from service.config import DataPlaneConfig
from twin.fit.train import FitConfig
root, port_file = sys.argv[1], sys.argv[2]
plane = build_plane(root, config=DataPlaneConfig(update_fit=FitConfig(epochs=2, patience=2)), leftover_min_age_s=0.0)
def started(running):
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(running.port))
    os.replace(port_file + ".tmp", port_file)
sys.exit(serve(ServerConfig(address="127.0.0.1:0", local_demo=True, grace_s=10.0, max_workers=4), plane, on_started=started))
"""


@dataclass
class ChaosReport:
    """What a chaos run did and found.

    Attributes:
        kills: SIGKILLs sent.
        uploads: distinct upload request ids sent.
        upload_attempts: upload calls made (retries after a kill included).
        uploads_unacked_at_kill: uploads whose answer a kill cut off (retried later).
        fits_started: FitCohort calls that returned an operation.
        interrupted: operations a kill found running, by kind.
        sessions_stored: sessions stored by the run (the store's count minus the start's).
        lost_sessions: uploads the client was told were stored but that are not.
        duplicated_sessions: sessions stored more than once for one request id.
        update_versions: twin versions made by updates.
        duplicated_updates: update versions that trained through no new session.
        uncovered_sessions: stored sessions in no twin version at the end.
        multiply_covered_sessions: sessions introduced by more than one version.
        half_switched: half-switched cohorts seen after any kill or at the end.
        failed_operations: operations that ended failed or cancelled.
        final_problems: what ``verify_store`` found at the end.
        seconds: wall time of the run.
    """

    kills: int = 0
    uploads: int = 0
    upload_attempts: int = 0
    uploads_unacked_at_kill: int = 0
    fits_started: int = 0
    interrupted: dict[str, int] = field(default_factory=dict)
    sessions_stored: int = 0
    lost_sessions: int = 0
    duplicated_sessions: int = 0
    update_versions: int = 0
    duplicated_updates: int = 0
    uncovered_sessions: int = 0
    multiply_covered_sessions: int = 0
    half_switched: int = 0
    failed_operations: int = 0
    final_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _start(root: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / f"port-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(port_file)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} at start")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the server did not start in 120 s")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


def _check_after_kill(root: Path, report: ChaosReport) -> None:
    store = TwinStore(root)
    try:
        for rec in OperationLog(store).unfinished():
            if rec.state is OperationState.RUNNING:
                report.interrupted[rec.kind.value] = report.interrupted.get(rec.kind.value, 0) + 1
        problems = verify_store(store, min_age_s=0).problems
        report.half_switched += sum(p.kind is ProblemKind.HALF_SWITCHED_COHORT for p in problems)
        damaged = [p for p in problems if p.kind not in (ProblemKind.ORPHAN_FILE, ProblemKind.TEMP_FILE, ProblemKind.HALF_SWITCHED_COHORT)]
        assert not damaged, [f"{p.kind.value}: {p.what} {p.detail}" for p in damaged]
    finally:
        store.close()


def run_chaos(root: Path, tmp: Path, chunks: dict[str, pd.DataFrame], kills: int, seed: int = 0, fit_every: int = 3) -> ChaosReport:
    """Kill the server ``kills`` times at random moments (seeded) while uploading and fitting,
    restart it each time, then let it finish and check the store.

    Args:
        root: the store (holding twins of the subjects in ``chunks``).
        tmp: a folder for the port files.
        chunks: per subject, trials to upload slices of as new sessions.
        kills: SIGKILLs to send.
        seed: seeds the timing and the choices.
        fit_every: start a cohort fit in every ``fit_every``-th round.
    """
    rng = random.Random(seed)
    t0 = time.monotonic()
    report = ChaosReport()
    store0 = TwinStore(root)
    base_sessions = {s: len(SessionStore(store0).sessions(s)) for s in chunks}
    store0.close()
    sent: dict[str, tuple[str, int]] = {}  # request id -> (subject, n_trials)
    acked: dict[str, int] = {}  # request id -> session number the server answered
    unacked: list[str] = []
    subjects = sorted(chunks)
    n = 0
    for round_ in range(kills + 1):
        proc, target = _start(root, tmp)
        last = round_ == kills
        fit_round = round_ % fit_every == 1
        # a fit waits behind the resumed updates: its rounds last longer, so kills land in fits too
        stop_at = time.monotonic() + (rng.uniform(3.0, 10.0) if fit_round else rng.uniform(0.2, 4.0))
        killer = None
        if not last:
            killer = threading.Timer(max(0.0, stop_at - time.monotonic()), lambda p=proc: p.send_signal(signal.SIGKILL))
            killer.start()
        with TwinClient(target, None, timeout_s=30) as c:
            todo = list(unacked)
            if fit_round:
                try:
                    c.fit_cohort(subjects, rule="reinforce", epochs=2, patience=2, adaptation=twin_service_pb2.ADAPTATION_INITIAL_WEIGHTS, request_id=f"fit-{round_}")
                    report.fits_started += 1
                except grpc.RpcError:
                    pass
            while proc.poll() is None and (todo or not last) and (last or time.monotonic() < stop_at + 5):
                if todo:
                    rid = todo.pop(0)
                else:
                    n += 1
                    subject = rng.choice(subjects)
                    size = rng.randint(20, 60)
                    start = rng.randint(0, len(chunks[subject]) - size)
                    rid = f"upload-{n}"
                    sent[rid] = (subject, start * 1000 + size)
                    if rid not in unacked:
                        unacked.append(rid)
                subject, code = sent[rid]
                start, size = divmod(code, 1000)
                report.upload_attempts += 1
                try:
                    up = c.upload_session(subject, chunks[subject].iloc[start : start + size], request_id=rid)
                except grpc.RpcError:
                    continue
                acked[rid] = up.session
                if rid in unacked:
                    unacked.remove(rid)
                if not todo:
                    time.sleep(rng.uniform(0.05, 0.4))
            if last:
                _drain(root)
        if killer is not None:
            killer.join()
            proc.wait(30)
            report.kills += 1
            report.uploads_unacked_at_kill += len(unacked)
            _check_after_kill(root, report)
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
    report.uploads = len(sent)
    _final_checks(root, report, base_sessions, sent, acked)
    report.seconds = time.monotonic() - t0
    return report


def _drain(root: Path, timeout_s: float = 600.0) -> None:
    """Wait until the store's operation log has no unfinished operation."""
    store = TwinStore(root)
    oplog = OperationLog(store)
    deadline = time.monotonic() + timeout_s
    while oplog.unfinished():
        assert time.monotonic() < deadline, "operations did not finish"
        time.sleep(0.2)
    store.close()


def _final_checks(root: Path, report: ChaosReport, base: dict[str, int], sent: dict[str, tuple[str, int]], acked: dict[str, int]) -> None:
    store = TwinStore(root)
    sessions, oplog = SessionStore(store), OperationLog(store)
    uploads = {u.request_id: u for u in oplog.uploads()}
    stored = {s: {r.session: r for r in sessions.sessions(s)} for s in base}
    report.sessions_stored = sum(len(v) for v in stored.values()) - sum(base.values())
    for rid, session in acked.items():
        subject, code = sent[rid]
        rec = stored[subject].get(session)
        if rec is None or rec.n_trials != code % 1000 or uploads.get(rid) is None or uploads[rid].session != session:
            report.lost_sessions += 1
    report.duplicated_sessions = report.sessions_stored - len(uploads)
    for subject, by_number in stored.items():
        versions = store.versions(subject)
        through = [v.trained_through_session for v in versions]
        for prev, v in zip(versions, versions[1:]):
            if v.hyperparameters.warm_start_from is not None:
                report.update_versions += 1
                report.duplicated_updates += int(v.trained_through_session <= prev.trained_through_session)
        for k in by_number:
            if k <= base[subject]:
                continue
            introduced = sum(1 for i, t in enumerate(through) if (through[i - 1] if i else 0) < k <= t)
            report.uncovered_sessions += int(introduced == 0)
            report.multiply_covered_sessions += int(introduced > 1)
    ops = oplog.list()
    report.failed_operations = sum(r.state in (OperationState.FAILED, OperationState.CANCELLED) for r in ops if r.kind is not OperationKind.CURRICULUM_SEARCH)
    final = verify_store(store, min_age_s=0)
    report.half_switched += sum(p.kind is ProblemKind.HALF_SWITCHED_COHORT for p in final.problems)
    report.final_problems = [f"{p.kind.value}: {p.what}" for p in final.problems]
    store.close()


__all__ = ["ChaosReport", "run_chaos"]
