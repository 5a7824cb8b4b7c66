"""Simulation-throughput benchmark: simulated trials per second through twins, as the optimizer
runs them (``twin.sim.training.simulate_training``: task environment with advancement and
debiasing, choices sampled from the policy, the twin's rule updating the weights, per-session
counts for the training criterion).

Measures, in one run on this machine, at 1, 1,000 and 10,000 rollouts:

* a DNN twin and an RNN twin (hidden size 32);
* the ``static`` rule in the same loop: no learning, so it is the cost of the environment and the
  bookkeeping alone, the baseline the twins' figures are compared against.

Prints a table and writes ``bench/results/sim_throughput.{json,md}``. Run from the repo root:

    .venv/bin/python bench/sim_throughput.py            # ~2-4 min on 2 cores
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
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the machine's 2 cores by default)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for rollouts, trials in ((1, 2000), (1000, 400), (10_000, 200)):
        for rule in ("static", "dnn", "rnn"):
            tps = throughput(rule, rollouts, trials)
            rows.append({"rule": rule if rule != "static" else "static (environment only)", "rollouts": rollouts, "trials_per_rollout": trials, "trials_per_s": tps})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    env = table[table["rule"].str.startswith("static")].set_index("rollouts")["trials_per_s"]
    table["fraction_of_environment_only"] = table.apply(lambda r: r["trials_per_s"] / env[r["rollouts"]], axis=1)
    dnn_top = float(table[(table["rule"] == "dnn") & (table["rollouts"] == 10_000)]["trials_per_s"].iloc[0])
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
    print(f"DNN twin at 10,000 rollouts: {dnn_top:,.0f} simulated trials/s (goal 2,000,000: {'met' if dnn_top >= 2e6 else 'NOT met'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sim_throughput.json").write_text(json.dumps(result, indent=2))
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
    (args.out / "sim_throughput.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
