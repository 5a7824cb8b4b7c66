"""One entry point for trial files: a registry of input layouts, each with its reader.

Every layout has a :class:`TrialReader` registered under a name (as learning rules are in
:mod:`twin.models.rules.registry`); :func:`load_trials` finds the layout of a file from its kind
and columns (:func:`detect_reader`), or takes the one named, and reads it. Built-in layouts, in
detection order:

* ``alf_dir``: a folder, read as a tree of ALF session folders (a ONE cache is one):
  :func:`twin.data.alf.read_alf_dir`;
* ``named_stimuli``: an ``.npz``, named-stimulus data in PsyTrack's layout:
  :func:`twin.data.generic.read_named_stimuli`;
* ``ibl_export``: the IBL 53-mouse export (``response_choice``, ``position``, ``trial_correct``,
  ...): :func:`twin.data.ibl.read_ibl_export`;
* ``alf_table``: IBL ALF trials tables (``contrastLeft``, ``contrastRight``, ``choice``, ...):
  :func:`twin.data.ibl.read_alf_trials`;
* ``canonical``: canonical tables (``subject``, ``session``, ``trial``, ``contrast_left``, ...: see
  :mod:`twin.data.trials`), keeping their named-stimulus columns ``stim_<name>`` (see
  :mod:`twin.data.generic`); sessions or trials counted from 0 are renumbered from 1, a 0-based
  session number staying the session's label;
* ``one_cache`` (never detected, only named): a ONE cache read through ONE,
  :func:`twin.data.alf.read_one_cache`.

Tables may be parquet (``.pqt``, ``.parquet``) or CSV (optionally gzipped). Whatever the layout,
the result went through the same normalise/validate step (:func:`twin.data.convert.finish_trials`
and :func:`twin.data.trials.validate_trials`), so errors name the file, row and column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError
from twin.data.alf import read_alf_dir, read_one_cache
from twin.data.convert import is_parquet, read_table, table_columns
from twin.data.generic import check_stimulus_columns, read_named_stimuli
from twin.data.ibl import ALF_REQUIRED, read_alf_trials, read_ibl_export
from twin.data.trials import REQUIRED_COLUMNS, IngestReport, validate_trials

#: what a reader returns: the validated canonical table and what was done reading it.
ReadResult = tuple[pd.DataFrame, IngestReport]


@dataclass(frozen=True)
class TrialReader:
    """One input layout and how to read it.

    Attributes:
        name: the name it is registered under.
        read: reads a file (or folder) of this layout into the validated canonical table.
        matches: whether a path is in this layout, given its table columns (None for a folder or
            an archive, whose columns are not read); a reader that is only ever named returns False.
    """

    name: str
    read: Callable[[Path], ReadResult]
    matches: Callable[[Path, frozenset[str] | None], bool]


_READERS: dict[str, TrialReader] = {}


def register_reader(reader: TrialReader) -> TrialReader:
    """Make a layout available under ``reader.name`` (detection tries readers in registration order).

    Raises:
        ValueError: another reader holds the name.
    """
    if reader.name in _READERS and _READERS[reader.name] is not reader:
        raise ValueError(f"trials layout {reader.name!r} is already registered")
    _READERS[reader.name] = reader
    return reader


def reader_names() -> tuple[str, ...]:
    """Registered layout names, in detection order."""
    return tuple(_READERS)


def get_reader(name: str) -> TrialReader:
    """The reader registered under ``name``.

    Raises:
        ValueError: naming the known layouts.
    """
    try:
        return _READERS[name]
    except KeyError:
        raise ValueError(f"unknown trials layout {name!r}; known layouts: {', '.join(reader_names())}") from None


def detect_reader(path: Path) -> TrialReader:
    """The first registered reader whose layout ``path`` is in (a folder, an archive, or by columns).

    Raises:
        TrialDataError: the table header cannot be read, or no layout matches.
    """
    columns: frozenset[str] | None = None
    if not path.is_dir() and path.suffix.lower() != ".npz":
        try:
            columns = frozenset(table_columns(path))
        except (ValueError, OSError) as exc:
            raise TrialDataError(f"cannot read table header: {exc}", source=str(path)) from None
    for reader in _READERS.values():
        if reader.matches(path, columns):
            return reader
    raise TrialDataError(
        f"unrecognised table layout; expected canonical columns {list(REQUIRED_COLUMNS)}, IBL ALF columns "
        f"(contrastLeft, contrastRight, choice, feedbackType, ...) or the IBL export columns; "
        f"found {sorted(columns or ())}",
        source=str(path),
    )


def load_trials(path: str | Path, layout: str | None = None) -> ReadResult:
    """Read any supported trials file (or ALF folder tree) into the canonical, validated table.

    Args:
        path: the file or folder.
        layout: a registered layout name (:func:`reader_names`); detected from the file when None.

    Raises:
        TrialDataError: unreadable file, unknown layout, or invalid trials (file, row, column).
        ValueError: ``layout`` is not a registered name.
    """
    path = Path(path)
    reader = get_reader(layout) if layout is not None else None
    if not path.exists():
        raise TrialDataError("no such file", source=str(path))
    return (reader or detect_reader(path)).read(path)


def read_canonical(path: Path) -> ReadResult:
    """Read a canonical trials table, keeping its ``stim_<name>`` columns (validated too)."""
    source = str(path)
    df = _from_zero_based(read_table(path, source))
    out = validate_trials(df, source=source)
    stim = check_stimulus_columns(df, source=source)
    for col in stim.columns:  # validate_trials keeps only the IBL columns
        out[col] = stim[col].to_numpy()
    return out, IngestReport(source=source, n_rows=len(df))


def _from_zero_based(df: pd.DataFrame) -> pd.DataFrame:
    """A canonical table whose sessions or trials count from 0 (as ALF and IBL count them),
    renumbered from 1; 0-based session numbers stay the sessions' labels (``session_label``)."""
    out = df
    for col in ("session", "trial"):
        if col not in df.columns:
            continue
        vals = pd.to_numeric(df[col], errors="coerce")
        if col == "trial":
            keys = [c for c in ("subject", "session") if c in df.columns]
            starts = vals.groupby([df[k] for k in keys], sort=False).transform("min") if keys else vals.min()
            zero = (starts == 0).to_numpy()
        else:
            zero = np.full(len(df), bool((vals == 0).any()))
        if zero.any():
            out = out.copy() if out is df else out
            if col == "session" and "session_label" not in out.columns:
                out["session_label"] = vals.map(lambda v: str(int(v)) if pd.notna(v) and float(v).is_integer() else str(v))
            out[col] = np.where(zero, vals + 1, vals)
    return out


def write_trials(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical trials table as parquet or CSV (by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_parquet(path):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


_EXPORT_COLUMNS = frozenset({"response_choice", "position", "trial_correct"})
_ALF_COLUMNS = frozenset(ALF_REQUIRED[:3])  # contrastLeft, contrastRight, choice

register_reader(TrialReader("alf_dir", read_alf_dir, lambda path, cols: path.is_dir()))
register_reader(TrialReader("named_stimuli", read_named_stimuli, lambda path, cols: path.suffix.lower() == ".npz"))
register_reader(TrialReader("ibl_export", read_ibl_export, lambda path, cols: cols is not None and _EXPORT_COLUMNS <= cols))
register_reader(TrialReader("alf_table", read_alf_trials, lambda path, cols: cols is not None and _ALF_COLUMNS <= cols))
register_reader(
    TrialReader("canonical", read_canonical, lambda path, cols: cols is not None and bool(set(REQUIRED_COLUMNS) & cols))
)
register_reader(TrialReader("one_cache", read_one_cache, lambda path, cols: False))
