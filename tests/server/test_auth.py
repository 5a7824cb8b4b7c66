"""Authentication and roles: bearer tokens from YAML or the environment, UNAUTHENTICATED and
PERMISSION_DENIED, open health/reflection, explicit local demo mode, TLS."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import grpc
import pytest
from server_env import ADMIN, READER, RIG, TOKENS, TWIN_SUBJECTS

from server.app import ServerConfig, TlsConfig
from server.auth import METHOD_ROLES, AuthConfig, Role, bearer_token, required_role
from twin_client.client import TwinClient
from twin_proto.pb import curriculum_service_pb2, operations_service_pb2, teaching_service_pb2, twin_service_pb2

S = TWIN_SUBJECTS[0]


def _code(fn) -> grpc.StatusCode | None:
    try:
        fn()
    except grpc.RpcError as e:
        return e.code()
    return None


def test_missing_or_bad_token_is_unauthenticated(server):
    for token in (None, "not-a-token"):
        with TwinClient(server.target, token) as c:
            assert _code(lambda: c.get_twin(S)) == grpc.StatusCode.UNAUTHENTICATED
            assert c.health() == "SERVING"  # health needs no token
    with TwinClient(server.target, None) as c:  # a malformed header is no token
        call = lambda: c.twins.GetTwin(twin_service_pb2.GetTwinRequest(), metadata=(("authorization", "Basic abc"),))  # noqa: E731
        assert _code(call) == grpc.StatusCode.UNAUTHENTICATED


def test_roles(connect, cohort_trials):
    reader, rig, admin = connect(READER), connect(RIG), connect(ADMIN)
    s3 = cohort_trials[(cohort_trials.subject == S) & (cohort_trials.session == 3)]
    assert _code(lambda: reader.get_twin(S)) is None
    assert _code(lambda: reader.next_session(S, n_rollouts=10)) is None
    assert _code(lambda: reader.upload_session(S, s3)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: reader.fit_cohort()) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: rig.fit_cohort()) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: rig.search_curricula()) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: rig.cancel_operation("operations/x")) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: rig.upload_session(S, s3, skip_twin_update=True)) is None
    assert _code(lambda: admin.cancel_operation("operations/x")) == grpc.StatusCode.NOT_FOUND  # allowed, then not found
    try:
        reader.upload_session(S, s3)
    except grpc.RpcError as e:
        assert "needs 'rig'" in e.details()


def test_every_method_has_an_explicit_role():
    methods = {
        f"/{svc.full_name}/{m.name}"
        for mod in (twin_service_pb2, curriculum_service_pb2, operations_service_pb2, teaching_service_pb2)
        for svc in mod.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
    }
    assert methods == set(METHOD_ROLES)
    assert required_role("/twin.v1.TwinService/Unknown") is Role.ADMIN  # deny by default


def test_local_demo_needs_no_token_and_is_explicit(serve):
    with pytest.raises(ValueError, match="authentication is required"):
        ServerConfig(address="127.0.0.1:0", auth=None)
    with pytest.raises(ValueError, match="loopback"):
        ServerConfig(address="0.0.0.0:0", auth=None, local_demo=True)
    with pytest.raises(ValueError, match="no bearer tokens"):
        ServerConfig(address="127.0.0.1:0", auth=AuthConfig())
    running = serve(auth=None, local_demo=True)
    with TwinClient(running.target, None) as c:
        assert c.get_twin(S).twin.version == 1
        assert _code(lambda: c.search_curricula()) == grpc.StatusCode.FAILED_PRECONDITION  # admin calls allowed too


def test_tokens_from_yaml_and_env(tmp_path):
    f = tmp_path / "tokens.yaml"
    digest = hashlib.sha256(b"hashed-secret").hexdigest()
    f.write_text(f"tokens:\n  - {{name: rig-3, role: rig, token: plain-secret}}\n  - {{name: ops, role: Admin, token_sha256: {digest}}}\n")
    cfg = AuthConfig.from_yaml(f)
    assert cfg.authenticate("plain-secret").name == "rig-3" and cfg.authenticate("plain-secret").role is Role.RIG
    assert cfg.authenticate("hashed-secret").role is Role.ADMIN
    assert cfg.authenticate("other") is None
    env = AuthConfig.from_env({"TWIN_AUTH_TOKENS": "reader:r1, admin:a1"})
    assert env.authenticate("r1").role is Role.READER and env.authenticate("a1").role is Role.ADMIN
    merged = cfg.merged(env)
    assert merged.authenticate("r1") and merged.authenticate("plain-secret")
    for bad in ("tokens: 3", "tokens:\n  - {role: boss, token: x}", "tokens:\n  - {role: rig}", "tokens:\n  - {role: rig, token_sha256: zz}"):
        f.write_text(bad)
        with pytest.raises(ValueError):
            AuthConfig.from_yaml(f)
    with pytest.raises(ValueError, match="role:token"):
        AuthConfig.from_env({"TWIN_AUTH_TOKENS": "justatoken"})
    assert bearer_token((("authorization", "Bearer  abc "),)) == "abc"
    assert bearer_token((("Authorization", b"bearer xyz"),)) == "xyz"
    assert bearer_token((("authorization", "Bearer "),)) is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls(serve, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    running = serve(config=ServerConfig(address="127.0.0.1:0", auth=AuthConfig.from_tokens(TOKENS), tls=TlsConfig(cert, key)))
    with TwinClient(running.target, READER, tls=True, root_certificates=cert.read_bytes(), timeout_s=10) as c:
        assert c.get_twin(S).twin.version == 1
    with TwinClient(running.target, READER, timeout_s=3) as plain:
        assert _code(lambda: plain.get_twin(S)) == grpc.StatusCode.UNAVAILABLE
