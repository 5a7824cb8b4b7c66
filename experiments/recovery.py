"""Rule-recovery experiment (issue: learning-rule core, "done when" 1).

For each ground-truth family (REINFORCE, asymmetric prediction-error, reward-history), simulate
46 animals x 6,000 trials under the default IBL protocol, fit static / REINFORCE / DNN rules (the
delta-structured DNN on the Markovian truths, the RNN on the history-dependent one) on 30 animals
(6 more for early stopping), and score all of them on 10 held-out animals: LL-gain ratio, Δw-map
correlations, and each flexible rule's paired gap over REINFORCE. Fits run Adam with truncated
BPTT, then full-batch L-BFGS on the untruncated likelihood. Each flexible rule is its own job (with
the cheap static and REINFORCE fits repeated, identically seeded), and jobs run in parallel processes.

Writes ``experiments/results/recovery.csv``, ``recovery.md`` and figures under
``experiments/results/figures/``. Run from the repository root:

    .venv/bin/python experiments/recovery.py --no-slow  # full size, ~40 min on 2 cores (make recovery)
    .venv/bin/python experiments/recovery.py --quick    # small smoke version (~2 min)
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from twin.sim.agents import SLOW_REINFORCE, Family, GroundTruth
from twin.fit.train import FitConfig
from twin.fit.recovery import RecoveryConfig, RecoveryResult, run_recovery
from twin_cli.figures import write_figures

DEFAULT_RULES = {
    Family.REINFORCE: ("static", "reinforce", "dnn", "dnn_delta"),
    Family.ASYMMETRIC: ("static", "reinforce", "dnn", "dnn_delta"),
    Family.HISTORY: ("static", "reinforce", "dnn", "rnn"),
    Family.PERSEVERATION: ("static", "reinforce", "dnn", "rnn"),
    Family.PLATEAU: ("static", "reinforce", "dnn", "dnn_delta"),
    Family.FORGETTING: ("static", "reinforce", "dnn", "dnn_delta"),
}
"""Rules fitted per family: the Markovian DNNs on the Markovian truths (``forgetting`` is Markovian:
the DNNs see the session-start flag), the RNN where history matters (``perseveration``'s choice
trace is history)."""

MATCHING_RULES = {
    Family.REINFORCE: ("dnn", "dnn_delta"),
    Family.ASYMMETRIC: ("dnn", "dnn_delta"),
    Family.HISTORY: ("rnn",),
    Family.PERSEVERATION: ("rnn",),
    Family.PLATEAU: ("dnn", "dnn_delta"),
    Family.FORGETTING: ("dnn", "dnn_delta"),
}
"""The flexible rules meant to recover each family (Markovian DNNs for the Markovian truths)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small cohort and few epochs (smoke test)")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    ap.add_argument("--families", nargs="+", default=[f.value for f in Family], choices=[f.value for f in Family])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--animals", type=int, default=RecoveryConfig.n_animals,
        help=f"cohort size per family, held-out animals included (default {RecoveryConfig.n_animals}: {RecoveryConfig.n_test} of them held out, ~{RecoveryConfig.val_fraction:.0%}% of the rest for early stopping)",
    )
    ap.add_argument("--no-slow", action="store_true", help="skip the slow-learning identifiability check")
    ap.add_argument(
        "--rules", nargs="+", default=None,
        help="rules to fit on every family (default: static reinforce dnn dnn_delta on the Markovian truths, static reinforce dnn rnn on the history one)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="fits run in parallel processes (default 2)")
    ap.add_argument("--stem", default="recovery", help="output file stem (default: recovery)")
    ap.add_argument(
        "--lbfgs-rounds", type=int, default=4,
        help="full-batch L-BFGS rounds (50 iterations each) on the untruncated likelihood after Adam (default 4; 0 = Adam only)",
    )
    ap.add_argument("--hidden", type=int, default=8, help="hidden size of the DNN/RNN rules (default 8)")
    ap.add_argument(
        "--free-dnn-delta", action="store_true",
        help="fit dnn_delta without its structural constraints (default: mirror-symmetric, drift only overnight)",
    )
    ap.add_argument("--progress", action="store_true", help="show every fit's progress bars (on stderr, one per worker)")
    ap.add_argument(
        "--update", action="store_true",
        help="replace only the families run now in an existing table (stem.csv), keeping the other families' rows",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = RecoveryConfig(
        seed=args.seed, n_animals=args.animals, fit=FitConfig(epochs=300, patience=30, lr_patience=10, lbfgs_rounds=args.lbfgs_rounds), rule_options=dict(hidden_size=args.hidden, mirror_symmetric=not args.free_dnn_delta, within_session_drift=args.free_dnn_delta),
    )
    if args.quick:
        cfg = replace(cfg, n_animals=12, n_test=4, n_trials=1500, fit=FitConfig(epochs=15, patience=5, lbfgs_rounds=min(args.lbfgs_rounds, 1), lbfgs_iterations=10))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs: list[tuple[str, Family, RecoveryConfig, GroundTruth | None]] = []
    families = [(Family(name).value, Family(name), None) for name in args.families]
    if not args.no_slow:
        # identifiability check: a REINFORCE cohort learning at half the rate
        families.append(("reinforce (slow)", Family.REINFORCE, SLOW_REINFORCE))
    for label, fam, truth in families:
        rules = tuple(args.rules) if args.rules else DEFAULT_RULES[fam]
        jobs += [(label, fam, replace(cfg, rules=part), truth) for part in _split_rules(rules)]
    # the flexible fits are the longest (the RNN's most): start them first
    jobs.sort(key=lambda j: (j[1] is not Family.HISTORY, len(j[2].rules) < 3))
    figures_dir = args.out / "figures" if args.stem == "recovery" else None
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        futures = [pool.submit(_run_one, fam, c, truth, args.progress) for _, fam, c, truth in jobs]
        results = [f.result() for f in futures]
    tables = []
    for label, fam, truth in families:
        res = _merge([r for (lab, *_), r in zip(jobs, results) if lab == label])
        if figures_dir is not None and truth is None:
            write_figures(res, figures_dir, models=("reinforce", "dnn", "dnn_delta", "rnn"))
        tables.append(res.table.assign(family=label, matching_rule=lambda d, fam=fam: d["model"].isin(MATCHING_RULES[fam])))
    order = [f.value for f in Family] + ["reinforce (slow)"]
    tables.sort(key=lambda t: order.index(str(t["family"].iloc[0])))
    for tab in tables:
        print(tab.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
    table = pd.concat(tables, ignore_index=True)
    kept: list[str] = []
    if args.update and (args.out / f"{args.stem}.csv").exists():
        old = pd.read_csv(args.out / f"{args.stem}.csv")
        old = old[~old["family"].isin(table["family"].unique())]
        kept = list(dict.fromkeys(old["family"]))
        table = pd.concat([old, table], ignore_index=True)
        table = table.sort_values("family", key=lambda f: f.map(order.index), kind="stable", ignore_index=True)
    table.to_csv(args.out / f"{args.stem}.csv", index=False)
    wall = time.perf_counter() - t0
    lines = [
        "# Rule recovery on synthetic cohorts",
        "",
        f"Command: `.venv/bin/python experiments/recovery.py{' --quick' if args.quick else ''}"
        f"{(' --families ' + ' '.join(args.families)) if args.families != [f.value for f in Family] else ''}"
        f"{(' --rules ' + ' '.join(args.rules) + ' --stem ' + args.stem) if args.rules else ''}{' --no-slow' if args.no_slow else ''}{' --update' if args.update else ''}"
        f"{f' --animals {args.animals}' if args.animals != RecoveryConfig.n_animals else ''}{f' --seed {args.seed}' if args.seed != 0 else ''}"
        f" --lbfgs-rounds {args.lbfgs_rounds} --hidden {args.hidden}{' --free-dnn-delta' if args.free_dnn_delta else ''}` "
        f"(seed {args.seed}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; total wall time {wall / 60:.1f} min)"
        + (f"; the rows of {', '.join(kept)} are kept from an earlier run (`--update`; their cohort is in their n_train .. n_trials columns)." if kept else "."),
        "",
        f"Cohort of this run, per family: {cfg.n_animals} animals x {cfg.n_trials} trials, default IBL protocol; "
        f"{cfg.n_animals - cfg.n_test} training animals (of which ~{cfg.val_fraction:.0%} for early stopping), "
        f"{cfg.n_test} held-out animals; each row's n_train / n_val / n_test / n_trials columns give its own cohort. "
        "Truth parameters: `twin.sim.agents.DEFAULT_TRUTHS`.",
        "",
        "LL-gain ratio = (LL(model) - LL(static)) / (LL(truth) - LL(static)) on held-out animals, LL(static) being each held-out "
        "animal's own (in-sample) static fit (row static_own); ll_gain_ratio_pop_static uses the population static rule's LL "
        "instead (more lenient; tables without that column hold this lenient ratio under the name ll_gain_ratio); "
        "dw_corr = the smallest per-weight correlation between inferred and true Δw maps (Markovian rules on Markovian truths): "
        "on the map's grid (200 held-out weight states x 11 signed contrasts x correct/error, every cell weighted alike); "
        "dw_corr_trials = the same on 20,000 sampled held-out trials (true weights, stimulus and outcome as they occurred). "
        "gap_vs_reinforce = LL-gain ratio of the model minus that of REINFORCE on the same held-out animals, with a paired "
        "bootstrap 95% interval over animals (gap_lo, gap_hi) and the number of held-out animals the model predicts better "
        "(wins_vs_reinforce). Fits: Adam with truncated BPTT, then full-batch L-BFGS on the untruncated likelihood "
        "(`FitConfig.lbfgs_rounds`), the checkpoint with the best validation likelihood kept.",
        "",
        table.to_markdown(index=False, floatfmt=".4f") if _has_tabulate() else "```\n" + table.to_string(index=False) + "\n```",
        "",
    ]
    (args.out / f"{args.stem}.md").write_text("\n".join(lines))
    print(f"wrote {args.out / args.stem}.csv and {args.stem}.md in {wall / 60:.1f} min")


BASE_RULES = ("static", "reinforce")
"""Rules every job of a family fits: the LL-gain ratio and the gap over REINFORCE need them."""


def _split_rules(rules: tuple[str, ...]) -> list[tuple[str, ...]]:
    """One job per flexible rule, each with the (cheap) base rules, so one family uses every core.

    The cohort, split and fit seeds are the same in every job, so the base fits are identical
    and :func:`_merge` keeps one copy.
    """
    base = tuple(r for r in rules if r in BASE_RULES)
    flexible = [r for r in rules if r not in BASE_RULES]
    return [rules] if len(flexible) <= 1 else [base + (r,) for r in flexible]


def _merge(results: list[RecoveryResult]) -> RecoveryResult:
    """One family's result from its jobs: rows, fits and Δw maps of every rule (first copy kept)."""
    first = results[0]
    table = pd.concat([r.table for r in results], ignore_index=True).drop_duplicates("model", keep="first", ignore_index=True)
    fits = {k: v for r in reversed(results) for k, v in r.fits.items()}
    dw = {k: v for r in reversed(results) for k, v in r.dw.items()}
    return replace(first, table=table, fits=fits, dw=dw)


def _run_one(fam: Family, cfg: RecoveryConfig, truth: GroundTruth | None, progress: bool = False) -> RecoveryResult:
    """Part of one family's recovery (some of its rules) in a worker process."""
    torch.set_num_threads(1)
    return run_recovery(fam, cfg, truth=truth, progress=progress)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
