"""``twin simulate``, ``twin fit``, ``twin evaluate``: simulated cohorts, population rule fits to a
trials file, and model files scored on trials."""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
from pathlib import Path

import pandas as pd

from twin.errors import TwinError
from twin_cli.commands.common import FAMILIES, fit_config, load_trials_input, optimisation_args, show_progress, trials_args
from twin_cli.tables import format_table

#: Default of ``--max-trials``: rows of a trials file read into memory.
MAX_INPUT_TRIALS = 5_000_000
#: Memory a loaded trial costs, about (measured: the 1.39M-trial IBL export takes 1.15 GB).
BYTES_PER_TRIAL = 850
#: Fewest bytes a CSV row of trials takes (an upper bound of the rows from the file size).
MIN_CSV_ROW_BYTES = 16


def check_output(path: Path, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written: its folder exists (it is not
    created silently) and is writable, and ``path`` is not a folder.

    Raises:
        TwinError: it cannot.
    """
    if path.is_dir():
        raise TwinError(f"{flag} {path} is a folder; name a file")
    _check_folder(path.parent if str(path.parent) else Path("."), f"{flag} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise TwinError(f"{flag} {path}: the file exists and is not writable")
    return path


def check_store_output(root: Path, flag: str = "--store") -> Path:
    """Check, before any work, that a command can write the twin store in folder ``root``: an
    existing store folder (and its database file) must be writable; a new one is created only
    in an existing, writable folder (missing parent folders are not created silently).

    Raises:
        TwinError: it cannot.
    """
    from twin_cli.commands.common import STORE_DB

    if root.exists():
        if not root.is_dir():
            raise TwinError(f"{flag} {root} is not a folder")
        _check_folder(root, f"{flag} {root}")
        db = root / STORE_DB
        if db.exists() and not os.access(db, os.W_OK):
            raise TwinError(f"{flag} {root}: its database {db} is not writable")
        return root
    _check_folder(root.parent if str(root.parent) else Path("."), f"{flag} {root}")
    return root


def _check_folder(folder: Path, what: str) -> None:
    """Raise unless ``folder`` exists and a file can be created in it."""
    if not folder.is_dir():
        raise TwinError(f"{what}: folder {folder} does not exist (create it first)")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TwinError(f"{what}: cannot write to folder {folder} ({exc.strerror or exc})") from None


def _gzip_size(path: Path) -> int:
    """Uncompressed size of a gzip file from its trailer (exact below 4 GiB), at least its own size."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    return max(isize, path.stat().st_size)


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rb") as fh:  # type: ignore[operator]
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
    return n


def trials_in(path: Path, cap: int = MAX_INPUT_TRIALS) -> int | None:
    """Rows of a trials file, found without reading it into memory: parquet from its metadata;
    CSV from its lines, counted in a stream, unless its size alone shows it has at most ``cap``
    (then that bound is returned). None for a folder or an unknown format (left to the reader)."""
    if not path.is_file():
        return None
    name = path.name.lower()
    if name.endswith((".parquet", ".pqt")):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader, with its location
            return None
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        size = _gzip_size(path) if name.endswith(".gz") else path.stat().st_size
        if size // MIN_CSV_ROW_BYTES <= cap:
            return size // MIN_CSV_ROW_BYTES  # at most this many: small enough either way
        return max(_count_lines(path) - 1, 0)
    return None


def check_input(path: Path, max_trials: int) -> None:
    """Refuse, before reading it, a trials file with more than ``max_trials`` rows.

    Raises:
        TwinError: it has more.
    """
    n = trials_in(path, max_trials)
    if n is not None and n > max_trials:
        need = n * BYTES_PER_TRIAL / 1e9
        size = f"{need:.1f} GB" if need >= 1 else f"{need * 1000:.0f} MB"
        raise TwinError(
            f"{path}: {n:,} trials, more than --max-trials {max_trials:,} allows (reading it takes about {size} of memory); "
            "raise --max-trials if the machine has the memory, or split the file by subject"
        )


def max_trials_arg(q: argparse.ArgumentParser) -> None:
    """Add ``--max-trials`` (see :func:`check_input`) to ``q``."""
    q.add_argument("--max-trials", type=int, default=MAX_INPUT_TRIALS, help=f"refuse a trials file with more rows, before reading it (default {MAX_INPUT_TRIALS:,})")


def cmd_simulate(args: argparse.Namespace) -> int:
    from twin.sim.agents import DEFAULT_TRUTHS, Family
    from twin.data.readers import write_trials
    from twin.sim.simulate import simulate
    from twin.protocol import IBL_DEFAULT

    check_output(args.out)
    gt = DEFAULT_TRUTHS[Family(args.family)]
    sim = simulate(gt.build(), IBL_DEFAULT, args.animals, args.trials, seed=args.seed, subject_prefix=args.family)
    path = write_trials(sim.trials, args.out)
    df = sim.trials
    print(f"wrote {len(df)} trials of {args.animals} animals ({df.groupby('subject').session.max().mean():.1f} sessions each) to {path}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from twin.data.batch import make_batch
    from twin.data.splits import split_last_sessions
    from twin.data.features import FeatureSpec, StimulusCoding
    from twin.fit.train import fit
    from twin.models.learner import ModelSpec
    from twin.models.rules import get_rule, make_config
    from twin.persist.model_files import save_model

    get_rule(args.rule)  # fail early on a bad name
    check_output(args.out)  # before training, not after it
    if args.data is not None:
        check_input(args.data, args.max_trials)
    df, report = load_trials_input(args)
    print(report.summary())
    feats = FeatureSpec(stimulus=StimulusCoding(args.stimulus), bias=not args.no_bias, history=args.history)
    batch = make_batch(df, feats)
    # validation: each animal's last session(s), scored after running through the earlier ones
    train, val = batch, None
    if args.val_sessions:
        try:
            train, val = split_last_sessions(batch, args.val_sessions)
        except TwinError as exc:
            raise TwinError(f"{exc}; use --val-sessions 0") from None
    rule_cfg = make_config(args.rule, hidden_size=args.hidden, mirror_symmetric=args.mirror_symmetric, within_session_drift=not args.overnight_drift_only)
    spec = ModelSpec(args.rule, feats, rule_cfg)
    cfg = fit_config(args)
    res = fit(spec, train, val, cfg, progress=show_progress(args))
    meta = {
        "data": str(args.data if args.data is not None else args.one_cache),
        "subjects": list(batch.subjects),
        "fit": cfg.__dict__,
        "best_epoch": res.best_epoch,
        "val_ll": res.best_val_ll,
        "seconds": res.seconds,
        "device": res.device,
        "warnings": res.warning_messages,
    }
    path = save_model(res.model, args.out, meta)
    print(f"{args.rule}: best epoch {res.best_epoch}/{len(res.history)}, validation LL {res.best_val_ll:.4f} nats/trial, {res.seconds:.1f} s on {res.device} -> {path}")
    for message in res.warning_messages:
        print(f"warning: {message}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from twin.data.batch import make_batch
    from twin.data.splits import sessions_from_label
    from twin.analysis.evaluate import score
    from twin.persist.model_files import load_model

    if args.one_cache is not None and args.data is not None:
        args.models, args.data = [args.data, *args.models], None  # with --one-cache every positional is a model
    if args.out:
        check_output(args.out)
    if args.data is not None:
        check_input(args.data, args.max_trials)
    df, report = load_trials_input(args)
    print(report.summary())
    start = None
    if args.from_session is not None:
        start = sessions_from_label(df, args.from_session)
        shown = sorted(set(start.labels.values()))
        print(
            f"scoring each animal's sessions from the one labelled {start.label!r} on (the data's own session labels; "
            f"first scored: {', '.join(shown[:4])}{', ...' if len(shown) > 4 else ''})"
        )
        if start.missing:
            print(f"  {len(start.missing)} animal(s) have no such session and are not scored: {', '.join(start.missing[:5])}")
    rows = []
    for mpath in args.models:
        stored = load_model(mpath)
        batch = make_batch(df, stored.model.spec.features)
        if start is not None:
            batch = batch.with_mask(batch.sessions_mask(start.first_index(batch.subjects)))
        s = score(stored.model, batch)
        rows.append({"model": str(mpath), "rule": stored.model.spec.rule, "trials": s.n_trials, "ll_nats": s.ll, "ll_bits": s.ll_bits, "accuracy": s.accuracy})
    table = pd.DataFrame(rows)
    static = table[table["rule"] == "static"]
    if len(static):
        table["gain_vs_static"] = table["ll_nats"] - float(static["ll_nats"].iloc[0])
    print(format_table(table))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def add_simulate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin simulate``."""
    s = sub.add_parser("simulate", help="simulate ground-truth learners doing the IBL task")
    s.add_argument("--family", choices=FAMILIES, default="reinforce", help="learning rule of the simulated animals")
    s.add_argument("--animals", type=int, default=40)
    s.add_argument("--trials", type=int, default=6000, help="trials per animal")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True, help="trials file to write (.parquet or .csv)")
    s.set_defaults(func=cmd_simulate)


def add_fit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin fit``."""
    from twin.models.rules import rule_names

    f = sub.add_parser("fit", help="fit a learning rule (population) to a trials file")
    trials_args(f)
    f.add_argument("--rule", default="dnn", help=f"learning rule: {', '.join(rule_names())} (default dnn)")
    f.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
    optimisation_args(f)
    f.add_argument("--hidden", type=int, default=32, help="hidden size (dnn, rnn)")
    f.add_argument(
        "--mirror-symmetric", action="store_true",
        help="dnn_delta: constrain the update to be left/right mirror-equivariant, as REINFORCE and prediction-error rules are",
    )
    f.add_argument(
        "--overnight-drift-only", action="store_true",
        help="dnn_delta: its free drift acts only between sessions; within a session updates are proportional to the inputs",
    )
    f.add_argument("--val-sessions", type=int, default=1, help="last sessions of each animal held out for early stopping")
    f.add_argument("--stimulus", choices=["signed", "split"], default="signed", help="one signed stimulus weight or separate left/right weights")
    f.add_argument("--no-bias", action="store_true", help="drop the bias regressor")
    f.add_argument("--history", action="store_true", help="add previous-choice and previous-reward-side regressors")
    max_trials_arg(f)
    f.set_defaults(func=cmd_fit)


def add_evaluate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin evaluate``."""
    e = sub.add_parser("evaluate", help="score model files on a trials file")
    trials_args(e, what="trials file (before the model files; omit it with --one-cache)")
    e.add_argument("models", type=Path, nargs="+", help="model files (.safetensors)")
    e.add_argument(
        "--from-session", default=None, metavar="LABEL",
        help="score each animal's sessions from the one with this label on: the data's own session label "
        "(ALF's 0-based session number, YYYY-MM-DD/NNN, the export's endtrain-3; the session number for tables without labels)",
    )
    e.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    max_trials_arg(e)
    e.set_defaults(func=cmd_evaluate)


__all__ = ["add_evaluate", "add_fit", "add_simulate", "check_input", "check_output", "check_store_output", "max_trials_arg", "trials_in"]
