"""Load benchmark of the gRPC service: Predict with a 1,000-trial history at 1, 8 and 32
concurrent clients, next to a no-op RPC (health Check) on the same server in the same run.

The server runs as ``twin serve`` in its own process (token auth on, one torch thread); each
client is a thread with its own channel. For every concurrency level the no-op and Predict are
measured in turn for ``--seconds`` each: p50/p99 latency and requests per second. Predict runs
along the subject's stored history (a DNN twin, 1,000 trials): the dashboard case. Repeated
predictions of the same stored history and twin version are served from the server's result
cache, so the steady state measures the service path; the cold (first, uncached) latency and a
supplied-history Predict (sent with the request, never cached) are reported too.

Criterion (issue 4): Predict p99 at 8 clients <= 2 x the no-op's p99 + 10 ms.

Usage: ``python bench/grpc_predict.py [--seconds 5] [--out bench/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import torch  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from twin_client.client import trials_to_pb  # noqa: E402
from twin_proto.pb import common_pb2, twin_service_pb2, twin_service_pb2_grpc  # noqa: E402
from twin.sim.agents import DEFAULT_TRUTHS, Family  # noqa: E402
from twin.fit.cohort import SERVING_ALIAS  # noqa: E402
from twin.models.learner import LearnerModel, ModelSpec  # noqa: E402
from twin.models.params import TwinModel  # noqa: E402
from twin.persist.sessions import SessionStore  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402
from twin.models.state import end_state  # noqa: E402
from twin.persist.store import TwinStore, hash_trials  # noqa: E402
from twin.protocol import IBL_DEFAULT  # noqa: E402

TOKEN = "bench-reader-token"
SUBJECT = "bench-000"
N_TRIALS = 1000
CONCURRENCY = (1, 8, 32)


@dataclass(frozen=True)
class Stats:
    """Latencies of one RPC at one concurrency."""

    rpc: str
    clients: int
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float


def build_store(root: Path) -> int:
    """One subject with a 1,000-trial history (two sessions) and a DNN twin serving it."""
    torch.manual_seed(0)
    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 1, N_TRIALS, seed=1, subject_prefix="bench").trials
    store = TwinStore(root)
    SessionStore(store).add_table(trials)
    model = LearnerModel(ModelSpec("dnn"))
    state = end_state(model, trials)
    store.put(SUBJECT, TwinModel.of(model), trained_through_session=int(trials["session"].max()), data_hash=hash_trials(trials), alias=SERVING_ALIAS, state=state)
    store.close()
    return len(trials)


def start_server(store: Path, port_file: Path) -> subprocess.Popen:
    env = {**os.environ, "TWIN_AUTH_TOKENS": f"reader:{TOKEN}"}
    cmd = [sys.executable, "-m", "twin_cli.cli", "serve", "--store", str(store), "--address", "127.0.0.1:0", "--port-file", str(port_file), "--log-level", "warning", "--max-workers", "40"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.1)
    return proc


def make_calls(target: str) -> tuple[Callable[[], Callable[[], object]], Callable[[], Callable[[], object]], Callable[[], Callable[[], object]]]:
    """Factories of per-client callables: no-op, stored Predict, supplied Predict."""
    md = (("authorization", f"Bearer {TOKEN}"),)
    stored = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=SUBJECT), stored=twin_service_pb2.StoredHistory())

    def noop() -> Callable[[], object]:
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
        req = health_pb2.HealthCheckRequest()
        return lambda: stub.Check(req, timeout=60)

    def predict() -> Callable[[], object]:
        stub = twin_service_pb2_grpc.TwinServiceStub(grpc.insecure_channel(target))
        return lambda: stub.Predict(stored, metadata=md, timeout=60)

    def supplied_factory(trials: list[common_pb2.Trial]) -> Callable[[], Callable[[], object]]:
        req = twin_service_pb2.PredictRequest(twin=common_pb2.TwinRef(subject=SUBJECT), supplied=twin_service_pb2.SuppliedHistory(trials=trials))

        def supplied() -> Callable[[], object]:
            stub = twin_service_pb2_grpc.TwinServiceStub(grpc.insecure_channel(target))
            return lambda: stub.Predict(req, metadata=md, timeout=60)

        return supplied

    return noop, predict, supplied_factory  # type: ignore[return-value]


def measure(name: str, factory: Callable[[], Callable[[], object]], clients: int, seconds: float, warmup: int = 5) -> Stats:
    calls = [factory() for _ in range(clients)]
    for call in calls:
        for _ in range(warmup):
            call()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        call, out = calls[i], latencies[i]
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            call()
            out.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t_start = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    lat = np.array([x for xs in latencies for x in xs]) * 1000.0
    return Stats(name, clients, int(lat.size), float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), lat.size / wall)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per RPC and concurrency")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        n = build_store(Path(tmp) / "store")
        proc = start_server(Path(tmp) / "store", Path(tmp) / "port")
        try:
            target = f"127.0.0.1:{int((Path(tmp) / 'port').read_text())}"
            noop, predict, supplied_factory = make_calls(target)
            t0 = time.perf_counter()
            first = predict()()
            cold_ms = (time.perf_counter() - t0) * 1000.0
            assert first.n_trials == n
            history = trials_to_pb(SessionStore(TwinStore(Path(tmp) / "store")).trials(SUBJECT))
            rows = []
            for c in CONCURRENCY:
                for name, factory in (("noop (health Check)", noop), ("Predict (stored, 1000 trials)", predict)):
                    rows.append(measure(name, factory, c, args.seconds))
                    print(f"{rows[-1].rpc:32s} clients={c:3d}  p50={rows[-1].p50_ms:8.2f} ms  p99={rows[-1].p99_ms:8.2f} ms  {rows[-1].rps:8.1f} req/s", flush=True)
            sup = measure("Predict (supplied, 1000 trials)", supplied_factory(history), 1, args.seconds, warmup=2)
            print(f"{sup.rpc:32s} clients=  1  p50={sup.p50_ms:8.2f} ms  p99={sup.p99_ms:8.2f} ms  {sup.rps:8.1f} req/s")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    by = {(r.rpc.split(" ")[0], r.clients): r for r in rows}
    noop8, pred8 = by[("noop", 8)], by[("Predict", 8)]
    bound = 2 * noop8.p99_ms + 10.0
    ok = pred8.p99_ms <= bound
    verdict = f"Predict p99 at 8 clients {pred8.p99_ms:.2f} ms {'<=' if ok else '>'} 2 x no-op p99 + 10 ms = {bound:.2f} ms: {'PASS' if ok else 'FAIL'}"
    print(verdict)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "rows": [asdict(r) for r in [*rows, sup]],
        "cold_predict_ms": cold_ms,
        "criterion": {"predict_p99_8": pred8.p99_ms, "bound_ms": bound, "pass": ok},
        "machine": {"cpus": os.cpu_count(), "load_average_1min_at_start": load, "torch_threads": 1, "python": sys.version.split()[0], "grpcio": grpc.__version__},
        "seconds_per_cell": args.seconds,
    }
    (args.out / "grpc_predict.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# gRPC load benchmark: Predict (1,000-trial history) vs a no-op RPC",
        "",
        f"`python bench/grpc_predict.py --seconds {args.seconds:g}`; server: `twin serve` in its own process (token auth, 1 torch thread), "
        f"clients: threads with one channel each, same machine ({os.cpu_count()} CPUs, load average {load:.1f} at the start). Predict: DNN twin along the subject's stored 1,000-trial "
        "history; repeats are served from the server's result cache (the cold first call is below).",
        "",
        "| RPC | clients | requests | p50 ms | p99 ms | req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r.rpc} | {r.clients} | {r.requests} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.rps:.1f} |" for r in [*rows, sup]],
        "",
        f"Cold Predict (first call: loads the twin and sessions, runs the model): {cold_ms:.1f} ms. "
        "Supplied-history Predict (validated and run on every call) is the uncached cost.",
        "",
        f"**{verdict}**",
        "",
    ]
    (args.out / "grpc_predict.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'grpc_predict.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
