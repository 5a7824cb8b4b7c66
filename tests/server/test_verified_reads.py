"""Verified reads through the service: a damaged or missing stored session or twin file is
DATA_LOSS (reason STORED_DATA or MODEL_FILE), never INTERNAL, and the message names no server
path; the store is otherwise served as before."""

from __future__ import annotations

import grpc
import pytest
from server_env import ADMIN, NO_TWIN, READER, TWIN_SUBJECTS

from twin_client.client import TwinClient, error_reason, operation_metadata
from twin_proto.pb import operation_pb2

S, OTHER = TWIN_SUBJECTS[0], TWIN_SUBJECTS[1]


def _session_file(store_dir, subject: str, session: int):
    [path] = (store_dir / "sessions" / subject).glob(f"{session:05d}-*.parquet")
    return path


def _data_loss(e: pytest.ExceptionInfo, reason: str, store_dir) -> str:
    assert e.value.code() == grpc.StatusCode.DATA_LOSS, (e.value.code(), e.value.details())
    assert error_reason(e.value) == reason
    msg = e.value.details()
    assert str(store_dir) not in msg and "/sessions/" not in msg and "/weights/" not in msg, msg
    return msg


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_session_is_data_loss(serve, store_dir, damage):
    path = _session_file(store_dir, S, 2)
    if damage == "garbage":
        path.write_bytes(b"PAR1 definitely not parquet")
    else:
        path.unlink()
    running = serve()
    with TwinClient(running.target, READER) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.predict(S)
        msg = _data_loss(e, "STORED_DATA", store_dir)
        assert "stored session 2 of subject 'sim-000'" in msg
        assert c.predict(OTHER).n_trials > 0  # other animals are served as before
        assert c.predict(S, through_session=1).n_trials > 0  # and the intact session


def test_a_changed_session_fails_its_checksum(serve, store_dir):
    import pandas as pd

    path = _session_file(store_dir, NO_TWIN, 1)
    df = pd.read_parquet(path)
    df["prob_left"] = 0.2
    df.to_parquet(path, index=False)
    running = serve()
    with TwinClient(running.target, READER) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.next_session(NO_TWIN)  # a subject without a twin: its last phase is read from its sessions
        assert "checksum" in _data_loss(e, "STORED_DATA", store_dir)


def test_a_cohort_fit_over_a_damaged_session_fails_with_data_loss(serve, store_dir):
    _session_file(store_dir, OTHER, 1).write_bytes(b"\x00" * 64)
    running = serve()
    with TwinClient(running.target, ADMIN) as c:
        op = c.fit_cohort(epochs=2, adaptation=1)
        done = c.wait_operation(op.name, timeout_s=60)
    assert operation_metadata(done).state == operation_pb2.OPERATION_STATE_FAILED and done.done
    assert done.error.code == grpc.StatusCode.DATA_LOSS.value[0] and str(store_dir) not in done.error.message


def test_a_damaged_twin_is_data_loss_without_paths(serve, store_dir):
    [weights] = (store_dir / "weights" / S).glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    running = serve()
    with TwinClient(running.target, READER) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.forecast(S, n_rollouts=10)
        assert "checksum" in _data_loss(e, "MODEL_FILE", store_dir)
        assert c.forecast(OTHER, n_rollouts=10).forecast.n_rollouts == 10
