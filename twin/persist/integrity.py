"""Checking a twin store end to end, and repairing what can be repaired safely.

:func:`verify_store` reads every row and the file it names: twin versions (the file's SHA-256,
then a full load: rule present, spec and state consistent), shared rules (SHA-256), stored
sessions (the parquet file's trials against the row's ``data_hash``), aliases (pointing at a
stored version), cohorts (each cohort fit's ``serving`` aliases switched all or none), and the
files nothing names: orphans a killed writer left (written before its row) and temporary files
of an interrupted atomic write. Leftover files younger than ``min_age_s`` may belong to a writer
still running and are only counted.

:func:`repair` removes leftover files and rolls a half-switched cohort forward (its lagging
``serving`` aliases move to the cohort's versions, in one transaction); damaged versions and
sessions are reported, never deleted: that takes an operator.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from twin.errors import ModelFileError
from twin.persist.sessions import _SessionRow
from twin.persist.store import TwinStore, hash_trials
from twin.persist.tables import _AliasRow, _RuleRow, _sha256, _TwinRow

#: Folders of the store that hold files named by rows.
STORED_FOLDERS = ("weights", "rules", "sessions")
SERVING = "serving"


class ProblemKind(enum.Enum):
    """What is wrong."""

    MISSING_FILE = "missing file"
    CHECKSUM_MISMATCH = "checksum mismatch"
    UNREADABLE = "unreadable"
    DANGLING_ALIAS = "dangling alias"
    HALF_SWITCHED_COHORT = "half-switched cohort"
    ORPHAN_FILE = "orphan file"
    TEMP_FILE = "temporary file"


#: Problems :func:`repair` fixes.
REPAIRABLE = frozenset({ProblemKind.ORPHAN_FILE, ProblemKind.TEMP_FILE, ProblemKind.HALF_SWITCHED_COHORT})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the store.

    Attributes:
        kind: what is wrong.
        what: where (a file relative to the store's root, ``subject vN``, a cohort id).
        detail: more on it.
        targets: for a half-switched cohort, the ``(subject, version)`` aliases that lag.
    """

    kind: ProblemKind
    what: str
    detail: str = ""
    targets: tuple[tuple[str, int], ...] = ()

    @property
    def repairable(self) -> bool:
        """True when :func:`repair` fixes it."""
        return self.kind in REPAIRABLE


@dataclass(frozen=True)
class StoreReport:
    """What :func:`verify_store` found.

    Attributes:
        twins: twin versions checked.
        rules: shared rules checked.
        sessions: stored sessions checked.
        problems: everything wrong.
        recent_leftovers: unnamed files younger than the age limit (not counted as problems).
    """

    twins: int = 0
    rules: int = 0
    sessions: int = 0
    problems: tuple[Problem, ...] = field(default=())
    recent_leftovers: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def lines(self) -> list[str]:
        """A plain report, one line per problem, then a summary."""
        out = [f"{p.kind.value}: {p.what}" + (f" ({p.detail})" if p.detail else "") for p in self.problems]
        verdict = "clean" if self.clean else f"{len(self.problems)} problem(s), {sum(p.repairable for p in self.problems)} repairable with --repair"
        recent = f"; {self.recent_leftovers} recent unnamed file(s) ignored (a writer may be running)" if self.recent_leftovers else ""
        out.append(f"checked {self.twins} twin versions, {self.rules} rules, {self.sessions} sessions: {verdict}{recent}")
        return out


def _file_problem(root: Path, rel: str, sha256: str | None, what: str) -> Problem | None:
    path = root / rel
    if not path.is_file():
        return Problem(ProblemKind.MISSING_FILE, rel, what)
    if sha256 is not None and _sha256(path) != sha256:
        return Problem(ProblemKind.CHECKSUM_MISMATCH, rel, what)
    return None


def _session_problem(root: Path, row: _SessionRow) -> Problem | None:
    what = f"session {row.session} of {row.subject!r}"
    missing = _file_problem(root, row.file, None, what)
    if missing is not None:
        return missing
    try:
        df = pd.read_parquet(root / row.file)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported as such
        return Problem(ProblemKind.UNREADABLE, row.file, f"{what}: {type(exc).__name__}")
    if hash_trials(df) != row.data_hash:
        return Problem(ProblemKind.CHECKSUM_MISMATCH, row.file, f"{what}: trials differ from the stored data_hash")
    return None


def _cohort_problems(twins: list[_TwinRow], serving: dict[str, int]) -> list[Problem]:
    """Each cohort fit's members serve its versions (or later ones) all, or none."""
    first: dict[str, dict[str, int]] = {}
    for r in twins:
        cohort = (r.hyperparameters or {}).get("cohort")
        if cohort:
            members = first.setdefault(str(cohort), {})
            members[r.subject] = min(members.get(r.subject, r.version), r.version)
    out = []
    for cohort, members in first.items():
        lagging = tuple(sorted((s, v) for s, v in members.items() if serving.get(s, 0) < v))
        if lagging and len(lagging) < len(members):
            out.append(Problem(ProblemKind.HALF_SWITCHED_COHORT, cohort, f"{len(members) - len(lagging)} of {len(members)} serving aliases switched", lagging))
    return out


def leftovers(store: TwinStore, min_age_s: float = 300.0) -> tuple[list[Problem], int]:
    """Files under the store's folders that no row names (orphans) and temporary files, older
    than ``min_age_s``; and how many younger ones there are."""
    with Session(store.engine) as s:
        named = set(s.scalars(select(_TwinRow.weights_file))) | set(s.scalars(select(_RuleRow.file)))
        if _SessionRow.__table__.name in _tables(store):  # type: ignore[attr-defined]
            named |= set(s.scalars(select(_SessionRow.file)))
    now = time.time()
    found, recent = [], 0
    for folder in STORED_FOLDERS:
        base = store.root / folder
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = path.relative_to(store.root).as_posix()
            temp = path.name.startswith(".tmp-")
            if rel in named and not temp:
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:  # a writer renamed or removed it meanwhile
                continue
            if age < min_age_s:
                recent += 1
                continue
            found.append(Problem(ProblemKind.TEMP_FILE if temp else ProblemKind.ORPHAN_FILE, rel))
    return found, recent


def _tables(store: TwinStore) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(store.engine).get_table_names())


def verify_store(store: TwinStore, min_age_s: float = 300.0) -> StoreReport:
    """Check every row of the store and the file it names, cohorts and leftover files."""
    problems: list[Problem] = []
    with Session(store.engine) as s:
        twins = list(s.scalars(select(_TwinRow).order_by(_TwinRow.subject, _TwinRow.version)))
        rules = list(s.scalars(select(_RuleRow)))
        aliases = list(s.scalars(select(_AliasRow)))
        sessions = list(s.scalars(select(_SessionRow).order_by(_SessionRow.subject, _SessionRow.session))) if "sessions" in _tables(store) else []
        s.expunge_all()
    for rule in rules:
        p = _file_problem(store.root, rule.file, rule.sha256, f"rule {rule.ref[:12]}")
        problems += [p] if p else []
    stored = {(r.subject, r.version) for r in twins}
    for r in twins:
        what = f"{r.subject!r} v{r.version}"
        p = _file_problem(store.root, r.weights_file, r.weights_sha256, f"twin {what}")
        if p is None:
            try:
                store.load_twin(r.subject, r.version)
            except ModelFileError as exc:
                p = Problem(ProblemKind.UNREADABLE, r.weights_file, f"twin {what}: {str(exc).replace(str(store.root), '<store>')}")
        problems += [p] if p else []
    for row in sessions:
        p = _session_problem(store.root, row)
        problems += [p] if p else []
    for a in aliases:
        if (a.subject, a.version) not in stored:
            problems.append(Problem(ProblemKind.DANGLING_ALIAS, f"{a.subject!r} {a.name}", f"points at missing v{a.version}"))
    problems += _cohort_problems(twins, {a.subject: a.version for a in aliases if a.name == SERVING})
    found, recent = leftovers(store, min_age_s)
    return StoreReport(len(twins), len(rules), len(sessions), tuple(problems + found), recent)


def remove_leftovers(store: TwinStore, min_age_s: float = 300.0) -> list[str]:
    """Remove the leftover files older than ``min_age_s``; returns them (relative paths)."""
    found, _ = leftovers(store, min_age_s)
    for p in found:
        (store.root / p.what).unlink(missing_ok=True)
    return [p.what for p in found]


def repair(store: TwinStore, report: StoreReport) -> list[Problem]:
    """Fix the repairable problems of ``report``; returns the ones fixed."""
    fixed = []
    for p in report.problems:
        if p.kind in (ProblemKind.ORPHAN_FILE, ProblemKind.TEMP_FILE):
            (store.root / p.what).unlink(missing_ok=True)
            fixed.append(p)
        elif p.kind is ProblemKind.HALF_SWITCHED_COHORT:
            with Session(store.engine) as s, s.begin():
                for subject, version in p.targets:
                    store._set_alias(s, subject, SERVING, version)
            fixed.append(p)
    return fixed


__all__ = ["Problem", "ProblemKind", "REPAIRABLE", "StoreReport", "leftovers", "remove_leftovers", "repair", "verify_store"]
