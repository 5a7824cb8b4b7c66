"""Trials of tasks whose stimuli are not IBL contrasts: "named stimulus inputs".

A two-alternative task where each trial has a choice, a correct side and a few numeric stimulus
values (the Akrami rat's two tones ``s_a`` and ``s_b``, say) maps onto the canonical trials table
of :mod:`twin.data.trials` plus one column ``stim_<name>`` per stimulus:

* ``choice``, ``correct_side`` (1 = right, 0 = left) and ``feedback`` (+1 when the choice is the
  correct side) as usual;
* ``contrast_left = contrast_right = 0`` (there is no visual stimulus) and ``prob_left = 0.5``
  (no block prior);
* ``stim_<name>``: the stimulus values, finite floats, taken as they are.

The core fits it with ``FeatureSpec(stimuli=(<name>, ...))``: the named stimuli replace the
contrast features, each with its own weight (:mod:`twin.data.features`). Parts of the core that are
about IBL contrasts (the task environment, curricula, Δw maps over contrast) do not apply.

Sources: an ``.npz`` archive (PsyTrack's data format flattened to plain arrays: ``y``,
``answer``, ``dayLength``, ``inputs_<name>`` of shape ``[n]`` or ``[n, lags]``) or a table (CSV or
parquet) with one row per trial. :class:`NamedStimulusLayout` says which key holds what;
:data:`PSYTRACK_RAT_LAYOUT` describes the shared rat file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin.errors import TrialDataError
from twin.data.convert import finish_trials, raise_first, read_table
from twin.data.features import STIMULUS_COLUMN_PREFIX, FeatureSpec
from twin.data.paths import shared_data_dir
from twin.data.trials import IngestReport, plain

#: file name of the Akrami-lab rat under ``<shared data>/ibl``.
PSYTRACK_RAT_FILENAME = "psytrack_rat_W053_Akrami.npz"


@dataclass(frozen=True)
class StimulusInput:
    """One named stimulus.

    Attributes:
        name: its name in the model (feature ``name``, table column ``stim_<name>``).
        key: the source's column or npz key.
        lag_column: for a 2-D npz array ``[n, lags]``, the column of the current trial.
    """

    name: str
    key: str
    lag_column: int = 0


@dataclass(frozen=True)
class SideCodes:
    """The source's codes for the two sides (of the choice and of the correct answer).

    Attributes:
        left: code of a left choice / left answer.
        right: code of a right choice / right answer.
    """

    left: float
    right: float


@dataclass(frozen=True)
class NamedStimulusLayout:
    """Where a named-stimulus source keeps each part of a trial.

    Attributes:
        stimuli: the stimuli to read.
        choice: choice column/key.
        answer: correct-side column/key.
        codes: side codes of ``choice`` and ``answer``.
        nogo: choice code of a trial without a response (dropped and counted), if any.
        correct: optional 0/1 column/key cross-checked against ``choice == answer``.
        session: per-trial session key column/key (sessions ordered by first appearance).
        session_lengths: key/column holding the trials per session, in order (npz).
        subject: column/key of the subject name (a 0-d string in an npz).
    """

    stimuli: tuple[StimulusInput, ...]
    choice: str = "y"
    answer: str = "answer"
    codes: SideCodes = field(default_factory=lambda: SideCodes(left=1, right=2))
    nogo: float | None = None
    correct: str | None = None
    session: str | None = None
    session_lengths: str | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        if not self.stimuli:
            raise ValueError("a named-stimulus layout needs at least one stimulus")
        FeatureSpec(stimuli=tuple(s.name for s in self.stimuli))  # validates the names
        if self.session is not None and self.session_lengths is not None:
            raise ValueError("give session or session_lengths, not both")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The stimulus names, for ``FeatureSpec(stimuli=...)``."""
        return tuple(s.name for s in self.stimuli)


#: the shared rat file (PsyTrack's ``sampleRatData``): ``y``/``answer`` 1 = left, 2 = right,
#: tones ``inputs_s1``/``inputs_s2`` (column 0 = current trial) as ``s_a``/``s_b``, sessions from
#: ``dayLength``, subject from ``name``, ``correct`` cross-checked.
PSYTRACK_RAT_LAYOUT = NamedStimulusLayout(
    stimuli=(StimulusInput("s_a", "inputs_s1"), StimulusInput("s_b", "inputs_s2")),
    choice="y",
    answer="answer",
    codes=SideCodes(left=1, right=2),
    correct="correct",
    session_lengths="dayLength",
    subject="name",
)


def default_rat_path() -> Path:
    """Path of the Akrami-lab rat file in the shared data folder.

    Raises:
        FileNotFoundError: when the shared data folder cannot be found.
    """
    return shared_data_dir() / "ibl" / PSYTRACK_RAT_FILENAME


def stimulus_names(df: pd.DataFrame) -> tuple[str, ...]:
    """Names of the named-stimulus columns (``stim_<name>``) of a table, in column order."""
    n = len(STIMULUS_COLUMN_PREFIX)
    return tuple(str(c)[n:] for c in df.columns if str(c).startswith(STIMULUS_COLUMN_PREFIX) and len(str(c)) > n)


def feature_spec_for(df: pd.DataFrame, bias: bool = True, history: bool = False) -> FeatureSpec:
    """The :class:`~twin.data.features.FeatureSpec` using every named stimulus of ``df``.

    Raises:
        ValueError: the table has no ``stim_<name>`` column.
    """
    names = stimulus_names(df)
    if not names:
        raise ValueError(f"no named stimulus columns ({STIMULUS_COLUMN_PREFIX}<name>) in the table")
    return FeatureSpec(bias=bias, history=history, stimuli=names)


def check_stimulus_columns(df: pd.DataFrame, source: str, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The ``stim_<name>`` columns of ``df`` as floats, every value finite.

    Args:
        df: table with ``stim_<name>`` columns.
        source: for errors.
        rows: ``[n]`` 1-based source rows of ``df``'s rows (defaults to 1..n).

    Returns:
        A frame with just those columns (float64), ``df``'s index.

    Raises:
        TrialDataError: naming the row and column of a missing or non-numeric value.
    """
    rows = np.arange(1, len(df) + 1) if rows is None else np.asarray(rows)
    out = {}
    for name in stimulus_names(df):
        col = STIMULUS_COLUMN_PREFIX + name
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            more = f" ({bad.size - 1} more row(s) like it)" if bad.size > 1 else ""
            value = df[col].to_numpy(dtype=object)[bad[0]]
            raise TrialDataError(
                f"stimulus value is not a finite number: {plain(value)}{more}", source=source, row=int(rows[bad[0]]), column=col
            )
        out[col] = vals
    return pd.DataFrame(out, index=df.index)


# --------------------------------------------------------------------------------------------
# the conversion


def _as_float(values: object, source: str, column: str, rows: np.ndarray) -> np.ndarray:
    s = pd.Series(np.asarray(values).ravel() if np.ndim(values) else [values])
    vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    raise_first(np.isnan(vals) & s.notna().to_numpy(), rows, source, column, "not a number: {v}", s.to_numpy(dtype=object))
    return vals


def named_stimulus_trials(
    columns: Mapping[str, np.ndarray],
    layout: NamedStimulusLayout,
    source: str,
    subject: np.ndarray,
    session_keys: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[pd.DataFrame, IngestReport]:
    """Convert named-stimulus arrays into the canonical table with ``stim_<name>`` columns.

    Args:
        columns: ``{key: [n] array}`` for the layout's choice, answer, correct and stimulus keys
            (stimuli already reduced to the current trial).
        layout: which key is which.
        source: file name for errors.
        subject: ``[n]`` subject per trial.
        session_keys: ``[n]`` session key per trial (strings); rows of a subject and session
            need not be contiguous: sessions are ordered by first appearance, trials keep order.
        rows: ``[n]`` 1-based source rows (defaults to 1..n).

    Returns:
        The validated table and an ingest report (no-go trials dropped per subject).

    Raises:
        TrialDataError: naming the source, row and column of the first problem.
    """
    n = len(subject)
    rows = np.arange(1, n + 1) if rows is None else np.asarray(rows)
    if n == 0:
        raise TrialDataError("no trials", source=source)
    codes = layout.codes
    choice_raw = _as_float(columns[layout.choice], source, layout.choice, rows)
    allowed = [codes.left, codes.right] + ([] if layout.nogo is None else [layout.nogo])
    reason = f"unknown choice code {{v}}; expected {codes.left} (left), {codes.right} (right)"
    reason += "" if layout.nogo is None else f" or {layout.nogo} (no response)"
    raise_first(~np.isin(choice_raw, allowed), rows, source, layout.choice, reason, choice_raw)
    answer_raw = _as_float(columns[layout.answer], source, layout.answer, rows)
    reason = f"unknown correct-side code {{v}}; expected {codes.left} (left) or {codes.right} (right)"
    raise_first(~np.isin(answer_raw, [codes.left, codes.right]), rows, source, layout.answer, reason, answer_raw)
    go = choice_raw != layout.nogo if layout.nogo is not None else np.ones(n, bool)
    choice = (choice_raw == codes.right).astype(np.int64)
    side = (answer_raw == codes.right).astype(np.int64)
    if layout.correct is not None:
        corr = _as_float(columns[layout.correct], source, layout.correct, rows)
        raise_first(~np.isin(corr, (0, 1)), rows, source, layout.correct, "unknown code {v}; expected 1 or 0", corr)
        bad = go & ((corr == 1) != (choice == side))
        raise_first(bad, rows, source, layout.correct, f"does not match {layout.choice} == {layout.answer}")
    stim: dict[str, np.ndarray] = {}
    for s in layout.stimuli:
        v = _as_float(columns[s.key], source, s.key, rows)
        raise_first(~np.isfinite(v), rows, source, s.key, "stimulus value is not a finite number: {v}", v)
        stim[STIMULUS_COLUMN_PREFIX + s.name] = v

    # order: subjects and sessions by first appearance, trials in source order
    subj = np.asarray(subject, dtype=object)
    labels = np.asarray(session_keys, dtype=object)
    subj_code = pd.factorize(subj)[0]
    sess_code = pd.DataFrame({"s": subj, "k": labels}).groupby(["s", "k"], sort=False).ngroup().to_numpy()
    order = np.lexsort((np.arange(n), sess_code, subj_code))
    subj, labels, rows, subj_code, sess_code, go, choice, side = (
        a[order] for a in (subj, labels, rows, subj_code, sess_code, go, choice, side)
    )
    stim = {k: v[order] for k, v in stim.items()}
    new_sess = np.r_[True, sess_code[1:] != sess_code[:-1]]
    canon = {
        "contrast_left": np.zeros(n),
        "contrast_right": np.zeros(n),
        "choice": choice,
        "feedback": np.where(choice == side, 1, -1),
        "correct_side": side,
        "prob_left": np.full(n, 0.5),
    }
    colmap = {"choice": layout.choice, "correct_side": layout.answer, "feedback": layout.correct or layout.choice}
    session_column = layout.session or layout.session_lengths or "session"
    return finish_trials(
        source=source,
        n_rows=n,
        subj=subj,
        subj_code=subj_code,
        new_sess=new_sess,
        rows=rows,
        go=go,
        columns=canon,
        colmap=colmap,
        session_column=session_column,
        labels=labels,
        extra=stim,
    )


# --------------------------------------------------------------------------------------------
# readers


def _npz_arrays(path: Path, layout: NamedStimulusLayout, source: str) -> tuple[dict[str, np.ndarray], str | None, np.ndarray | None]:
    """The layout's arrays from an npz (stimuli reduced to the current trial), subject, lengths."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise TrialDataError(f"cannot read the archive: {exc}", source=source) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise TrialDataError("not an .npz archive", source=source)
    with archive:
        keys = list(archive.files)

        def get(key: str) -> np.ndarray:
            if key not in keys:
                raise TrialDataError(f"missing key {key!r}; keys present: {keys}", source=source, column=key)
            try:
                return archive[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    raise TrialDataError(
                        "this array holds Python objects and could only be read by unpickling it, which is refused "
                        "(store plain arrays: PsyTrack's pickled dict must be flattened first)",
                        source=source,
                        column=key,
                    ) from None
                raise TrialDataError(f"cannot read the array: {exc}", source=source, column=key) from None

        arrays: dict[str, np.ndarray] = {}
        for key in (layout.choice, layout.answer, *([layout.correct] if layout.correct else [])):
            a = get(key)
            if a.ndim != 1:
                raise TrialDataError(f"expected one value per trial (1-D), got shape {a.shape}", source=source, column=key)
            arrays[key] = a
        n = len(arrays[layout.choice])
        for s in layout.stimuli:
            a = get(s.key)
            if a.ndim == 2 and 0 <= s.lag_column < a.shape[1]:
                a = a[:, s.lag_column]
            elif a.ndim != 1 or s.lag_column != 0:
                raise TrialDataError(
                    f"expected shape ({n},) or ({n}, lags > {s.lag_column}), got {a.shape}", source=source, column=s.key
                )
            arrays[s.key] = a
        for key, a in arrays.items():
            if len(a) != n:
                raise TrialDataError(f"{len(a)} values but {layout.choice!r} has {n}", source=source, column=key)
        subject = None
        if layout.subject is not None and layout.subject in keys:
            name = get(layout.subject)
            subject = str(name.item() if name.ndim == 0 else name.ravel()[0])
        lengths = get(layout.session_lengths) if layout.session_lengths is not None else None
        if layout.session is not None:
            arrays[layout.session] = get(layout.session)
    return arrays, subject, lengths


def read_named_stimuli(
    path: str | Path, layout: NamedStimulusLayout = PSYTRACK_RAT_LAYOUT, subject: str | None = None
) -> tuple[pd.DataFrame, IngestReport]:
    """Read a named-stimulus source (``.npz``, parquet or CSV) into the canonical table.

    Sessions come from ``layout.session_lengths`` (consecutive runs of trials), or from the
    ``layout.session`` key per trial, else the whole source is one session. The subject is
    ``subject`` when given (for a table with a subject column: the subject to select), else
    read from ``layout.subject``.

    Args:
        path: the file.
        layout: where each part of a trial is.
        subject: see above.

    Returns:
        The validated canonical table with ``stim_<name>`` columns, and an ingest report.

    Raises:
        FileNotFoundError: no such file.
        TrialDataError: naming the file, the 1-based trial (row) and the key/column at fault;
            an array that would need unpickling is refused.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file")
    if path.suffix.lower() == ".npz":
        arrays, file_subject, lengths = _npz_arrays(path, layout, source)
        n = len(arrays[layout.choice])
        rows = np.arange(1, n + 1)
        name = subject if subject is not None else file_subject
        if name is None:
            raise TrialDataError("no subject name in the file: pass subject=", source=source, column=layout.subject)
        subj = np.full(n, name, dtype=object)
        if lengths is not None:
            key = str(layout.session_lengths)
            lv = _as_float(lengths, source, key, np.arange(1, np.size(lengths) + 1))
            bad = ~np.isfinite(lv) | (lv < 1) | (lv != np.round(lv))
            raise_first(bad, np.arange(1, len(lv) + 1), source, key, "session length must be a positive integer, got {v}", lv)
            if int(lv.sum()) != n:
                raise TrialDataError(f"session lengths add up to {int(lv.sum())} trials but there are {n}", source=source, column=key)
            labels = np.repeat(np.arange(1, len(lv) + 1), lv.astype(np.int64)).astype(str).astype(object)
        elif layout.session is not None:
            labels = np.asarray(arrays[layout.session]).astype(str).astype(object)
        else:
            labels = np.full(n, "1", dtype=object)
        return named_stimulus_trials(arrays, layout, source, subj, labels, rows)

    raw = read_table(path, source)
    needed = [layout.choice, layout.answer, *([layout.correct] if layout.correct else []), *(s.key for s in layout.stimuli)]
    if layout.session is not None:
        needed.append(layout.session)
    if layout.subject is not None and subject is None:
        needed.append(layout.subject)
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise TrialDataError(f"missing column(s) {missing}; present: {list(map(str, raw.columns))}", source=source, column=missing[0])
    rows = np.arange(1, len(raw) + 1)
    if layout.subject is not None and layout.subject in raw.columns:
        subj = raw[layout.subject].astype(str).to_numpy(dtype=object)
        raise_first(raw[layout.subject].isna().to_numpy(), rows, source, layout.subject, "missing subject name")
        if subject is not None:
            sel = subj == subject
            if not sel.any():
                raise TrialDataError(f"no rows for subject {subject!r}", source=source, column=layout.subject)
            raw, rows, subj = raw[sel], rows[sel], subj[sel]
    elif subject is not None:
        subj = np.full(len(raw), subject, dtype=object)
    else:
        raise TrialDataError("no subject column in the layout: pass subject=", source=source)
    if layout.session is not None:
        raise_first(raw[layout.session].isna().to_numpy(), rows, source, layout.session, "missing session key")
        labels = raw[layout.session].astype(str).to_numpy(dtype=object)
    else:
        labels = np.full(len(raw), "1", dtype=object)
    arrays = {c: raw[c].to_numpy() for c in needed if c in raw.columns}
    return named_stimulus_trials(arrays, layout, source, subj, labels, rows)


def read_psytrack_rat(path: str | Path | None = None) -> tuple[pd.DataFrame, IngestReport]:
    """Read the shared Akrami-lab rat (W053: 80 sessions, 20,000 trials) with its stimuli ``s_a``, ``s_b``.

    Args:
        path: the npz; defaults to the shared copy (:func:`default_rat_path`).

    Raises:
        FileNotFoundError: the file, or the shared data folder, does not exist.
        TrialDataError: as :func:`read_named_stimuli`.
    """
    return read_named_stimuli(default_rat_path() if path is None else path, PSYTRACK_RAT_LAYOUT)
