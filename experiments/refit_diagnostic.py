"""What makes a flexible rule's cohort fit stop in its first epochs: one rule fitted several ways
on the same cohort, each scored on held-out animals the way a new animal is used.

On a ground-truth family's cohort (the fitting animals of ``experiments/simulator_fidelity.py``:
30 fitting + 20 held-out animals x 5,000 trials, one cohort per ``--seed``) the rule is fitted
(``--epochs`` at most, ``--patience``; every ``--ema-decay``, :attr:`FitConfig.ema_decay`) either

* ``last``: on all but each animal's last session, validated on the last one (what a cohort
  fit, :func:`twin.fit.cohort.fit_population`, and an ensemble's refit do), or
* ``late``: on sessions before ``k`` (the smallest animal's session count - 1), validated on
  session ``k`` (an ensemble's stacking phase without a refit), or
* ``last-whole``: as ``last``, after dropping each animal's final session when it is cut short
  (a simulated animal's trial budget ends mid-session: its last session can hold a few trials),
  so the last *whole* session validates.

Each fit's best epoch is printed, and the held-out animals' log-likelihood per trial after
their first 2 sessions, from starts inferred from those sessions (as the fidelity experiment
scores them), minus that of each animal's own static fit.

Usage: ``python experiments/refit_diagnostic.py [--family perseveration ...] [--seed 0 ...]
[--modes last late last-whole] [--ema-decay 0 ...] [--epochs 60] [--patience 10] [--rule dnn]``;
writes ``experiments/results/refit_diagnostic.md`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.simulator_fidelity import FidelityConfig, _sessions_upto, _summed, simulate_cohort  # noqa: E402
from twin.analysis.evaluate import own_static_scores  # noqa: E402
from twin.data.batch import make_batch  # noqa: E402
from twin.data.splits import split_last_sessions, split_sessions  # noqa: E402
from twin.fit.adapt import cohort_start_prior, infer_start  # noqa: E402
from twin.fit.ensemble_cohort import component_log_likelihood  # noqa: E402
from twin.fit.train import FitConfig, fit  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.sim.agents import Family  # noqa: E402


VALIDATED_ON = {"last": "each animal's last session", "late": "session {k}", "last-whole": "each animal's last whole session"}


def drop_cut_sessions(df: pd.DataFrame, fraction: float = 0.5) -> pd.DataFrame:
    """``df`` without each animal's final session where it holds fewer than ``fraction`` of the
    animal's median session length (a session the trial budget cut short)."""
    n = df.groupby(["subject", "session"]).size().rename("n").reset_index()
    median = n.groupby("subject")["n"].transform("median")
    last = n.groupby("subject")["session"].transform("max")
    cut = n[(n["session"] == last) & (n["n"] < fraction * median)][["subject", "session"]]
    keyed = df.merge(cut.assign(_cut=True), on=["subject", "session"], how="left")
    return df[keyed["_cut"].isna().to_numpy()]


def run_one(family: Family, seed: int, args: argparse.Namespace) -> list[dict[str, object]]:
    """Every mode's fit of one family's cohort (animals, split and fits seeded by ``seed``)."""
    c = simulate_cohort(family, FidelityConfig(fit_animals=args.fit_animals, test_animals=args.test_animals, trials=args.trials, seed=seed))
    fitting, held = c.fitting, c.test
    batch = make_batch(fitting)
    k = int(fitting.groupby("subject")["session"].max().min()) - 1
    first_fit, first_test = make_batch(_sessions_upto(fitting, 2)), make_batch(_sessions_upto(held, 2))
    full = make_batch(held)
    scored = full.with_mask(full.mask & (full.session > 2))
    st = own_static_scores(scored)
    static = st.per_animal["ll"].to_numpy() * st.per_animal["n_trials"].to_numpy()
    cfg = FitConfig(epochs=args.epochs, patience=args.patience, seed=seed)
    if args.lr_patience is not None:
        cfg = replace(cfg, lr_patience=args.lr_patience)
    whole_df = drop_cut_sessions(fitting)
    whole = make_batch(whole_df)
    cut = int((fitting.groupby("subject")["session"].max() != whole_df.groupby("subject")["session"].max()).sum())
    rows: list[dict[str, object]] = []
    for mode, decay in [(m, d) for m in args.modes for d in args.ema_decay]:
        t0 = time.perf_counter()
        if mode == "last":
            train, val = split_last_sessions(batch)
        elif mode == "last-whole":
            train, val = split_last_sessions(whole)
        else:
            sp = split_sessions(batch, k)
            train, val = sp.train, sp.val
        res = fit(ModelSpec(args.rule), train, val, replace(cfg, ema_decay=decay), progress=False)
        starts = infer_start(res.model, first_test, cohort_start_prior(res.model, first_fit), fit_rate=True)
        ll = _summed(component_log_likelihood([starts[s] for s in first_test.subjects], scored), scored.mask)
        gain = float((ll - static).sum() / float(scored.mask.sum()))
        rows.append({
            "family": family.value, "seed": seed, "mode": mode, "ema_decay": decay, "validated_on": VALIDATED_ON[mode].format(k=k), "val_trials": int(val.mask.sum()),
            "cut_animals": cut, "best_epoch": res.best_epoch, "epochs_run": len(res.history), "new_animal_ll_minus_static_own": gain,
            "seconds": time.perf_counter() - t0,
        })
        print(f"{family.value} seed {seed} {mode} ema {decay}: best epoch {res.best_epoch} of {len(res.history)} run, held-out animals {gain:+.4f} nats/trial vs their own static fit ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", default=["perseveration"], choices=[f.value for f in Family])
    ap.add_argument("--rule", default="dnn")
    ap.add_argument("--fit-animals", type=int, default=30)
    ap.add_argument("--test-animals", type=int, default=20)
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr-patience", type=int, default=None, help="FitConfig.lr_patience (default: the library's)")
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="seeds of the animals, their split and the fits (one cohort each)")
    ap.add_argument("--modes", nargs="+", default=["last", "late", "last-whole"], choices=list(VALIDATED_ON))
    ap.add_argument("--ema-decay", type=float, nargs="+", default=[0.0], help="FitConfig.ema_decay values to fit with (0: no averaging)")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "refit_diagnostic.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [r for fam in args.family for seed in args.seed for r in run_one(Family(fam), seed, args)]
    command = "python experiments/refit_diagnostic.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = [
        "# Refit diagnostic: one rule, validated on the last session, on session k, or on the last whole session",
        "",
        f"`{command.strip()}`: rule {args.rule}, {args.fit_animals} fitting + {args.test_animals} held-out animals x {args.trials:,} trials per cohort, "
        f"{args.epochs} epochs at most, patience {args.patience}, step size halved after {args.lr_patience or FitConfig().lr_patience} epochs without improvement; k is the smallest fitting animal's session count − 1. Cut animals: fitting animals "
        "whose final session the trial budget cut to under half their median session. The script's docstring defines the columns.",
        "",
        "| family | seed | fit | EMA decay | validated on | validation trials | cut animals | best epoch | epochs run | held-out animals, LL/trial − own static (nats) |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {r['family']} | {r['seed']} | {r['mode']} | {r['ema_decay']:g} | {r['validated_on']} | {r['val_trials']:,} | {r['cut_animals']} | {r['best_epoch']} | {r['epochs_run']} | {r['new_animal_ll_minus_static_own']:+.4f} |"
            for r in rows
        ],
        "",
    ]
    args.out.write_text("\n".join(md))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
