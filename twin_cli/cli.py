"""``twin``: command-line entry point.

Subcommands:

* ``twin demo``: the main job on embedded defaults: simulate a small synthetic cohort, fit every
  rule, evaluate on held-out animals, write figures and a summary table.
* ``twin simulate``: a cohort of ground-truth learners doing the IBL task → trials file.
* ``twin fit``: fit a learning rule to a trials file → model file (safetensors).
* ``twin evaluate``: score model files on a trials file (all trials, or later sessions only).
* ``twin check``: the generative check (twins run free under their animals' protocol, scored
  against what the animals did), on a synthetic family, a trials file + model file, or a store.
* ``twin search``: hyperparameter search (Optuna, or Ray Tune + ASHA).
* ``twin fit-twins`` / ``twin update-twin`` / ``twin twins``: per-animal twins in the versioned
  twin store (SQLite by default, PostgreSQL by URL).
* ``twin report SUBJECT``: one self-contained HTML page on an animal and its twin.
* ``twin curriculum {export,search,propose}``: training curricula through the twins.
* ``twin serve``: the gRPC service (``twin.v1``) over a twin store; ``twin health``: one health
  check of it (TLS too), for exec probes.

Each group of commands is a module of :mod:`twin_cli.commands`; this module puts their parsers
together in the order ``twin --help`` lists them, and owns what every command shares:

* ``-q/--quiet`` and ``-v/--verbose`` on every command (before or after its name): quiet shows no
  progress and only warnings, but results (and a long fit's final line) still print; verbose
  logs debug records too;
* progress as a tqdm bar on a terminal, one-line log records (``twin.progress``) in logs and
  pipes (:mod:`twin.progress`);
* errors as one ``twin CMD: error: ...`` line (exit 2), never a traceback; a closed pipe
  (``twin twins | head``) ends quietly (exit 141, as a process killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from twin.errors import TwinError
from twin.progress import ProgressMode, ProgressSettings, configure_progress
from twin_cli.commands.common import TwinArgumentParser, Verbosity, verbosity
from twin_cli.commands.check import add_check
from twin_cli.commands.curriculum import add_curriculum
from twin_cli.commands.demo import add_demo
from twin_cli.commands.health import add_health
from twin_cli.commands.models import add_evaluate, add_fit, add_simulate
from twin_cli.commands.search import add_search
from twin_cli.commands.serve import add_serve
from twin_cli.commands.store import add_store
from twin_cli.commands.twins import add_fit_twins, add_join_cohort, add_report, add_twins, add_update_twin

EPILOG = """examples:
  twin demo --out runs/demo
  twin simulate --family asymmetric --animals 40 --trials 6000 --out cohort.parquet
  twin fit cohort.parquet --rule dnn --out dnn.safetensors
  twin evaluate cohort.parquet dnn.safetensors static.safetensors --from-session 10
  twin fit-twins cohort.parquet --rule dnn --store twins && twin twins --store twins
  twin update-twin new_sessions.parquet --subject asymmetric-003 --store twins
  twin serve --store twins --auth-config tokens.yaml --address 0.0.0.0:50051 --tls-cert srv.pem --tls-key srv.key
  twin serve --store twins --local-demo          # no authentication, 127.0.0.1 only
"""


def _threads(n: int) -> None:
    import torch  # here, not at import: `twin health` (a probe run every few seconds) never loads it
    # the per-trial ops are tiny: one thread is as fast as two, and several processes on
    # few cores with multi-threaded torch slow each other down badly
    torch.set_num_threads(n)


#: exit status after a closed pipe (128 + SIGPIPE, what a shell reports for ``head`` pipelines).
EXIT_BROKEN_PIPE = 141


def configure_output(level: Verbosity) -> None:
    """Logging and progress for one command: records to stderr, progress per :mod:`twin.progress`."""
    isatty = sys.stderr.isatty()
    logging.basicConfig(
        level={Verbosity.QUIET: logging.WARNING, Verbosity.NORMAL: logging.INFO, Verbosity.VERBOSE: logging.DEBUG}[level],
        format="%(message)s" if isatty else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    configure_progress(ProgressSettings(mode=ProgressMode.OFF if level is Verbosity.QUIET else ProgressMode.AUTO))


def build_parser() -> argparse.ArgumentParser:
    """The ``twin`` argument parser, every subcommand registered."""
    p = TwinArgumentParser(
        prog="twin",
        description="Learning-rule digital twins of animals learning a decision task: simulate, fit, evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1: the per-trial ops are too small to gain from more)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_demo, add_simulate, add_fit, add_fit_twins, add_update_twin, add_join_cohort, add_twins, add_report, add_curriculum, add_serve, add_health, add_store, add_search, add_evaluate, add_check):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``twin`` command; its exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "uses_torch", True):
        _threads(args.threads)
    configure_output(verbosity(args))
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
        return code
    except TwinError as exc:
        print(f"twin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (| head): stop quietly; point stdout at devnull so the
        # interpreter's own final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
