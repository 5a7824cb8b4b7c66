"""The versioned twin store: metadata in a SQL database, weights in safetensors files.

One row per twin version (subject, version) with what produced it: rule and hyperparameters,
the last session it was trained through, a hash of the trials it saw, the code version,
validation metrics and creation time. Aliases (``serving``, say) point a subject's name at one
version; the server follows them.

A twin is a population rule plus the animal's parameters (:class:`~twin.models.params.TwinModel`),
and is stored that way: each rule once (a model file, one row in ``twin_rules`` keyed by its
content reference), each version's parameters and end state in a small twin file that names the
rule. Stores written before rules were shared (a whole model file per version) still load.

The embedded default is SQLite (a file next to the weights folder); the same code runs on
PostgreSQL given a ``postgresql+psycopg://`` URL. Writes are ordered so that a process killed at
any point leaves the store consistent: the weights files are written atomically first, then the
rows (all of a cohort's, with their aliases) are inserted in one transaction; a row therefore
never names a missing file (an orphan file may remain: ``twin store verify --repair`` and the
server's start remove them); a twin's rule is stored, file then row, before its twin file.
Loading verifies every file's SHA-256 and never unpickles.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import pandas as pd
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from twin.errors import ModelFileError, TwinError
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel, TwinParams
from twin.models.state import TwinState
from twin.persist.model_files import MODEL_FORMAT, check_state, file_format, load_model, load_twin_params, save_model, save_twin_params
from twin.persist.records import TwinHyperparameters, TwinMetrics
from twin.persist.tables import _AliasRow, _Base, _ResultRow, _RuleRow, _safe_name, _sha256, _sqlite_pragmas, _TwinRow, retry_version_race

#: Joins a store transaction: called with the open session and the ``(subject, version)`` pairs
#: it inserted, before it commits.
InTransaction = Callable[[Session, list[tuple[str, int]]], None]


class TwinNotFoundError(TwinError, LookupError):
    """No such subject, version or alias in the store."""


class ResultKind(enum.Enum):
    """What a stored result is."""

    HYPERPARAMETER_SEARCH = "hyperparameter_search"
    CURRICULUM_SEARCH = "curriculum_search"
    CURRICULUM = "curriculum"


@dataclass(frozen=True)
class StoredResult:
    """A versioned JSON result kept beside the twins (a search's outcome, a curriculum...).

    Attributes:
        kind: what it is.
        name: its name (versions count per kind and name).
        version: 1, 2, ...
        payload: the JSON content.
        created_at: when it was stored (UTC).
    """

    kind: ResultKind
    name: str
    version: int
    payload: dict[str, object]
    created_at: dt.datetime


@dataclass(frozen=True)
class NewVersion:
    """One twin version to store (see :meth:`TwinStore.put_many`).

    Attributes:
        subject: the animal.
        twin: its twin.
        trained_through_session: the last session it was fitted on.
        data_hash: hash of the trials it was fitted on.
        metrics: how well it fitted.
        hyperparameters: how it was made.
        state: its end-of-session state.
    """

    subject: str
    twin: TwinModel
    trained_through_session: int
    data_hash: str
    metrics: TwinMetrics | None = None
    hyperparameters: TwinHyperparameters | None = None
    state: TwinState | None = None


@dataclass(frozen=True)
class TwinVersion:
    """Metadata of one stored twin version.

    Attributes:
        subject: the animal.
        version: 1, 2, ... per subject.
        rule: the rule's registered name.
        spec: the twin's structure.
        hyperparameters: how it was made.
        trained_through_session: the last session it was fitted on.
        data_hash: SHA-256 of the trials it was fitted on.
        code_version: the package version that made it.
        metrics: how well it fitted.
        weights_file: its twin file (or, in older stores, whole model file), relative to the root.
        weights_sha256: that file's SHA-256.
        created_at: when it was stored (UTC).
        aliases: the aliases pointing at it.
    """

    subject: str
    version: int
    rule: str
    spec: ModelSpec
    hyperparameters: TwinHyperparameters
    trained_through_session: int
    data_hash: str
    code_version: str
    metrics: TwinMetrics
    weights_file: str
    weights_sha256: str
    created_at: dt.datetime
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Twin:
    """One loaded twin version.

    Attributes:
        twin: the animal's twin (population rule and the animal's parameters; eval mode, no
            gradients).
        meta: its stored metadata.
        state: where it continues from (end of its last trained session), if stored.
    """

    twin: TwinModel
    meta: TwinVersion
    state: TwinState | None

    @property
    def model(self) -> LearnerModel:
        """The twin as a learner model."""
        return self.twin.model

    @property
    def params(self) -> TwinParams:
        """The animal's parameters."""
        return self.twin.params


def code_version() -> str:
    """The installed package version."""
    try:
        return importlib_metadata.version("learning-twins")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def hash_trials(df: pd.DataFrame) -> str:
    """SHA-256 of a trials table's contents (row order and values), for provenance."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


class TwinStore:
    """Versioned storage of twins.

    Args:
        root: folder holding the weights (and, by default, the SQLite database ``twins.db``).
        url: SQLAlchemy database URL; default ``sqlite:///<root>/twins.db``.
    """

    def __init__(self, root: str | Path, url: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = url or f"sqlite:///{(self.root / 'twins.db').resolve()}"
        self.engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------------------

    def put(
        self,
        subject: str,
        twin: TwinModel,
        *,
        trained_through_session: int,
        data_hash: str,
        metrics: TwinMetrics | None = None,
        hyperparameters: TwinHyperparameters | None = None,
        alias: str | None = None,
        state: TwinState | None = None,
        in_transaction: InTransaction | None = None,
    ) -> TwinVersion:
        """Store a new version of ``subject``'s twin (version = previous + 1); see
        :meth:`put_many`."""
        item = NewVersion(subject, twin, trained_through_session, data_hash, metrics, hyperparameters, state)
        return self.put_many([item], alias=alias, in_transaction=in_transaction)[0]

    def put_many(self, items: Sequence[NewVersion], *, alias: str | None = None, in_transaction: InTransaction | None = None) -> tuple[TwinVersion, ...]:
        """Store a new version of each item's twin and point ``alias`` at them, all in one
        transaction: a cohort switches all at once or not at all.

        Each twin's rule is stored first unless the store already holds it (by its reference),
        then the twin files (parameters and end-of-session state), then every row; each file
        is written atomically before the transaction that names it, so a crash leaves no row
        pointing at a missing or partial file (only orphan files, which
        :func:`twin.persist.integrity.verify_store` finds and removes). ``in_transaction``
        (called with the open session and the new ``(subject, version)`` pairs) joins the
        transaction, e.g. to mark the operation that made them succeeded.
        """
        if any(not it.subject for it in items):
            raise ValueError("subject must be a non-empty string")
        if len({it.subject for it in items}) != len(items):
            raise ValueError("at most one new version per subject in one put")
        files: list[tuple[Path, str]] = []
        try:
            for it in items:
                self.put_rule(it.twin.population, it.twin.params.rule)
                rel = Path("weights") / _safe_name(it.subject) / f"{uuid.uuid4().hex}.safetensors"
                path = save_twin_params(it.twin.params, self.root / rel, {"subject": it.subject}, state=it.state)
                files.append((path, _sha256(path)))

            def insert() -> list[tuple[str, int]]:
                with Session(self.engine) as s, s.begin():
                    refs = [self._insert_row(s, it, path, digest, alias) for it, (path, digest) in zip(items, files)]
                    if in_transaction is not None:
                        in_transaction(s, refs)
                    return refs

            refs = retry_version_race(insert, "new twin versions")
        except BaseException:
            for path, _ in files:
                path.unlink(missing_ok=True)
            raise
        return tuple(self.get(subject, version) for subject, version in refs)

    def _insert_row(self, s: Session, it: NewVersion, path: Path, digest: str, alias: str | None) -> tuple[str, int]:
        last = s.scalar(select(func.max(_TwinRow.version)).where(_TwinRow.subject == it.subject))
        spec = it.twin.model.spec
        row = _TwinRow(
            subject=it.subject,
            version=(last or 0) + 1,
            rule=spec.rule,
            spec=spec.to_dict(),
            hyperparameters=(it.hyperparameters or TwinHyperparameters()).to_json(),
            trained_through_session=int(it.trained_through_session),
            data_hash=it.data_hash,
            code_version=code_version(),
            metrics=(it.metrics or TwinMetrics()).to_record(),
            weights_file=path.relative_to(self.root).as_posix(),
            weights_sha256=digest,
            created_at=dt.datetime.now(dt.timezone.utc),
        )
        s.add(row)
        s.flush()
        if alias:
            self._set_alias(s, it.subject, alias, row.version)
        return it.subject, row.version

    def put_rule(self, population: LearnerModel, ref: str) -> None:
        """Store ``population`` as rule ``ref`` unless the store holds that rule already.

        The model file is written (atomically) before its row; a writer that loses a race for
        the same rule removes its own file.
        """
        with Session(self.engine) as s:
            if s.get(_RuleRow, ref) is not None:
                return
        rel = Path("rules") / f"{uuid.uuid4().hex}.safetensors"
        path = save_model(population, self.root / rel, {"rule_ref": ref})
        row = _RuleRow(ref=ref, rule=population.spec.rule, file=rel.as_posix(), sha256=_sha256(path), created_at=dt.datetime.now(dt.timezone.utc))
        try:
            with Session(self.engine) as s, s.begin():
                s.add(row)
        except IntegrityError:  # another writer stored the same rule first
            path.unlink(missing_ok=True)

    def set_alias(self, subject: str, name: str, version: int) -> None:
        """Point alias ``name`` of ``subject`` at ``version``."""
        with Session(self.engine) as s, s.begin():
            self._set_alias(s, subject, name, version)

    def _set_alias(self, s: Session, subject: str, name: str, version: int) -> None:
        exists = s.scalar(select(_TwinRow.id).where(_TwinRow.subject == subject, _TwinRow.version == version))
        if exists is None:
            raise TwinNotFoundError(f"subject {subject!r} has no twin version {version}")
        row = s.get(_AliasRow, (subject, name))
        now = dt.datetime.now(dt.timezone.utc)
        if row is None:
            s.add(_AliasRow(subject=subject, name=name, version=version, updated_at=now))
        else:
            row.version, row.updated_at = version, now

    # -- reading ---------------------------------------------------------------------------

    def subjects(self) -> list[str]:
        """Subjects with at least one twin, sorted."""
        with Session(self.engine) as s:
            return list(s.scalars(select(_TwinRow.subject).distinct().order_by(_TwinRow.subject)))

    def versions(self, subject: str) -> list[TwinVersion]:
        """All versions of a subject's twin, oldest first."""
        with Session(self.engine) as s:
            rows = list(s.scalars(select(_TwinRow).where(_TwinRow.subject == subject).order_by(_TwinRow.version)))
            aliases = self._aliases(s, subject)
            return [_to_version(r, aliases) for r in rows]

    def resolve(self, subject: str, version: int | None = None, alias: str | None = None) -> int:
        """The version number named by ``version``, ``alias`` or (neither) the latest."""
        with Session(self.engine) as s:
            if alias is not None:
                row = s.get(_AliasRow, (subject, alias))
                if row is None:
                    raise TwinNotFoundError(f"subject {subject!r} has no alias {alias!r}")
                return row.version
            if version is not None:
                return version
            last = s.scalar(select(func.max(_TwinRow.version)).where(_TwinRow.subject == subject))
            if last is None:
                raise TwinNotFoundError(f"no twin stored for subject {subject!r}")
            return int(last)

    def get(self, subject: str, version: int | None = None, alias: str | None = None) -> TwinVersion:
        """Metadata of one version (default: the latest)."""
        v = self.resolve(subject, version, alias)
        with Session(self.engine) as s:
            row = s.scalar(select(_TwinRow).where(_TwinRow.subject == subject, _TwinRow.version == v))
            if row is None:
                raise TwinNotFoundError(f"subject {subject!r} has no twin version {v}")
            return _to_version(row, self._aliases(s, subject))

    def load(self, subject: str, version: int | None = None, alias: str | None = None) -> tuple[LearnerModel, TwinVersion]:
        """The twin's model and metadata; the weights file's checksum is verified first."""
        twin = self.load_twin(subject, version, alias)
        return twin.model, twin.meta

    def load_twin(self, subject: str, version: int | None = None, alias: str | None = None) -> Twin:
        """The twin (its rule and parameters), metadata and end-of-session state; every file's
        checksum is verified first."""
        meta = self.get(subject, version, alias)
        what = f"{subject!r} v{meta.version}"
        path = self._verified(meta.weights_file, meta.weights_sha256, f"weights of {what}")
        if file_format(path) == MODEL_FORMAT:  # a store from before shared rules
            old = load_model(path)
            return Twin(twin=TwinModel.of(old.model), meta=meta, state=old.state)
        stored = load_twin_params(path)
        with Session(self.engine) as s:
            rule = s.get(_RuleRow, stored.params.rule)
            if rule is None:
                raise ModelFileError(f"{path}: the rule of {what} ({stored.params.rule[:12]}...) is not in the store")
            rule_file, rule_sha = rule.file, rule.sha256
        population = load_model(self._verified(rule_file, rule_sha, f"rule of {what}")).model
        if population.spec != meta.spec:
            raise ModelFileError(f"{path}: the rule of {what} does not have the version's spec")
        if stored.state is not None:
            check_state(path, stored.state, population)
        try:
            twin = TwinModel(population, stored.params)
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        return Twin(twin=twin, meta=meta, state=stored.state)

    def _verified(self, rel: str, sha256: str, what: str) -> Path:
        """The path of stored file ``rel`` once its checksum matches ``sha256``."""
        path = self.root / rel
        if not path.is_file():
            raise ModelFileError(f"{path}: {what} are missing")
        if _sha256(path) != sha256:
            raise ModelFileError(f"{path}: checksum mismatch for the {what}")
        return path

    # -- results ---------------------------------------------------------------------------

    def put_result(self, kind: ResultKind, name: str, payload: dict[str, object]) -> StoredResult:
        """Store ``payload`` (JSON-serialisable) as the next version of result ``kind``/``name``."""
        if not name:
            raise ValueError("name must be a non-empty string")
        payload = json.loads(json.dumps(payload, default=str))

        def insert() -> StoredResult:
            with Session(self.engine) as s, s.begin():
                last = s.scalar(select(func.max(_ResultRow.version)).where(_ResultRow.kind == kind.value, _ResultRow.name == name))
                row = _ResultRow(kind=kind.value, name=name, version=(last or 0) + 1, payload=payload, created_at=dt.datetime.now(dt.timezone.utc))
                s.add(row)
                s.flush()
                return _to_result(row)

        return retry_version_race(insert, f"a version for result {kind.value}/{name}")

    def get_result(self, kind: ResultKind, name: str, version: int | None = None) -> StoredResult:
        """One stored result (default: its latest version)."""
        with Session(self.engine) as s:
            q = select(_ResultRow).where(_ResultRow.kind == kind.value, _ResultRow.name == name)
            q = q.where(_ResultRow.version == version) if version is not None else q.order_by(_ResultRow.version.desc()).limit(1)
            row = s.scalar(q)
            if row is None:
                raise TwinNotFoundError(f"no stored {kind.value} named {name!r}" + (f" with version {version}" if version is not None else ""))
            return _to_result(row)

    def results(self, kind: ResultKind | None = None) -> list[StoredResult]:
        """Stored results (of one kind), oldest first."""
        with Session(self.engine) as s:
            q = select(_ResultRow).order_by(_ResultRow.id)
            if kind is not None:
                q = q.where(_ResultRow.kind == kind.value)
            return [_to_result(r) for r in s.scalars(q)]

    @staticmethod
    def _aliases(s: Session, subject: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for a in s.scalars(select(_AliasRow).where(_AliasRow.subject == subject)):
            out.setdefault(a.version, []).append(a.name)
        return out


def _to_result(r: _ResultRow) -> StoredResult:
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)
    return StoredResult(ResultKind(r.kind), r.name, r.version, dict(r.payload), created)


def _to_version(r: _TwinRow, aliases: dict[int, list[str]]) -> TwinVersion:
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)
    return TwinVersion(
        subject=r.subject,
        version=r.version,
        rule=r.rule,
        spec=ModelSpec.from_dict(r.spec),
        hyperparameters=TwinHyperparameters.from_json(r.hyperparameters),
        trained_through_session=r.trained_through_session,
        data_hash=r.data_hash,
        code_version=r.code_version,
        metrics=TwinMetrics.from_json(r.metrics),
        weights_file=r.weights_file,
        weights_sha256=r.weights_sha256,
        created_at=created,
        aliases=tuple(sorted(aliases.get(r.version, []))),
    )


__all__ = ["InTransaction", "NewVersion", "ResultKind", "StoredResult", "Twin", "TwinStore", "TwinVersion", "TwinNotFoundError", "hash_trials", "code_version"]
