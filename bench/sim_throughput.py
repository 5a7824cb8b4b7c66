"""Simulation-throughput benchmark: simulated trials per second through twins, as the optimizer
runs them (``twin.sim.training.simulate_training``: task environment with advancement and
debiasing, choices sampled from the policy, the twin's rule updating the weights, per-session
counts for the training criterion).

Measures, in one run on this machine, at 1, 1,000 and 10,000 rollouts:

* a DNN twin and an RNN twin (hidden size 32);
* the ``static`` rule in the same loop: no learning, so it is the cost of the environment and the
  bookkeeping alone, the baseline the twins' figures are compared against.

Prints a table and writes ``bench/results/sim_throughput.{json,md}``. Run from the repo root:

    .venv/bin/python bench/sim_throughput.py            # ~2-4 min, 1 torch thread
    .venv/bin/python bench/sim_throughput.py --smoke    # a few seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from twin.models.learner import LearnerModel, ModelSpec
from twin.protocol import Curriculum
from twin.sim.training import simulate_training


def throughput(rule: str, rollouts: int, trials: int) -> float:
    """Simulated trials per second for ``rollouts`` rows of one session of ``trials`` trials."""
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec(rule)).eval()
    proto = Curriculum(session_trials=(trials, trials))
    simulate_training(model, [proto] * rollouts, 1, seed=0, stop_when_trained=False)  # warm-up (small run below)
    t0 = time.perf_counter()
    run = simulate_training(model, [proto] * rollouts, 1, seed=1, stop_when_trained=False)
    wall = time.perf_counter() - t0
    return float(run.stats.n_trials.sum()) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: more threads on a shared machine ran several times slower)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 1 and 10 rollouts of 20 trials")
    args = ap.parse_args()
    out = args.out if args.out is not None or args.smoke else Path("bench/results")
    torch.set_num_threads(args.threads)
    rows = []
    sizes = ((1, 20), (10, 20)) if args.smoke else ((1, 2000), (1000, 400), (10_000, 200))
    top = sizes[-1][0]
    for rollouts, trials in sizes:
        for rule in ("static", "dnn", "rnn"):
            tps = throughput(rule, rollouts, trials)
            rows.append({"rule": rule if rule != "static" else "static (environment only)", "rollouts": rollouts, "trials_per_rollout": trials, "trials_per_s": tps})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    env = table[table["rule"].str.startswith("static")].set_index("rollouts")["trials_per_s"]
    table["fraction_of_environment_only"] = table.apply(lambda r: r["trials_per_s"] / env[r["rollouts"]], axis=1)
    dnn_top = float(table[(table["rule"] == "dnn") & (table["rollouts"] == top)]["trials_per_s"].iloc[0])
    result = {
        "machine": f"{platform.machine()} {platform.processor()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "throughput": table.to_dict(orient="records"),
        "dnn_10000_rollouts_trials_per_s": dnn_top,
        "goal_trials_per_s": 2_000_000,
        "goal_met": dnn_top >= 2_000_000,
    }
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    print(f"DNN twin at {top:,} rollouts: {dnn_top:,.0f} simulated trials/s (goal 2,000,000 at 10,000: {'met' if dnn_top >= 2e6 else 'NOT met'})")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "sim_throughput.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Simulation throughput through twins",
        "",
        f"Command: `.venv/bin/python bench/sim_throughput.py --threads {args.threads}` ({result['machine']}, torch {result['torch']}).",
        "",
        table.to_markdown(index=False, floatfmt=",.2f"),
        "",
        f"DNN twin at 10,000 rollouts: {dnn_top:,.0f} simulated trials/s; goal 2,000,000: {'met' if result['goal_met'] else 'not met'}.",
        "",
    ]
    (out / "sim_throughput.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
