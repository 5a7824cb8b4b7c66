"""Curriculum-search benchmark: a local search of 100 candidate curricula through the twins of a
10-animal cohort (goal: within 5 minutes on 2 cores).

In one run on this machine:

1. simulate 10 paced REINFORCE learners under the IBL default protocol and fit their DNN twins
   (population rule + per-animal initial weights and rate multipliers; not timed as search);
2. baseline: score one candidate alone (a batch of one curriculum), the cost per candidate
   without batching;
3. the search: 100 candidates, Optuna TPE, ``--batch`` candidates simulated together, then the
   re-scoring of the best against the default.

Prints the figures and writes ``bench/results/curriculum_search.{json,md}``. Run from the repo root:

    .venv/bin/python bench/curriculum_search.py
    .venv/bin/python bench/curriculum_search.py --smoke   # a few seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from twin.protocol import IBL_DEFAULT
from optimizer.objective import TwinPool, score_curricula
from optimizer.search import SearchConfig, search_curricula
from optimizer.space import CurriculumSpace
from twin.sim.agents import PACED_TRUTHS, Family, Individuality, draw_individuals
from twin.fit.cohort import CohortFitConfig, adapt_animals, fit_population
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.sim.simulate import simulate
from twin.models.params import Adaptation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--batch", type=int, default=20, help="candidates simulated together")
    ap.add_argument("--rollouts", type=int, default=4, help="runs per twin and candidate")
    ap.add_argument("--max-sessions", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 2 animals of 1,500 trials, population twins (no adaptation), 2 candidates, 1 session")
    args = ap.parse_args()
    out = args.out if args.out is not None or args.smoke else Path("bench/results")
    if args.smoke:
        args.candidates, args.batch, args.rollouts, args.max_sessions = 2, 2, 1, 1
    n_animals, n_trials, epochs = (2, 1500, 1) if args.smoke else (10, 8000, 40)  # smoke: 2+ sessions each (one held out)
    torch.set_num_threads(args.threads)
    truth = PACED_TRUTHS[Family.REINFORCE]
    w0, lr = draw_individuals(truth, n_animals, Individuality(), seed=0)
    df = simulate(truth.build(), IBL_DEFAULT, n_animals, n_trials, seed=0, w0=w0, log_rate=lr).trials
    t0 = time.perf_counter()
    pop = fit_population(df, CohortFitConfig(spec=ModelSpec("dnn"), fit=FitConfig(epochs=epochs, patience=8), adaptation=Adaptation.NONE if args.smoke else Adaptation.INITIAL_WEIGHTS_AND_RATE), progress=False)
    pool = TwinPool.from_twins({t.subject: [t.twin] for t in adapt_animals(pop, df)})
    fit_s = time.perf_counter() - t0
    print(f"twins of {n_animals} animals fitted in {fit_s:.0f} s")
    space = CurriculumSpace()
    t0 = time.perf_counter()
    score_curricula(pool, [IBL_DEFAULT], args.rollouts, args.max_sessions, seed=1)
    single_s = time.perf_counter() - t0
    print(f"baseline: one candidate alone {single_s:.1f} s")
    cfg = SearchConfig(n_trials=args.candidates, batch_size=args.batch, n_rollouts=args.rollouts, max_sessions=args.max_sessions, rescore_top=1 if args.smoke else 3, rescore_rollouts=1 if args.smoke else 8)
    t0 = time.perf_counter()
    res = search_curricula(pool, space, cfg, progress=False)
    search_s = time.perf_counter() - t0
    result = {
        "machine": f"{platform.machine()} {platform.processor()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "animals": n_animals,
        "candidates": args.candidates,
        "batch": args.batch,
        "rollouts": args.rollouts,
        "twin_fit_seconds": fit_s,
        "single_candidate_seconds": single_s,
        "search_seconds": search_s,
        "seconds_per_candidate_in_search": search_s / args.candidates,
        "batching_gain_per_candidate": single_s / (search_s / args.candidates),
        "within_5_min": search_s <= 300,
        "max_sessions": res.max_sessions,
        "predicted_speedup": res.predicted_speedup.mean,
        "predicted_speedup_lo": res.predicted_speedup.lo,
        "predicted_speedup_hi": res.predicted_speedup.hi,
        "ranked_by": cfg.robust.statistic.value,
        "lower_quantile_speedup": res.robust.lower_quantile if res.robust is not None else None,
        "changes_of_best": len(res.attribution.changes) if res.attribution is not None else 0,
        "changes_kept": len(res.attribution.kept) if res.attribution is not None else 0,
        "attribution_candidates_scored": res.attribution.n_scored if res.attribution is not None else 0,
        "proposed": res.best.curriculum.description,
    }
    print(json.dumps(result, indent=2))
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "curriculum_search.json").write_text(json.dumps(result, indent=2))
    (out / "curriculum_search.md").write_text(
        "\n".join(
            [
                "# Local curriculum search: 100 candidates, 10-animal cohort",
                "",
                f"Command: `.venv/bin/python bench/curriculum_search.py --threads {args.threads}` ({result['machine']}, torch {result['torch']}).",
                "",
                f"- search of {args.candidates} candidates ({args.batch} per batch, {args.rollouts} rollouts per twin, re-scoring included): **{search_s:.0f} s** (goal 300 s: {'met' if search_s <= 300 else 'not met'})",
                f"- baseline in the same run, one candidate scored alone: {single_s:.1f} s; per candidate in the batched search: {search_s / args.candidates:.2f} s ({result['batching_gain_per_candidate']:.1f}x)",
                f"- twins fitted in {fit_s:.0f} s (not part of the search)",
                f"- sessions cap {res.max_sessions}; predicted speed-up {res.predicted_speedup.mean:.1%} [{res.predicted_speedup.lo:.1%}, {res.predicted_speedup.hi:.1%}], ranked by {cfg.robust.statistic.value}; "
                f"{result['changes_kept']} of the best candidate's {result['changes_of_best']} changes kept ({result['attribution_candidates_scored']} attribution candidates scored, included in the search time)",
                "",
            ]
        )
    )


if __name__ == "__main__":
    main()
