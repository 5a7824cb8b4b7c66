"""Cohort twin fit: in-process vs local Ray, measured in one run.

Simulates a cohort, fits the population DNN once (shared by both paths, it is the same driver
step), then times the per-animal adaptation + storing both ways and compares every twin's
validation log-likelihood. Prints the figures and writes ``bench/results/ray_cohort.json``.

    .venv/bin/python bench/ray_cohort.py --animals 40 --trials 3000
    .venv/bin/python bench/ray_cohort.py --smoke   # 2 small animals, 1 epoch (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.fit.cohort import CohortFitConfig, adapt_animals, animal_batches, fit_population, store_twins
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.sim.simulate import simulate
from twin.persist.store import TwinStore
from twin.protocol import IBL_DEFAULT
from twin.models.params import Adaptation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--animals", type=int, default=40)
    ap.add_argument("--trials", type=int, default=3000)
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="2 animals of 1,500 trials, 1 epoch")
    args = ap.parse_args()
    out_dir = args.out if args.out is not None or args.smoke else Path("bench/results")
    if args.smoke:
        args.animals, args.trials, args.per_task = 2, 1500, 1  # 2+ sessions each (one held out)
    torch.set_num_threads(1)
    df = simulate(DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), IBL_DEFAULT, args.animals, args.trials, seed=0).trials
    cfg = CohortFitConfig(spec=ModelSpec("dnn"), fit=FitConfig(epochs=1 if args.smoke else 60, patience=15), adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE)
    t0 = time.perf_counter()
    population = fit_population(df, cfg, progress=False)
    t_pop = time.perf_counter() - t0

    t0 = time.perf_counter()
    twins = [t for part in animal_batches(df, args.per_task) for t in adapt_animals(population, part)]
    local = store_twins(TwinStore(tempfile.mkdtemp()), population, cfg, twins)
    t_local = time.perf_counter() - t0

    import ray

    from cluster.ray_env import init_ray

    t0 = time.perf_counter()
    init_ray()
    t_init = time.perf_counter() - t0
    remote = ray.remote(num_cpus=1, max_retries=2)(adapt_animals)
    t0 = time.perf_counter()
    pop_ref = ray.put(population)
    parts = animal_batches(df, args.per_task)
    out = [t for ref in [remote.remote(pop_ref, p) for p in parts] for t in ray.get(ref)]
    on_ray = store_twins(TwinStore(tempfile.mkdtemp()), population, cfg, out)
    t_ray = time.perf_counter() - t0
    ray.shutdown()
    diff = max(abs(a.metrics.val_ll - b.metrics.val_ll) for a, b in zip(local, on_ray))
    res = {
        "animals": args.animals,
        "trials_per_animal": args.trials,
        "animals_per_task": args.per_task,
        "population_fit_s": t_pop,
        "adapt_and_store_in_process_s": t_local,
        "adapt_and_store_ray_s": t_ray,
        "ray_init_s": t_init,
        "ray_over_in_process": t_ray / t_local,
        "twins_stored": [len(local), len(on_ray)],
        "max_abs_val_ll_diff_nats": diff,
    }
    print(json.dumps(res, indent=2))
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ray_cohort.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
