"""Fixtures of the server tests: a small store of fitted twins (built once per session and copied
per test), servers started in-process on 127.0.0.1 with an ephemeral port, and clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc")

from server.app import RunningServer, ServerConfig, build_plane, start_server  # noqa: E402
from server.auth import AuthConfig, Role  # noqa: E402
from twin_client.client import TwinClient  # noqa: E402
from service.config import DataPlaneConfig  # noqa: E402
from twin.sim.agents import DEFAULT_TRUTHS, Family  # noqa: E402
from twin.fit.cohort import CohortFitConfig, fit_cohort  # noqa: E402
from twin.fit.train import FitConfig  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.persist.sessions import SessionStore  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402
from twin.persist.store import TwinStore  # noqa: E402
from twin.protocol import IBL_DEFAULT  # noqa: E402
from twin.models.params import Adaptation  # noqa: E402

from server_env import ADMIN, FAST_UPDATE, NO_TWIN, READER, RIG, TOKENS, TWIN_SUBJECTS  # noqa: E402,F401


@pytest.fixture(scope="session")
def cohort_trials():
    """Four simulated animals, three sessions each."""
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 4, 1500, seed=4).trials


@pytest.fixture(scope="session")
def base_store(tmp_path_factory, cohort_trials) -> Path:
    """A store holding sessions 1-2 of every animal and twins (v1, serving) of three of them."""
    root = tmp_path_factory.mktemp("base-store")
    store = TwinStore(root)
    sessions = SessionStore(store)
    first = cohort_trials[cohort_trials["session"] <= 2]
    sessions.add_table(first)
    fitted = first[first["subject"].isin(TWIN_SUBJECTS)]
    cfg = CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=3, patience=2), adaptation=Adaptation.INITIAL_WEIGHTS)
    fit_cohort(fitted, store, cfg, progress=False)
    store.close()
    return root


@pytest.fixture
def store_dir(base_store, tmp_path) -> Path:
    """A private copy of the base store."""
    dest = tmp_path / "store"
    shutil.copytree(base_store, dest)
    return dest


ServeFn = Callable[..., RunningServer]


@pytest.fixture
def serve(store_dir) -> Iterator[ServeFn]:
    """Start servers over the test's store: ``serve(auth=..., local_demo=..., config=ServerConfig,
    plane_config=DataPlaneConfig, **plane_kw)``."""
    started: list[RunningServer] = []

    def start(
        *,
        auth: AuthConfig | None = AuthConfig.from_tokens(TOKENS),
        local_demo: bool = False,
        config: ServerConfig | None = None,
        plane_config: DataPlaneConfig | None = None,
        **plane_kw: object,
    ) -> RunningServer:
        plane_kw["config"] = plane_config or FAST_UPDATE
        plane = build_plane(store_dir, **plane_kw)  # type: ignore[arg-type]
        cfg = config or ServerConfig(address="127.0.0.1:0", auth=auth, local_demo=local_demo, grace_s=5.0, max_workers=8)
        running = start_server(cfg, plane)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(grace_s=2.0)


@pytest.fixture
def server(serve) -> RunningServer:
    """A server with token auth over the test's store."""
    return serve()


@pytest.fixture
def connect(server) -> Iterator[Callable[[str | None], TwinClient]]:
    """``connect(token)`` → a client of ``server``."""
    clients: list[TwinClient] = []

    def make(token: str | None = READER, timeout_s: float = 60.0) -> TwinClient:
        c = TwinClient(server.target, token, timeout_s=timeout_s)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
