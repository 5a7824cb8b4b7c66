"""``twin demo``: the main job on embedded defaults (:func:`twin_cli.demo.run_demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from twin_cli.commands.common import FAMILIES, show_progress


def cmd_demo(args: argparse.Namespace) -> int:
    from twin.sim.agents import Family
    from twin_cli.demo import DemoConfig, run_demo

    run_demo(DemoConfig(args.out, Family(args.family), args.animals, args.trials, args.epochs, args.seed, args.curricula, progress=show_progress(args)))
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin demo``."""
    d = sub.add_parser("demo", help="simulate a small cohort, fit every rule, evaluate, fit twins, search curricula, write figures and summaries")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    d.add_argument("--family", choices=FAMILIES, default="reinforce", help="ground-truth learners to simulate (default reinforce: the family whose Δw map the demo recovers in its time)")
    d.add_argument("--animals", type=int, default=16, help="cohort size (a quarter held out)")
    d.add_argument("--trials", type=int, default=4000, help="trials per animal")
    d.add_argument("--epochs", type=int, default=30, help="maximum epochs per fit")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--curricula", type=int, default=12, help="candidate curricula the search evaluates")
    d.set_defaults(func=cmd_demo)


__all__ = ["add_demo"]
