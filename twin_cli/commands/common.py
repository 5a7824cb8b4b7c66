"""What several ``twin`` subcommands share: ``--quiet``/``--verbose`` (:class:`TwinArgumentParser`),
the twin-store flags, opening a store (read commands never create one), the trials-input flags
(a file, an ALF folder or a ONE cache), and the simulated families."""

from __future__ import annotations

import argparse
import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from twin.errors import TwinError
from twin.data.trials import IngestReport

if TYPE_CHECKING:  # the store pulls SQLAlchemy in: imported only by the commands that use it
    from twin.fit.train import FitConfig
    from twin.persist.store import TwinStore


class Verbosity(enum.Enum):
    """How much a command says besides its results."""

    QUIET = "quiet"
    NORMAL = "normal"
    VERBOSE = "verbose"


class TwinArgumentParser(argparse.ArgumentParser):
    """An argument parser whose every (sub)command takes ``--quiet`` and ``--verbose``.

    ``add_subparsers`` makes subparsers of the parser's own class, so nested commands
    (``twin curriculum search``) get the flags too; unset, they leave the value given before the
    command name alone.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        g = self.add_mutually_exclusive_group()
        g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=Verbosity.QUIET, default=argparse.SUPPRESS, help="no progress, warnings only (results still print)")
        g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=Verbosity.VERBOSE, default=argparse.SUPPRESS, help="debug log records too")


def verbosity(args: argparse.Namespace) -> Verbosity:
    """The verbosity the flags ask for (NORMAL when neither was given)."""
    return getattr(args, "verbosity", Verbosity.NORMAL)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether the command shows progress (not under ``--quiet``)."""
    return verbosity(args) is not Verbosity.QUIET


FAMILIES = ["reinforce", "asymmetric", "history", "perseveration", "plateau", "forgetting"]
"""Ground-truth learner families a command may simulate (the values of
:class:`twin.sim.agents.Family`, kept here so that parsing arguments imports no torch; a test pins
them to the enum)."""

#: the default SQLite database file of a store folder.
STORE_DB = "twins.db"
#: the environment variable ``--db-url`` defaults to (deployments set it from a secret, so no
#: command line has to name it: a RayJob's entrypoint cannot).
DB_URL_ENV = "TWIN_DB_URL"


def store_args(q: argparse.ArgumentParser) -> None:
    """Add ``--store`` and ``--db-url`` (the twin store) to ``q``."""
    q.add_argument("--store", type=Path, default=Path("twins"), help="twin store folder (default: ./twins)")
    q.add_argument(
        "--db-url", default=os.environ.get(DB_URL_ENV) or None,
        help=f"SQLAlchemy URL of the metadata database (default: ${DB_URL_ENV}, else SQLite in the store folder)",
    )


def open_store(args: argparse.Namespace, create: bool = False) -> "TwinStore":
    """The twin store the flags name.

    Args:
        args: parsed ``--store``/``--db-url``.
        create: make the store when it does not exist (commands that write twins); read
            commands pass False and get an error instead, so a typo never creates a store.

    Raises:
        TwinError: ``create`` is False and there is no store there.
    """
    from twin.persist.store import TwinStore

    root: Path = args.store
    if not create:
        if not root.is_dir():
            raise TwinError(f"no twin store at {root} (no such folder; twin fit-twins TRIALS --store {root} creates one)")
        if args.db_url is None and not (root / STORE_DB).is_file():
            raise TwinError(f"no twin store at {root} (no {STORE_DB} in it; twin fit-twins TRIALS --store {root} creates one)")
    return TwinStore(root, url=args.db_url)


def trials_args(q: argparse.ArgumentParser, what: str = "trials file") -> None:
    """Add the trials input to ``q``: a positional ``data`` path or ``--one-cache DIR``, and the
    ALF selection flags (subject, dates, collection, revision) for ALF folders and ONE caches."""
    q.add_argument(
        "data", type=Path, nargs="?", default=None,
        help=f"{what}: any supported layout (canonical or IBL ALF table, IBL export, ALF folder tree, .npz)",
    )
    q.add_argument("--one-cache", type=Path, default=None, metavar="DIR", help="read the trials of a ONE local cache through ONE (one-api) instead")
    q.add_argument("--alf-subject", default=None, metavar="SUBJECT", help="ALF folder / ONE cache: only this subject's sessions")
    q.add_argument("--alf-dates", nargs=2, default=None, metavar=("FIRST", "LAST"), help="ALF folder / ONE cache: only sessions dated FIRST..LAST (YYYY-MM-DD, inclusive)")
    q.add_argument("--alf-collection", default=None, metavar="COLLECTION", help="ALF folder / ONE cache: the trials collection, e.g. alf/task_00 (default: alf, else the single alf/task_NN)")
    q.add_argument("--alf-revision", default=None, metavar="REVISION", help="ALF folder / ONE cache: this dataset revision (or the latest before it) instead of the newest")


def has_trials_input(args: argparse.Namespace) -> bool:
    """Whether a trials input (a path or ``--one-cache``) was given."""
    return args.data is not None or args.one_cache is not None


def load_trials_input(args: argparse.Namespace) -> tuple[pd.DataFrame, IngestReport]:
    """Read the trials input that :func:`trials_args`' flags name.

    Raises:
        TwinError: no input, or both a path and ``--one-cache``; ALF flags on a table file.
        TrialDataError: the data cannot be read (file, row, column).
    """
    from twin.data.alf import read_alf_dir, read_one_cache
    from twin.data.readers import load_trials

    if args.data is not None and args.one_cache is not None:
        raise TwinError("give a trials path or --one-cache DIR, not both")
    if not has_trials_input(args):
        raise TwinError("no trials: give a trials path or --one-cache DIR")
    selection = {
        "subject": args.alf_subject,
        "date_range": None if args.alf_dates is None else tuple(args.alf_dates),
        "collection": args.alf_collection,
        "revision": args.alf_revision,
    }
    if args.one_cache is not None:
        return read_one_cache(args.one_cache, **selection)
    if any(v is not None for v in selection.values()):
        if not args.data.is_dir():
            raise TwinError(f"{args.data}: --alf-subject/--alf-dates/--alf-collection/--alf-revision apply to ALF folders and ONE caches, not to a table file")
        return read_alf_dir(args.data, **selection)
    return load_trials(args.data)


__all__ = ["DB_URL_ENV", "FAMILIES", "STORE_DB", "TwinArgumentParser", "Verbosity", "show_progress", "verbosity", "has_trials_input", "load_trials_input", "open_store", "store_args", "trials_args"]


def optimisation_args(q: argparse.ArgumentParser) -> None:
    """The population fit's optimisation settings (``twin fit``, ``twin fit-twins``), read back by
    :func:`fit_config`."""
    q.add_argument("--epochs", type=int, default=300)
    q.add_argument("--patience", type=int, default=30, help="epochs without validation improvement before stopping")
    q.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the rule's own, 3e-3 for dnn/rnn)")
    q.add_argument("--tbptt", type=int, default=500, help="truncated-BPTT chunk length in trials")
    q.add_argument(
        "--lbfgs-rounds", type=int, default=0,
        help="after Adam, rounds of 50 full-batch L-BFGS iterations on the untruncated likelihood (exact ML refinement; "
        "about 2 s per iteration for 30 animals x 6000 trials; default 0)",
    )
    q.add_argument("--lbfgs-iterations", type=int, default=50, help="L-BFGS iterations per round (default 50)")
    q.add_argument("--lr-patience", type=int, default=10, help="epochs without improvement before the Adam step size is halved")
    q.add_argument("--grad-clip", type=float, default=10.0, help="maximum gradient norm")
    q.add_argument(
        "--scale-lr-multiplier", type=float, default=1.0,
        help="step-size multiplier of the DNN/RNN rules' log update scales (they start at 1e-3; the real-data experiment uses 10)",
    )
    q.add_argument("--fixed-w0", action="store_true", help="keep the initial weights at zero instead of fitting them")
    q.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    q.add_argument("--seed", type=int, default=0)


def fit_config(args: argparse.Namespace) -> FitConfig:
    """The :class:`~twin.fit.train.FitConfig` of :func:`optimisation_args`' options.

    Raises:
        TwinError: a setting out of range (the config's own message).
    """
    from twin.errors import TwinError
    from twin.fit.train import FitConfig

    try:
        return FitConfig(
            epochs=args.epochs, learning_rate=args.lr, tbptt=args.tbptt, patience=args.patience, lr_patience=args.lr_patience,
            grad_clip=args.grad_clip, seed=args.seed, device=args.device, fit_w0=not args.fixed_w0,
            scale_lr_multiplier=args.scale_lr_multiplier, lbfgs_rounds=args.lbfgs_rounds, lbfgs_iterations=args.lbfgs_iterations,
        )
    except ValueError as exc:
        raise TwinError(str(exc)) from None
