"""Fit-throughput benchmark: trial-steps per second, forward + backward, per rule.

Measures, in one run on this machine:

* every model rule at batch 1 and batch 32 animals (TBPTT epochs over simulated trials);
* a naive DNN step (``nn.Sequential`` on the concatenated inputs every trial, no precomputation)
  at the same batch sizes: the baseline the optimised rules are compared against;
* the wall time of a whole cohort fit: 40 animals x 6,000 trials, DNN rule, early stopping;
* the fused rollouts of the dnn, dnn_delta and rnn rules (``twin/models/rules/fused.py``) against the
  per-step autograd loop they replace (``FitConfig.fused=False``, kept as the in-run reference):
  training-epoch throughput at batch 32 and 200 animals, interleaved old/new rounds, the ratio
  per round in CPU seconds and wall seconds; aten operations per trial step (forward +
  backward, counted by a dispatch mode, so independent of the machine's load); and the
  validation log-likelihood of the same short fit through both paths on fixed seeds.

Prints tables and writes ``bench/results/fit_throughput.{json,md}`` (the fused comparison:
``bench/results/fit_throughput_fused.{json,md}``). Run from the repo root:

    .venv/bin/python bench/fit_throughput.py              # full (~5-10 min on 2 cores)
    .venv/bin/python bench/fit_throughput.py --no-cohort  # throughput only (~1 min)
    .venv/bin/python bench/fit_throughput.py --fused-only # the fused-vs-reference comparison (~2-3 min)
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
from torch.utils._python_dispatch import TorchDispatchMode

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.data.batch import make_batch
from twin.data.splits import split_last_sessions
from twin.fit.train import FitConfig, fit, train_epoch
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.policy import choice_log_likelihood
from twin.models.rules import MODEL_RULES, UpdateInputs, base
from twin.sim.simulate import simulate
from twin.protocol import IBL_DEFAULT

FUSED_RULES = ("dnn", "dnn_delta", "rnn")
"""The rules with a fused training rollout (``twin/models/rules/fused.py``)."""


def rule_throughput(rule: str, batch, epochs: int, chunk: int = 500, fused: bool = True) -> float:
    """Trial-steps per second of the fitting path (``twin.fit.train.train_epoch``: TBPTT epochs,
    forward + backward + Adam), after one warm-up epoch; no validation pass is timed."""
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec(rule)).train()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    inp = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)
    train_epoch(model, opt, batch, inp, chunk, params, 10.0, fused=fused)
    t0 = time.perf_counter()
    steps = sum(train_epoch(model, opt, batch, inp, chunk, params, 10.0, fused=fused)[1] for _ in range(epochs))
    return steps / (time.perf_counter() - t0)


class _OpCount(TorchDispatchMode):
    """Counts the aten operations dispatched (forward and backward) inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.n += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(rule: str, batch, fused: bool) -> float:
    """aten operations per trial step of a teacher-forced rollout, forward + backward of the
    choice likelihood: the count over 200 steps minus the count over 100, divided by 100 (the
    per-chunk work, precompute, loss, cancels)."""
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec(rule)).train()
    counts = []
    part = batch
    for n in (100, 200):
        inp = UpdateInputs.from_trials(part.x[:, :n], part.y[:, :n], part.reward[:, :n], part.answer[:, :n], part.session_start[:, :n])
        with _OpCount() as c:
            pre = model.rule.precompute(inp)
            w, h = model.initial(part.n_animals)
            ws, _ = model.rollout(w, h, pre, fused=fused)
            (-choice_log_likelihood(ws.transpose(0, 1), part.x[:, :n], part.y[:, :n]).sum()).backward()
        counts.append(c.n)
    return (counts[1] - counts[0]) / 100


def fused_vs_reference(rule: str, batch, rounds: int, chunk: int = 500) -> dict[str, object]:
    """Training-epoch throughput of the fused rollout and of the per-step reference, measured in
    interleaved rounds (each round one epoch of each, the order alternating), after one warm-up
    epoch of each; the ratio is taken per round, so both paths see the same machine load."""
    runs = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = LearnerModel(ModelSpec(rule)).train()
        params = list(model.parameters())
        runs[fused] = (model, torch.optim.Adam(params, lr=3e-3), params)
    inp = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)

    def epoch(fused: bool) -> tuple[float, float, int]:
        model, opt, params = runs[fused]
        c0, w0 = time.process_time(), time.perf_counter()
        steps = train_epoch(model, opt, batch, inp, chunk, params, 10.0, fused=fused)[1]
        return time.process_time() - c0, time.perf_counter() - w0, steps

    epoch(False), epoch(True)  # warm-up
    cpu = {False: [], True: []}
    wall = {False: [], True: []}
    steps = 0
    for r in range(rounds):
        for fused in ((False, True) if r % 2 == 0 else (True, False)):
            c, w, steps = epoch(fused)
            cpu[fused].append(c)
            wall[fused].append(w)
    med = lambda v: float(pd.Series(v).median())  # noqa: E731
    return {
        "rule": rule,
        "animals": batch.n_animals,
        "trials_per_animal": batch.n_trials,
        "rounds": rounds,
        "reference_steps_per_cpu_s": steps / med(cpu[False]),
        "fused_steps_per_cpu_s": steps / med(cpu[True]),
        "ratio_cpu": med([a / b for a, b in zip(cpu[False], cpu[True])]),
        "ratio_wall": med([a / b for a, b in zip(wall[False], wall[True])]),
        "ratio_cpu_per_round": [a / b for a, b in zip(cpu[False], cpu[True])],
    }


def val_ll_check(rule: str, batch, epochs: int) -> dict[str, object]:
    """The same short fit (fixed seeds) through the reference and the fused rollouts: the best
    validation log-likelihood of each (nats/trial) and their difference."""
    train, val = split_last_sessions(batch)
    res = {fused: fit(ModelSpec(rule), train, val, FitConfig(epochs=epochs, patience=epochs, seed=0, fused=fused), progress=False) for fused in (False, True)}
    diff = abs(res[True].best_val_ll - res[False].best_val_ll)
    return {
        "rule": rule, "animals": batch.n_animals, "trials_per_animal": batch.n_trials, "epochs": epochs,
        "val_ll_reference": res[False].best_val_ll, "val_ll_fused": res[True].best_val_ll, "abs_diff": diff, "within_0.001": diff <= 1e-3,
    }


def fused_report(args: argparse.Namespace, uptime: str) -> None:
    """The fused-vs-reference comparison: throughput ratios, ops per step, validation LL.

    The fused rollout is measured at every size, above ``FUSED_MAX_BATCH`` too (where a fit
    takes the step loop), so the limit stays checked."""
    shipped_limit = base.FUSED_MAX_BATCH
    base.FUSED_MAX_BATCH = 10**9
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    big = make_batch(simulate(truth, IBL_DEFAULT, max(args.sizes), args.fused_trials, seed=0).trials)
    rows = []
    for b in args.sizes:
        for rule in FUSED_RULES:
            rows.append(fused_vs_reference(rule, big.select(list(range(b))), args.rounds))
            print({k: v for k, v in rows[-1].items() if k != "ratio_cpu_per_round"}, flush=True)
    b32 = big.select(list(range(min(32, big.n_animals))))
    ops = [{"rule": rule, "reference_ops_per_step": ops_per_step(rule, b32, False), "fused_ops_per_step": ops_per_step(rule, b32, True)} for rule in FUSED_RULES]
    for o in ops:
        print(o, flush=True)
    small = make_batch(simulate(truth, IBL_DEFAULT, args.ll_animals, args.ll_trials, seed=2).trials)
    lls = [val_ll_check(rule, small, args.ll_epochs) for rule in FUSED_RULES]
    for o in lls:
        print(o, flush=True)
    base.FUSED_MAX_BATCH = shipped_limit
    result = {
        "fused_max_batch": shipped_limit,
        "machine": f"{platform.machine()} {platform.processor()}", "torch": torch.__version__, "threads": args.threads,
        "uptime_before": uptime, "uptime_after": _uptime(), "throughput": rows, "ops_per_step": ops, "val_ll": lls,
    }
    if args.out is None:  # a smoke run writes nothing
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit_throughput_fused.json").write_text(json.dumps(result, indent=2))
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "ratio_cpu_per_round"} for r in rows])
    md = [
        "# Fit throughput: fused rollouts against the per-step reference", "",
        f"`.venv/bin/python bench/fit_throughput.py --fused-only` on {result['machine']}, torch {torch.__version__}, "
        f"{args.threads} thread(s); the reference (`FitConfig.fused=False`, the per-step autograd loop) and the fused "
        f"rollout run in the same process, interleaved, {args.rounds} rounds of one training epoch each (TBPTT 500, "
        "forward + backward + Adam); ratios are medians of the per-round ratios. The fused rollout is measured at "
        f"every size; fits take it up to `FUSED_MAX_BATCH` = {shipped_limit} animals per batch and the step loop above.", "",
        f"Machine load (`uptime`): before `{uptime}`, after `{result['uptime_after']}`.", "",
        table.to_markdown(index=False, floatfmt=",.2f"), "",
        f"aten operations per trial step (forward + backward, batch {b32.n_animals}):", "",
        pd.DataFrame(ops).to_markdown(index=False, floatfmt=",.1f"), "",
        f"Validation log-likelihood of the same fit ({args.ll_epochs} epochs, seed 0, {args.ll_animals} animals x {args.ll_trials:,} trials, last session held out):", "",
        pd.DataFrame(lls).to_markdown(index=False, floatfmt=".6f"),
    ]
    (args.out / "fit_throughput_fused.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / 'fit_throughput_fused.json'}")


def _uptime() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


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
    ap.add_argument("--fused-only", action="store_true", help="only the fused-vs-reference comparison")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused-vs-reference comparison")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 200], help="animals per batch in the fused comparison")
    ap.add_argument("--fused-trials", type=int, default=1000, help="trials per animal in the fused comparison")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path in the fused comparison")
    ap.add_argument("--ll-epochs", type=int, default=5, help="epochs of the validation-LL check fits")
    ap.add_argument("--ll-animals", type=int, default=16, help="animals of the validation-LL check fits")
    ap.add_argument("--ll-trials", type=int, default=1000, help="trials per animal of the validation-LL check fits")
    args = ap.parse_args()
    out = args.out if args.out is not None or args.smoke else Path("bench/results")
    args.out = out
    if args.smoke:
        args.trials, args.epochs, args.no_cohort = 40, 1, True
        args.sizes, args.fused_trials, args.rounds, args.ll_epochs, args.ll_animals, args.ll_trials = [2], 40, 1, 1, 4, 1200
    batches = (1, 2) if args.smoke else (1, 32)
    torch.set_num_threads(args.threads)
    if not args.no_fused:
        fused_report(args, _uptime())
    if args.fused_only:
        return
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
