"""Ensemble-fit benchmark: the wall time of a cohort's ensemble fit and of its generative check.

Measures, in one run on this machine (1 torch thread by default):

* the ensemble fit (:func:`twin.fit.ensemble_cohort.fit_ensemble` with its default settings:
  every component fitted on all but the last sessions, stacked on them, kept and adapted per
  animal; ``--refit`` refits each on all sessions, the old default) of a simulated cohort;
* the reference in the same run: a single-rule ``dnn`` twin fit with the same settings and a
  fixed adaptation (:func:`twin.fit.cohort.fit_population` + :func:`twin.fit.cohort.adapt_animals`,
  the default twin before ensembles);
* the generative check of the ensemble twins (:func:`twin.sim.check.run_ensemble_check`, one
  component drawn per rollout) against that of the single ``dnn`` twins (:func:`twin.sim.check.run_check`),
  from each animal's half-way session.

The issue's target (an ensemble fit of 40 animals x 6,000 trials within 15 minutes on 2 cores)
is extrapolated from the measured size, stating so: the fit's cost is per-trial Python steps of
batched rollouts, so its time grows linearly with trials per animal and sub-linearly with the
number of animals (a batch of 32 costs about what one animal costs, see
``bench/results/fit_throughput.md``); scaling the measured time by animals x trials is therefore
an over-estimate for the same number of epochs, while a larger cohort may run more epochs before
early stopping (the reduced run caps epochs lower than the default 300). Only ``--full`` measures
the full size.

Prints a table and writes ``bench/results/ensemble_fit.{json,md}``. From the repo root:

    .venv/bin/python bench/ensemble_fit.py --smoke   # seconds: tiny cohort, 2 rules (a check that it runs)
    .venv/bin/python bench/ensemble_fit.py           # reduced size (4 x 2,000, 5 rules, epoch cap 10), ~3 min
    .venv/bin/python bench/ensemble_fit.py --full    # 40 x 6,000 (the target's size)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from twin.fit.cohort import CohortFitConfig, adapt_animals, fit_population
from twin.fit.ensemble_cohort import DEFAULT_ENSEMBLE_RULES, EnsembleFitConfig, ensemble_components, fit_ensemble
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.models.params import Adaptation
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family, Individuality, draw_individuals
from twin.sim.check import run_check, run_ensemble_check, twin_starts
from twin.sim.simulate import simulate

TARGET_ANIMALS, TARGET_TRIALS, TARGET_SECONDS = 40, 6000, 15 * 60
BATCH_FACTOR = 1.35
"""Cost of a batched DNN fit step at batch 32 over batch 1 (``bench/results/fit_throughput.md``)."""


@dataclass(frozen=True)
class Size:
    """What one benchmark run fits."""

    animals: int
    trials: int
    epochs: int
    patience: int
    rules: tuple[str, ...]
    rollouts: int


SIZES = {
    "smoke": Size(3, 1500, 2, 2, ("static", "reinforce"), 4),
    "reduced": Size(4, 2000, 10, 3, DEFAULT_ENSEMBLE_RULES, 10),
    "full": Size(TARGET_ANIMALS, TARGET_TRIALS, 300, 30, DEFAULT_ENSEMBLE_RULES, 100),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny cohort, two rules: that it runs")
    mode.add_argument("--full", action="store_true", help="40 animals x 6,000 trials, 300-epoch cap")
    ap.add_argument("--rules", default=None, help="comma-separated subset of the rules (a shared machine's 3-minute runs: one part of the ensemble per run; its cost is the sum of its components')")
    ap.add_argument("--refit", action="store_true", help="stack at half the sessions and refit each rule on all of them (the default before 2026-12-02)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="also time the ensemble fit with its components as Ray tasks on a local Ray of every core (cluster.ensemble)")
    ap.add_argument("--ray-only", action="store_true", help="only the Ray fit (no in-process fit to compare it with): the full size's wall time on every core, in half the run time")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    args = ap.parse_args()
    if args.out is None and not args.smoke:
        args.out = Path("bench/results")
    torch.set_num_threads(args.threads)
    args.ray = args.ray or args.ray_only
    name = "smoke" if args.smoke else "full" if args.full else "reduced"
    size = SIZES[name]
    if args.rules:
        size = replace(size, rules=tuple(r.strip() for r in args.rules.split(",") if r.strip()))
    gt = DEFAULT_TRUTHS[Family.REINFORCE]
    w0, lr = draw_individuals(gt, size.animals, Individuality(), seed=0)
    df = simulate(gt.build(), IBL_DEFAULT, size.animals, size.trials, seed=0, w0=w0, log_rate=lr).trials
    fit_cfg = FitConfig(epochs=size.epochs, patience=size.patience)

    t0, c0 = time.perf_counter(), time.process_time()
    pop = fit_population(df, CohortFitConfig(spec=ModelSpec("dnn"), fit=fit_cfg, adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE), progress=False)
    single = adapt_animals(pop, df)
    single_s, single_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"reference: single dnn twins of {size.animals} x {size.trials}: {single_s:.1f} s", flush=True)

    cfg = EnsembleFitConfig(components=ensemble_components(size.rules), fit=fit_cfg, refit=args.refit)
    ens, ens_s, ens_cpu = None, None, None
    if not args.ray_only:
        t0, c0 = time.perf_counter(), time.process_time()
        ens = fit_ensemble(df, cfg, progress=False)
        ens_s, ens_cpu = time.perf_counter() - t0, time.process_time() - c0
    ray_s = None
    if args.ray:  # the same fit, its components as Ray tasks on every core (started before the clock)
        from cluster.ensemble import fit_components_ray
        from cluster.ray_env import init_ray

        init_ray()
        t0 = time.perf_counter()
        ens_ray = fit_ensemble(df, cfg, progress=False, fit_components=fit_components_ray())
        ray_s = time.perf_counter() - t0  # the driver waits; the CPU is in the workers
        if ens is None:
            ens = ens_ray
            print(f"ensemble fit, components as Ray tasks ({os.cpu_count()} CPUs): {ray_s:.1f} s wall (no in-process fit: --ray-only)", flush=True)
        else:
            same = max(abs(a.heldout_ll - b.heldout_ll) for a, b in zip(ens.components, ens_ray.components))
            print(f"ensemble fit, components as Ray tasks ({os.cpu_count()} CPUs): {ray_s:.1f} s wall ({ens_s / ray_s:.2f}x the in-process fit); max |held-out LL difference| {same:.2e}", flush=True)
    assert ens is not None
    table = ens.table()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
    if ens_s is not None:
        print(f"ensemble fit ({len(cfg.components)} components): {ens_s:.1f} s wall, {ens_cpu:.1f} s CPU (reference {single_cpu:.1f} s CPU)", flush=True)

    subjects = [a.subject for a in ens.animals]
    cut = [max(1, int(df.loc[df.subject == s, "session"].max()) // 2) for s in subjects]
    t0 = time.perf_counter()
    twins = {t.subject: t.twin for t in single}
    run_check(pop.model, twin_starts([twins[s] for s in subjects], df, subjects, cut, IBL_DEFAULT), df, IBL_DEFAULT, size.rollouts, seed=0)
    check_single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_ensemble_check([a.ensemble for a in ens.animals], df, subjects, cut, IBL_DEFAULT, size.rollouts, seed=0)
    check_ens_s = time.perf_counter() - t0
    drawn = sum(1 for w in ens.stacking.per_animal.max(0).values.tolist() if w > 0)  # components some animal may draw
    print(f"generative check, {size.rollouts} rollouts per animal: single dnn {check_single_s:.1f} s, ensemble {check_ens_s:.1f} s", flush=True)

    scale = (TARGET_ANIMALS * TARGET_TRIALS) / (size.animals * size.trials)
    fit_s = ens_s if ens_s is not None else ray_s  # the in-process fit, or (--ray-only) the Ray fit's wall time
    assert fit_s is not None
    extrapolated = fit_s if name == "full" else fit_s * scale
    extrapolated_cpu = None if ens_cpu is None else ens_cpu if name == "full" else ens_cpu * scale
    # per-step cost is nearly flat in the batch (fit_throughput.md: a DNN step at batch 32 costs
    # ~1.35x one at batch 1), so a second estimate scales by trials per animal and that factor
    by_trials_cpu = None if ens_cpu is None else ens_cpu if name == "full" else ens_cpu * (TARGET_TRIALS / size.trials) * BATCH_FACTOR
    result = {
        "mode": name,
        "machine": f"{platform.machine()} {platform.processor()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "animals": size.animals,
        "trials_per_animal": size.trials,
        "epoch_cap": size.epochs,
        "components": [c.label for c in cfg.components],
        "single_dnn_fit_seconds": single_s,
        "ensemble_fit_seconds": ens_s,
        "ensemble_over_single": None if ens_s is None else ens_s / single_s,
        "single_dnn_fit_cpu_seconds": single_cpu,
        "ensemble_fit_cpu_seconds": ens_cpu,
        "ensemble_fit_ray_seconds": ray_s,
        "ensemble_in_process_over_ray": None if ray_s is None or ens_s is None else ens_s / ray_s,
        "ray_only": args.ray_only,
        "load_average_1min_at_end": os.getloadavg()[0],
        "check_single_seconds": check_single_s,
        "check_ensemble_seconds": check_ens_s,
        "components_with_weight": drawn,
        "stacking": table.to_dict(orient="records"),
        "fit_warnings": {c.label: list(c.warnings) for c in ens.components if c.warnings},
        "full_size_measured": name == "full",
        "extrapolated_full_size_seconds": extrapolated,
        "extrapolated_full_size_cpu_seconds": extrapolated_cpu,
        "extrapolated_full_size_cpu_seconds_by_trials": by_trials_cpu,
        "extrapolation": (
            "measured at full size" if name == "full" else
            f"measured time x {scale:.1f} (animals x trials), at the same epoch cap ({size.epochs}) and patience: linear in trials, an "
            "over-estimate in animals (batching), blind to how many more epochs a larger cohort runs before early stopping; "
            "NOT a measurement of the full size"
        ),
    }
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    print(f"extrapolated to {TARGET_ANIMALS} x {TARGET_TRIALS}: {extrapolated:.0f} s wall{' (the Ray fit)' if ens_s is None else ''}, {fmt(extrapolated_cpu)} s CPU ({result['extrapolation']}); "
          f"by trials x batching factor {BATCH_FACTOR}: {fmt(by_trials_cpu)} s CPU; target {TARGET_SECONDS} s")
    if args.out is None:  # a smoke run writes nothing
        return
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("ensemble_fit" if name == "reduced" else f"ensemble_fit_{name}") + (f"_{'_'.join(size.rules)}" if args.rules else "") + ("_ray" if args.ray else "") + ("_refit" if args.refit else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    md = [
        "# Ensemble fit",
        "",
        f"`.venv/bin/python bench/ensemble_fit.py{' --' + name if name != 'reduced' else ''}{' --rules ' + args.rules if args.rules else ''}{' --ray-only' if args.ray_only else ' --ray' if args.ray else ''}{' --refit' if args.refit else ''}` on {result['machine']}, torch {torch.__version__}, "
        f"{args.threads} thread(s); {size.animals} animals x {size.trials} trials, epoch cap {size.epochs}, patience {size.patience}; "
        + ("stacked at half the sessions, each rule refitted on all (--refit)." if args.refit else "each rule fitted on all but the last sessions and kept (the default, no refit)."),
        "",
        "| what | seconds |",
        "| --- | --- |",
        f"| single `dnn` twins (reference, same run) | {single_s:.1f} wall, {single_cpu:.1f} CPU |",
        *([f"| ensemble fit, {len(cfg.components)} components, in process | {ens_s:.1f} wall, {ens_cpu:.1f} CPU ({ens_cpu / single_cpu:.1f}x the reference's CPU) |"] if ens_s is not None and ens_cpu is not None else []),
        *([f"| ensemble fit, {len(cfg.components)} components as Ray tasks on {os.cpu_count()} CPUs | {ray_s:.1f} wall" + (f" ({ens_s / ray_s:.2f}x faster than in-process) |" if ens_s is not None else " |")] if ray_s is not None else []),
        f"| generative check, single `dnn` twins, {size.rollouts} rollouts/animal | {check_single_s:.1f} |",
        f"| generative check, ensemble twins | {check_ens_s:.1f} |",
        "",
        pd.DataFrame(result["stacking"]).to_markdown(index=False, floatfmt=".4f"),  # type: ignore[arg-type]
        "",
        *(["Convergence warnings of the components' population fits: " + "; ".join(f"{c.label}: {' / '.join(c.warnings)}" for c in ens.components if c.warnings), ""]
          if any(c.warnings for c in ens.components) else ["No convergence warnings from the components' population fits.", ""]),
        f"Load average at the end: {result['load_average_1min_at_end']:.1f} on {os.cpu_count()} cores (wall times of a shared machine; CPU seconds are the steadier figure).",
        "",
        f"Full size ({TARGET_ANIMALS} x {TARGET_TRIALS}): {result['extrapolation']}: {extrapolated:.0f} s wall{' (the Ray fit)' if ens_s is None else ''} / {fmt(extrapolated_cpu)} s CPU against the {TARGET_SECONDS} s target"
        + ("." if name == "full" else f". Scaling by trials per animal only, times {BATCH_FACTOR} for the larger batch (fit_throughput.md): {fmt(by_trials_cpu)} s CPU. Both are estimates."),
    ]
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / (stem + '.json')}")


if __name__ == "__main__":
    main()
