"""Fit-throughput benchmark: trial-steps per second, forward + backward, per rule.

Measures, in one run on this machine:

* every model rule at batch 1 and batch 32 animals (TBPTT epochs over simulated trials);
* a naive DNN step (``nn.Sequential`` on the concatenated inputs every trial, no precomputation)
  at the same batch sizes: the baseline the optimised rules are compared against;
* the wall time of a whole cohort fit: 40 animals x 6,000 trials, DNN rule, early stopping.

Prints a table and writes ``bench/results/fit_throughput.{json,md}``. Run from the repo root:

    .venv/bin/python bench/fit_throughput.py              # full (~5-10 min on 2 cores)
    .venv/bin/python bench/fit_throughput.py --no-cohort  # throughput only (~1 min)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.data.batch import make_batch
from twin.data.splits import split_last_sessions
from twin.fit.train import FitConfig, fit, train_epoch
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.policy import choice_log_likelihood
from twin.models.rules import MODEL_RULES, UpdateInputs
from twin.sim.simulate import simulate
from twin.protocol import IBL_DEFAULT


def rule_throughput(rule: str, batch, epochs: int, chunk: int = 500) -> float:
    """Trial-steps per second of the fitting path (``twin.fit.train.train_epoch``: TBPTT epochs,
    forward + backward + Adam), after one warm-up epoch; no validation pass is timed."""
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec(rule)).train()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    inp = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)
    train_epoch(model, opt, batch, inp, chunk, params, 10.0)
    t0 = time.perf_counter()
    steps = sum(train_epoch(model, opt, batch, inp, chunk, params, 10.0)[1] for _ in range(epochs))
    return steps / (time.perf_counter() - t0)


def naive_dnn_throughput(batch, epochs: int, chunk: int = 500) -> float:
    """Baseline: the DNN rule written the plain way (MLP on cat([w, u_t]) every trial)."""
    k = batch.x.shape[-1]
    mlp = nn.Sequential(nn.Linear(2 * k + 4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, k))
    scale = nn.Parameter(torch.full((k,), 1e-3))
    w0 = nn.Parameter(torch.zeros(k))
    opt = torch.optim.Adam([*mlp.parameters(), scale, w0], lr=3e-3)
    u = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start).standard_vector()
    b, t_total = batch.x.shape[:2]
    steps, t0 = 0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up
        if epoch == 1:
            steps, t0 = 0, time.perf_counter()
        w = w0.expand(b, -1)
        for a in range(0, t_total, chunk):
            ws = []
            for t in range(a, min(a + chunk, t_total)):
                ws.append(w)
                w = w + scale * mlp(torch.cat([w, u[:, t]], -1))
            wt = torch.stack(ws, 1)
            ll = choice_log_likelihood(wt, batch.x[:, a : a + chunk], batch.y[:, a : a + chunk])
            loss = -ll.mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*mlp.parameters(), scale, w0], 10.0)
            opt.step()
            w = w.detach()
            steps += b * wt.shape[1]
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000, help="trials per animal in the throughput runs")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per throughput run")
    ap.add_argument("--no-cohort", action="store_true", help="skip the 40 x 6,000 cohort fit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cohort fit and rule throughput)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 40 trials, 1 epoch, batches 1 and 2, no cohort fit")
    args = ap.parse_args()
    out = args.out if args.out is not None or args.smoke else Path("bench/results")
    if args.smoke:
        args.trials, args.epochs, args.no_cohort = 40, 1, True
    batches = (1, 2) if args.smoke else (1, 32)
    torch.set_num_threads(args.threads)
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    sim = simulate(truth, IBL_DEFAULT, batches[-1], args.trials, seed=0)
    full = make_batch(sim.trials)
    rows = []
    for b in batches:
        batch = full.select(list(range(b)))
        for rule in MODEL_RULES:
            if rule == "static":
                continue  # no per-trial work to measure
            rows.append({"rule": rule, "batch": b, "trial_steps_per_s": rule_throughput(rule, batch, args.epochs)})
            print(rows[-1], flush=True)
        rows.append({"rule": "dnn (naive baseline)", "batch": b, "trial_steps_per_s": naive_dnn_throughput(batch, args.epochs)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    base = table[table["batch"] == 1].set_index("rule")["trial_steps_per_s"]
    table["speedup_vs_batch1"] = table.apply(lambda r: r["trial_steps_per_s"] / base[r["rule"]], axis=1)
    naive = table[table["rule"] == "dnn (naive baseline)"].set_index("batch")["trial_steps_per_s"]
    table["speedup_vs_naive_dnn"] = table.apply(lambda r: r["trial_steps_per_s"] / naive[r["batch"]], axis=1)
    result: dict[str, object] = {
        "machine": f"{platform.machine()} {platform.processor()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "trials_per_animal": args.trials,
        "throughput": table.to_dict(orient="records"),
    }
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    if not args.no_cohort:
        sim40 = simulate(truth, IBL_DEFAULT, 40, 6000, seed=1)
        batch40 = make_batch(sim40.trials)
        train, val = split_last_sessions(batch40)
        t0 = time.perf_counter()
        res = fit(ModelSpec("dnn"), train, val, FitConfig(epochs=300, patience=30, device=args.device), progress=False)
        wall = time.perf_counter() - t0
        result["cohort_fit"] = {
            "animals": 40,
            "trials_per_animal": 6000,
            "rule": "dnn",
            "epochs_run": len(res.history),
            "best_epoch": res.best_epoch,
            "wall_seconds": wall,
            "seconds_per_epoch": wall / len(res.history),
            "val_ll": res.best_val_ll,
            "within_10_min": wall <= 600,
        }
        print(f"cohort fit 40 x 6000 dnn: {wall:.0f} s ({len(res.history)} epochs, best {res.best_epoch}, val LL {res.best_val_ll:.4f})")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit_throughput.json").write_text(json.dumps(result, indent=2))
    md = ["# Fit throughput", "", f"`.venv/bin/python bench/fit_throughput.py` on {result['machine']}, torch {torch.__version__}, {args.threads} thread(s).", ""]
    md.append(table.to_markdown(index=False, floatfmt=",.1f"))
    if "cohort_fit" in result:
        md += ["", "Cohort fit: " + ", ".join(f"{k} = {v}" for k, v in result["cohort_fit"].items())]  # type: ignore[union-attr]
    (out / "fit_throughput.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'fit_throughput.json'}")


if __name__ == "__main__":
    main()
