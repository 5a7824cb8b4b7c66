"""One entry point for trial files: detect the layout, read, validate, normalise.

Layouts recognised from the columns present:

* canonical (``subject``, ``session``, ``trial``, ``contrast_left``, ...: see :mod:`twin.data.trials`);
* IBL ALF trials tables (``contrastLeft``, ``contrastRight``, ``choice``, ``feedbackType``, ...);
* the IBL 53-mouse export (``response_choice``, ``position``, ``trial_correct``, ...).

Files may be parquet (``.pqt``, ``.parquet``) or CSV (optionally gzipped). A folder is read as a
tree of ALF session folders (:func:`twin.data.alf.read_alf_dir`; a ONE cache is one), and an ``.npz``
as named-stimulus data in PsyTrack's layout (:func:`twin.data.generic.read_named_stimuli`). Canonical
tables keep their named-stimulus columns ``stim_<name>`` (see :mod:`twin.data.generic`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from twin.errors import TrialDataError
from twin.data.trials import REQUIRED_COLUMNS, IngestReport, validate_trials

PARQUET_SUFFIXES = (".pqt", ".parquet")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TrialDataError("no such file", source=str(path))
    try:
        if path.suffix in PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError) as exc:  # pyarrow/pandas parse errors derive from these
        raise TrialDataError(f"cannot read table: {exc}", source=str(path)) from None


def _header(path: Path) -> list[str]:
    if path.suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def load_trials(path: str | Path) -> tuple[pd.DataFrame, IngestReport]:
    """Read any supported trials file (or ALF folder tree) into the canonical, validated table.

    Raises:
        TrialDataError: unreadable file, unknown layout, or invalid trials (file, row, column).
    """
    path = Path(path)
    if not path.exists():
        raise TrialDataError("no such file", source=str(path))
    if path.is_dir():
        from twin.data.alf import read_alf_dir

        return read_alf_dir(path)
    if path.suffix.lower() == ".npz":
        from twin.data.generic import read_named_stimuli

        return read_named_stimuli(path)
    try:
        cols = set(_header(path))
    except (ValueError, OSError) as exc:
        raise TrialDataError(f"cannot read table header: {exc}", source=str(path)) from None
    if {"response_choice", "position", "trial_correct"} <= cols:
        from twin.data.ibl import read_ibl_export

        return read_ibl_export(path)
    if {"contrastLeft", "contrastRight", "choice"} <= cols:
        from twin.data.ibl import read_alf_trials

        return read_alf_trials(path)
    if set(REQUIRED_COLUMNS) & cols:
        from twin.data.generic import check_stimulus_columns

        df = _read_table(path)
        out = validate_trials(df, source=str(path))
        stim = check_stimulus_columns(df, source=str(path))
        for col in stim.columns:  # validate_trials keeps only the IBL columns
            out[col] = stim[col].to_numpy()
        return out, IngestReport(source=str(path), n_rows=len(df))
    raise TrialDataError(
        f"unrecognised table layout; expected canonical columns {list(REQUIRED_COLUMNS)}, IBL ALF columns "
        f"(contrastLeft, contrastRight, choice, feedbackType, ...) or the IBL export columns; found {sorted(cols)}",
        source=str(path),
    )


def write_trials(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical trials table as parquet or CSV (by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in PARQUET_SUFFIXES:
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path
