"""Why an ensemble no longer refits its rules by default: one rule fitted two ways on the same
cohort, each scored on held-out animals the way a new animal is used.

On a ground-truth family's cohort (the fitting animals of ``experiments/simulator_fidelity.py``:
30 fitting + 20 held-out animals x 5,000 trials, seed 0) the rule is fitted (60 epochs at most,
patience 10) either

* ``last``: on all but each animal's last session, validated on the last one (what a cohort
  fit, :func:`twin.fit.cohort.fit_population`, and an ensemble's refit do), or
* ``late``: on sessions before ``k`` (the smallest animal's session count - 1), validated on
  session ``k`` (an ensemble's stacking phase without a refit).

Each fit's best epoch is printed, and the held-out animals' log-likelihood per trial after
their first 2 sessions, from starts inferred from those sessions (as the fidelity experiment
scores them), minus that of each animal's own static fit.

Usage: ``python experiments/refit_diagnostic.py [--family perseveration] [--rule dnn]``;
writes ``experiments/results/refit_diagnostic.md`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.simulator_fidelity import _sessions_upto, _summed  # noqa: E402
from twin.analysis.evaluate import own_static_scores  # noqa: E402
from twin.data.batch import make_batch  # noqa: E402
from twin.data.splits import split_last_sessions, split_sessions  # noqa: E402
from twin.fit.adapt import cohort_start_prior, infer_start  # noqa: E402
from twin.fit.ensemble_cohort import component_log_likelihood  # noqa: E402
from twin.fit.train import FitConfig, fit  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.protocol import IBL_DEFAULT  # noqa: E402
from twin.sim.agents import DEFAULT_TRUTHS, Family, Individuality, draw_individuals  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="perseveration", choices=[f.value for f in Family])
    ap.add_argument("--rule", default="dnn")
    ap.add_argument("--fit-animals", type=int, default=30)
    ap.add_argument("--test-animals", type=int, default=20)
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "refit_diagnostic.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fam = Family(args.family)
    gt = DEFAULT_TRUTHS[fam]
    n = args.fit_animals + args.test_animals
    w0, lr = draw_individuals(gt, n, Individuality(), seed=0)
    trials = simulate(gt.build(), IBL_DEFAULT, n, args.trials, seed=0, subject_prefix=fam.value, w0=w0, log_rate=lr).trials
    subjects = list(dict.fromkeys(trials["subject"]))
    perm = np.random.default_rng(0).permutation(n)
    test = [subjects[i] for i in sorted(perm[: args.test_animals].tolist())]
    fitting, held = trials[~trials["subject"].isin(test)], trials[trials["subject"].isin(test)]
    batch = make_batch(fitting)
    k = int(fitting.groupby("subject")["session"].max().min()) - 1
    first_fit, first_test = make_batch(_sessions_upto(fitting, 2)), make_batch(_sessions_upto(held, 2))
    full = make_batch(held)
    scored = full.with_mask(full.mask & (full.session > 2))
    st = own_static_scores(scored)
    static = st.per_animal["ll"].to_numpy() * st.per_animal["n_trials"].to_numpy()
    cfg = FitConfig(epochs=args.epochs, patience=args.patience, seed=0)
    rows = []
    for mode in ("last", "late"):
        t0 = time.perf_counter()
        if mode == "last":
            train, val = split_last_sessions(batch)
        else:
            sp = split_sessions(batch, k)
            train, val = sp.train, sp.val
        res = fit(ModelSpec(args.rule), train, val, cfg, progress=False)
        starts = infer_start(res.model, first_test, cohort_start_prior(res.model, first_fit), fit_rate=True)
        ll = _summed(component_log_likelihood([starts[s] for s in first_test.subjects], scored), scored.mask)
        gain = float((ll - static).sum() / float(scored.mask.sum()))
        rows.append({"mode": mode, "best_epoch": res.best_epoch, "epochs_run": len(res.history), "new_animal_ll_minus_static_own": gain, "seconds": time.perf_counter() - t0})
        print(f"{mode}: best epoch {res.best_epoch} of {len(res.history)} run, held-out animals {gain:+.4f} nats/trial vs their own static fit ({rows[-1]['seconds']:.0f} s)", flush=True)
    command = "python experiments/refit_diagnostic.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = [
        "# Refit diagnostic: one rule, validated on the last session or on session k",
        "",
        f"`{command.strip()}`: family {fam.value}, rule {args.rule}, {args.fit_animals} fitting + {args.test_animals} held-out animals x {args.trials:,} trials, "
        f"{args.epochs} epochs at most, patience {args.patience}, seed 0; k = {k}. The script's docstring defines the columns.",
        "",
        "| fit | validated on | best epoch | epochs run | held-out animals, LL/trial − own static (nats) |",
        "| --- | --- | ---: | ---: | ---: |",
        *[f"| {r['mode']} | {'each animal' + chr(39) + 's last session' if r['mode'] == 'last' else f'session {k}'} | {r['best_epoch']} | {r['epochs_run']} | {r['new_animal_ll_minus_static_own']:+.4f} |" for r in rows],
        "",
    ]
    args.out.write_text("\n".join(md))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
