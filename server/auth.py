"""Bearer-token authentication and role-based authorisation.

Each token maps to a named principal with a role: ``reader`` (analysis clients: read twins,
predictions, forecasts, plans, operations), ``rig`` (a reader that may also upload sessions)
or ``admin`` (may also fit cohorts, search curricula and cancel operations). Roles are
ordered: each includes the rights of the ones below it.

Tokens come from a YAML file::

    tokens:
      - name: rig-3          # who it is, for the logs
        role: rig
        token: "s3cr3t..."   # or token_sha256: "<hex digest of the token>"

and/or the ``TWIN_AUTH_TOKENS`` environment variable, ``role:token`` pairs separated by commas
(``reader:abc,rig:def``). Tokens are compared by SHA-256 digest in constant time and never
logged. Health checks and reflection need no token (load balancers and ``grpcurl list``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from service.errors import ServiceError

#: Environment variable holding ``role:token`` pairs.
TOKENS_ENV = "TWIN_AUTH_TOKENS"


class Role(enum.Enum):
    """What a principal may do; each role includes the ones before it."""

    READER = "reader"
    RIG = "rig"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: "Role") -> bool:
        """True when this role has the rights of ``required``."""
        return self.rank >= required.rank


_RANK = {Role.READER: 0, Role.RIG: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: who it is (from the token's entry).
        role: what it may do.
    """

    name: str
    role: Role


@dataclass(frozen=True)
class AuthConfig:
    """The accepted tokens.

    Attributes:
        principals: ``sha256(token) hex digest → principal``.
    """

    principals: Mapping[str, Principal] = field(default_factory=dict)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None when it is not accepted."""
        digest = _digest(token)
        found = None
        for known, principal in self.principals.items():  # no early exit: constant time in the match
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def merged(self, other: "AuthConfig") -> "AuthConfig":
        """Both configs' tokens (``other`` wins on a duplicate token)."""
        return AuthConfig({**self.principals, **other.principals})

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, Role]) -> "AuthConfig":
        """From plain ``token → role`` pairs (principal named after the role)."""
        return cls({_digest(t): Principal(f"{r.value}-{i}", r) for i, (t, r) in enumerate(tokens.items(), start=1)})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "AuthConfig":
        """Load a token file (see the module docstring).

        Raises:
            ValueError: malformed file, unknown role or an entry without a token.
        """
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        entries = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a top-level 'tokens:' list")
        principals: dict[str, Principal] = {}
        for i, e in enumerate(entries, start=1):
            if not isinstance(e, dict):
                raise ValueError(f"{path}: tokens[{i}] is not a mapping")
            role = _role(e.get("role"), f"{path}: tokens[{i}]")
            name = str(e.get("name") or f"{role.value}-{i}")
            if e.get("token"):
                digest = _digest(str(e["token"]))
            elif e.get("token_sha256"):
                digest = str(e["token_sha256"]).lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError(f"{path}: tokens[{i}].token_sha256 is not a SHA-256 hex digest")
            else:
                raise ValueError(f"{path}: tokens[{i}] has neither 'token' nor 'token_sha256'")
            principals[digest] = Principal(name, role)
        return cls(principals)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AuthConfig":
        """From :data:`TOKENS_ENV` (empty config when unset).

        Raises:
            ValueError: a pair that is not ``role:token`` with a known role.
        """
        raw = (os.environ if environ is None else environ).get(TOKENS_ENV, "")
        principals: dict[str, Principal] = {}
        for i, pair in enumerate((p.strip() for p in raw.split(",")), start=1):
            if not pair:
                continue
            role_s, sep, token = pair.partition(":")
            if not sep or not token:
                raise ValueError(f"{TOKENS_ENV}: entry {i} is not 'role:token'")
            role = _role(role_s.strip(), f"{TOKENS_ENV}: entry {i}")
            principals[_digest(token.strip())] = Principal(f"env-{role.value}-{i}", role)
        return cls(principals)


class UnauthenticatedError(ServiceError):
    """No token, or a token the server does not accept."""


class PermissionDeniedError(ServiceError):
    """A valid token whose role may not call the method."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _role(value: object, where: str) -> Role:
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"{where}: unknown role {value!r}; expected one of {[r.value for r in Role]}") from None


#: Methods anyone may call without a token (health checks and reflection).
PUBLIC_SERVICES: tuple[str, ...] = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")

#: The role each twin.v1 method needs; methods not listed need ``admin`` (deny by default).
METHOD_ROLES: Mapping[str, Role] = {
    "/twin.v1.TwinService/ListSubjects": Role.READER,
    "/twin.v1.TwinService/ListTwins": Role.READER,
    "/twin.v1.TwinService/GetTwin": Role.READER,
    "/twin.v1.TwinService/Predict": Role.READER,
    "/twin.v1.TwinService/Forecast": Role.READER,
    "/twin.v1.TwinService/UploadSession": Role.RIG,
    "/twin.v1.TwinService/FitCohort": Role.ADMIN,
    "/twin.v1.CurriculumService/NextSession": Role.READER,
    "/twin.v1.CurriculumService/SearchCurricula": Role.ADMIN,
    "/twin.v1.TeachingService/Teach": Role.READER,
    "/twin.v1.OperationsService/GetOperation": Role.READER,
    "/twin.v1.OperationsService/ListOperations": Role.READER,
    "/twin.v1.OperationsService/WatchOperation": Role.READER,
    "/twin.v1.OperationsService/CancelOperation": Role.ADMIN,
}


def is_public(method: str) -> bool:
    """True for methods that need no token."""
    service = method.lstrip("/").split("/", 1)[0]
    return service in PUBLIC_SERVICES


def required_role(method: str) -> Role:
    """The role ``method`` (``/package.Service/Method``) needs."""
    return METHOD_ROLES.get(method, Role.ADMIN)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, or None."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


__all__ = [
    "AuthConfig",
    "METHOD_ROLES",
    "PUBLIC_SERVICES",
    "PermissionDeniedError",
    "Principal",
    "Role",
    "TOKENS_ENV",
    "UnauthenticatedError",
    "bearer_token",
    "is_public",
    "required_role",
]
