"""One ALF session's trials datasets: finding the files, loading them safely, merging them.

Trials datasets of one session (files in ``alf/``):

* ``_ibl_trials.table.pqt``: one parquet table, one row per trial. Real IBL tables lack some
  attributes that live in separate files (``_ibl_trials.stimOn_times.npy``...): every separate
  trials dataset present is merged with the table (a column present in both must agree);
* or only separate datasets ``_ibl_trials.<attribute>.npy`` (``contrastLeft``, ``contrastRight``,
  ``choice``, ``feedbackType``, ``probabilityLeft``, ...), arrays with one entry per trial.

File names follow ALF: ``[_<namespace>_]trials.<attribute>[.<extra>...].npy`` -- the namespace
(``_ibl_``) is optional, extra parts (e.g. a dataset UUID) are ignored. A revision sub-folder
``alf/#<revision>#/`` overrides, attribute by attribute, the files of older revisions and of
``alf/`` itself (the newest revision, in name order, wins, as ONE does by default; a revision
asked for caps it: that revision or the latest before it, as ONE's ``revision=`` does). When
``alf/`` holds no trials datasets but exactly one task collection ``alf/task_NN/`` does (what
current iblrig writes), that collection is read; a collection can also be named
(``alf/task_01``). Two-dimensional datasets (``intervals``) are length-checked but not used. Arrays are loaded
with ``allow_pickle=False``: a file that would need unpickling is refused, never unpickled.

Each session is converted by :func:`twin.data.ibl.alf_frame_to_trials` (:func:`convert_session`).
Errors name the file at fault (or the session folder) and, for values, the 1-based trial and the
attribute.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError
from twin.data.alf_sessions import AlfLayout, AlfSession
from twin.data.convert import read_table
from twin.data.ibl import ALF_REQUIRED, alf_frame_to_trials
from twin.data.trials import IngestReport

#: ALF attributes handed to the conversion besides :data:`twin.data.ibl.ALF_REQUIRED`.
ALF_OPTIONAL: tuple[str, ...] = ("stimOn_times", "firstMovement_times")

_REVISION_RE = re.compile(r"#[^#/]+#")
_TASK_RE = re.compile(r"task_\d+")
_TRIALS_FILE_RE = re.compile(
    r"(?:_(?P<namespace>[A-Za-z0-9]+)_)?trials\.(?P<attribute>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*)"
    r"(?P<extra>(?:\.[A-Za-z0-9-]+)*)\.(?P<ext>npy|pqt|parquet)"
)
_TABLE = "table"


@dataclass(frozen=True)
class RawSession:
    """A session's raw ALF columns before conversion.

    Attributes:
        session: where it was found.
        where: the collection read (``alf/`` or ``alf/task_NN``).
        raw: the raw ALF columns, one row per trial.
        origin: the file each column came from (errors cite it).
        layout: which datasets it came from.
        files: the files read.
        digest: hash of the required columns (finds identical trials in two folders).
    """

    session: AlfSession
    where: Path
    raw: pd.DataFrame = field(repr=False)
    origin: Mapping[str, Path] = field(repr=False)
    layout: AlfLayout
    files: tuple[Path, ...]
    digest: str


def _trials_files(folder: Path, revision: str | None = None) -> dict[str, tuple[str, Path]]:
    """``{attribute: (revision, file)}`` of the trials datasets directly in ``folder`` and its
    revision sub-folders, the newest revision of each attribute (up to ``revision``) winning."""
    layers = [("", folder)] + [
        (d.name.strip("#"), d)
        for d in sorted(folder.iterdir())
        if d.is_dir() and _REVISION_RE.fullmatch(d.name) and (revision is None or d.name.strip("#") <= revision)
    ]
    chosen: dict[str, tuple[str, Path]] = {}
    for rev, layer in layers:  # in increasing revision order
        found: dict[str, list[Path]] = {}
        for f in sorted(layer.iterdir()):
            m = _TRIALS_FILE_RE.fullmatch(f.name)
            if m is None or not f.is_file():
                continue
            attr, is_table = m["attribute"], m["ext"] != "npy"
            if is_table != (attr == _TABLE):
                continue  # a non-table parquet or a table.npy: not a trials dataset we know
            found.setdefault(attr, []).append(f)
        for attr, files in found.items():
            if len(files) > 1:
                names = ", ".join(f.name for f in files)
                raise TrialDataError(
                    f"several files hold trials attribute {attr!r} ({names}); keep one", source=str(layer)
                )
            chosen[attr] = (rev, files[0])
    return chosen


def _load_npy(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise TrialDataError(f"cannot read the array: {exc}", source=str(path)) from None
    if magic != b"\x93NUMPY":
        raise TrialDataError("cannot read the array: not an .npy file (no NumPy header)", source=str(path))
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TrialDataError(
                "the array holds Python objects and could only be read by unpickling it, which is refused "
                "(save it as a plain numeric array)",
                source=str(path),
            ) from None
        raise TrialDataError(f"cannot read the array: {exc}", source=str(path)) from None
    except (OSError, EOFError) as exc:
        raise TrialDataError(f"cannot read the array: {exc}", source=str(path)) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive saved under .npy
        raise TrialDataError("not a single .npy array", source=str(path))
    if arr.ndim == 0:
        raise TrialDataError("a scalar, not one value per trial", source=str(path))
    return arr


def merge_datasets(
    where: Path,
    table: pd.DataFrame | None,
    table_path: Path | None,
    arrays: Mapping[str, np.ndarray],
    origin: Mapping[str, Path],
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """One raw table from the trials table and the separate attribute arrays.

    Checks: every dataset has one entry per trial, a column present in the table and as an
    array agrees, and the required attributes are there.
    """
    lengths = {a: len(v) for a, v in arrays.items()}
    if table is not None:
        n = len(table)
        ref = f"{table_path.name if table_path is not None else 'the table'} has"
    else:
        counts = pd.Series(list(lengths.values())).value_counts()
        top = counts[counts == counts.max()].index.tolist()
        n = lengths["choice"] if "choice" in lengths and lengths["choice"] in top else int(top[0])
        ref = "the other trials datasets have"
    for attr in sorted(arrays, key=lambda a: str(origin[a])):
        if lengths[attr] != n:
            raise TrialDataError(
                f"trials attribute {attr!r} has {lengths[attr]} entries but {ref} {n}: arrays of unequal length",
                source=str(origin[attr]),
                column=attr,
            )
    raw = pd.DataFrame(index=pd.RangeIndex(n)) if table is None else table.reset_index(drop=True).copy()
    where_from: dict[str, Path] = {}
    if table is not None and table_path is not None:
        where_from.update(dict.fromkeys(map(str, raw.columns), table_path))
    for attr, arr in arrays.items():
        if arr.ndim != 1:
            continue
        if attr in raw.columns:
            col = raw[attr].to_numpy()
            same = col.shape == arr.shape and (
                np.array_equal(col.astype(float), arr.astype(float), equal_nan=True)
                if np.issubdtype(arr.dtype, np.number) and pd.api.types.is_numeric_dtype(raw[attr].dtype)
                else bool((col == arr).all())
            )
            if not same:
                other = table_path.name if table_path is not None else "the table"
                raise TrialDataError(
                    f"trials attribute {attr!r} disagrees with column {attr!r} of {other}", source=str(origin[attr]), column=attr
                )
            continue
        raw[attr] = arr
        where_from[attr] = origin[attr]
    missing = [a for a in ALF_REQUIRED if a not in raw.columns]
    if missing:
        present = sorted(map(str, raw.columns))
        raise TrialDataError(
            f"missing required trials attribute(s) {missing}: no _ibl_trials.<attribute>.npy file and no such "
            f"column in a trials table; present: {present}",
            source=str(where),
            column=missing[0],
        )
    return raw, where_from


def trials_digest(raw: pd.DataFrame) -> str:
    h = hashlib.sha1(str(len(raw)).encode())
    for c in ALF_REQUIRED:
        h.update(np.ascontiguousarray(pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)).tobytes())
    return h.hexdigest()


def is_trials_collection(name: str) -> bool:
    """Whether a collection (``alf``, ``alf/task_00``) is one a session's trials live in."""
    return name == "alf" or (name.startswith("alf/") and _TASK_RE.fullmatch(name[4:]) is not None)


def choose_collection(collections: list[str], asked: str | None, source: str) -> str:
    """The trials collection to read among those holding trials datasets.

    ``asked`` when given (it must hold trials); else ``alf``, else the single ``alf/task_NN``.

    Raises:
        TrialDataError: none holds trials, the one asked for does not, or several task
            collections do and none was asked for.
    """
    if asked is not None:
        asked = asked.strip("/")
        if asked not in collections:
            raise TrialDataError(f"no trials datasets in collection {asked!r}; collections with trials: {collections}", source=source)
        return asked
    if "alf" in collections:
        return "alf"
    if len(collections) == 1:
        return collections[0]
    if collections:
        raise TrialDataError(
            f"trials in several task collections {collections}; name one (collection='alf/task_00', --collection)", source=source
        )
    raise TrialDataError("no trials datasets (_ibl_trials.table.pqt or _ibl_trials.<attribute>.npy) in this folder", source=source)


def _alf_folder(session: AlfSession, collection: str | None, revision: str | None) -> Path:
    """The collection holding the session's trials: ``alf/`` or a ``task_NN`` folder in it."""
    alf = session.path / "alf"
    if not alf.is_dir():
        raise TrialDataError("no alf folder, so no trials datasets", source=str(session.path))
    found = ["alf"] if _trials_files(alf, revision) else []
    found += [f"alf/{d.name}" for d in sorted(alf.iterdir()) if d.is_dir() and _TASK_RE.fullmatch(d.name) and _trials_files(d, revision)]
    return session.path / choose_collection(found, collection, str(alf))


def read_session_folder(session: AlfSession, collection: str | None = None, revision: str | None = None) -> RawSession:
    """A session's raw trials from its folder.

    Args:
        session: the session found.
        collection: the collection to read (``alf``, ``alf/task_00``); default: see
            :func:`choose_collection`.
        revision: read this revision (or the latest before it) instead of the newest.
    """
    where = _alf_folder(session, collection, revision)
    files = _trials_files(where, revision)
    table_path = files.pop(_TABLE)[1] if _TABLE in files else None
    table = read_table(table_path, str(table_path)) if table_path is not None else None
    arrays = {attr: _load_npy(path) for attr, (_, path) in files.items()}
    origin = {attr: path for attr, (_, path) in files.items()}
    raw, where_from = merge_datasets(where, table, table_path, arrays, origin)
    if table is None:
        layout = AlfLayout.NPY
    else:
        layout = AlfLayout.TABLE_AND_NPY if arrays else AlfLayout.TABLE
    read = ([table_path] if table_path is not None else []) + sorted(origin.values())
    return RawSession(
        session=session, where=where, raw=raw, origin=where_from, layout=layout, files=tuple(read), digest=trials_digest(raw)
    )


def convert_session(rs: RawSession) -> tuple[pd.DataFrame, IngestReport]:
    """Canonical trials of one session; errors moved to the file that holds the bad value."""
    cols = [c for c in (*ALF_REQUIRED, *ALF_OPTIONAL) if c in rs.raw.columns]
    try:
        return alf_frame_to_trials(rs.raw[cols], str(rs.where), subject=rs.session.subject, session=rs.session.label)
    except TrialDataError as exc:
        path = rs.origin.get(exc.column) if exc.column is not None else None
        if path is None:
            raise
        raise TrialDataError(exc.reason, source=str(path), row=exc.row, column=exc.column) from exc
