"""Closed-loop validation of the curriculum optimizer on synthetic ground-truth learners.

For each ground-truth family (learning at the pace of IBL mice, with individual learning rates
and starting biases):

1. simulate a cohort under the IBL default protocol (the data a lab would have);
2. fit twins to it: the DNN population rule, adapted per animal (initial weights and rate
   multipliers), an ensemble of population fits with different seeds;
3. search curricula through the twins (Optuna TPE, batched), within the lab's constraints;
4. run fresh ground-truth animals, which no twin has seen, under the default and under the
   proposed curriculum (the same animals under both: paired), to ``trained_1a``;
5. report trials to criterion for both (mean, median, intervals), the realised speed-up with a
   95 % paired-bootstrap interval, and the speed-up the twins predicted.

The default protocol is :data:`twin.protocol.IBL_DEFAULT`, iblrig v8's trainingChoiceWorld rule
for rule; every predicted and realised speed-up is relative to it, and one sessions cap
(``--max-sessions``) bounds the twins' and the fresh animals' runs alike. Candidates are ranked by
the robust objective (the lower decile of the per-``(model, animal)`` speed-ups over the twins'
ensemble, :class:`optimizer.objective.RobustConfig`) and the best is reduced to the changes that
help robustly (:mod:`optimizer.attribution`).

With several families (``--families all``: every ground-truth family of
:class:`twin.sim.agents.Family`) a summary table across families is written too
(``closed_loop_families*.md``/``.csv``): predicted speed-up and its 90 % interval, realised
speed-up and its 95 % paired-bootstrap interval, ``|predicted - realised|`` in points, whether the
predicted interval covers the realised value, the never-trained fractions under the default and
the proposal, the proposal's changes, and the issue's done-when checks per family.

Usage::

    python experiments/closed_loop.py                 # full run, writes experiments/results/closed_loop*
    python experiments/closed_loop.py --quick         # a small, fast version (seconds to minutes)
    python experiments/closed_loop.py --families all --scale medium --n-fresh 300   # every family
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.protocol import IBL_DEFAULT, Curriculum  # noqa: E402
from optimizer.objective import FitRange, TwinPool, bootstrap_mean, paired_reduction  # noqa: E402
from optimizer.search import SearchConfig, search_curricula  # noqa: E402
from optimizer.space import Constraints, CurriculumSpace  # noqa: E402
from twin.sim.agents import PACED_TRUTHS, Family, Individuality, draw_individuals  # noqa: E402
from twin.fit.cohort import CohortFitConfig, adapt_animals, fit_population  # noqa: E402
from twin.fit.train import FitConfig  # noqa: E402
from twin.sim.forecast import Interval  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.sim.simulate import simulate  # noqa: E402
from twin.sim.training import TrainingRun, simulate_training  # noqa: E402
from twin.models.params import Adaptation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Sizes of the experiment.

    Attributes:
        n_fit: animals in the cohort the twins are fitted on.
        fit_trials: trials per fitted animal (under the default protocol).
        ensemble: population fits (seeds) per twin.
        rule: the twins' learning rules, comma-separated (each fitted ``ensemble`` times; the
            robust objective scores over every rule family and seed).
        fit_epochs: population fit epoch cap.
        search: the curriculum search settings; its ``max_sessions`` is also the sessions cap of
            the fresh animals' runs (the predicted and the realised speed-ups are computed with
            the same cap).
        n_fresh: fresh ground-truth animals per curriculum.
        seed: master seed.
    """

    n_fit: int = 40
    fit_trials: int = 10_000
    ensemble: int = 2
    rule: str = "dnn"
    fit_epochs: int = 80
    search: SearchConfig = SearchConfig(n_trials=48, batch_size=8, n_rollouts=4, rescore_top=3, rescore_rollouts=12, max_sessions=60)
    n_fresh: int = 200
    seed: int = 0


QUICK = ClosedLoopConfig(
    n_fit=8,
    fit_trials=3000,
    ensemble=1,
    fit_epochs=3,
    search=SearchConfig(n_trials=4, batch_size=2, n_rollouts=1, rescore_top=1, rescore_rollouts=2, max_sessions=10),
    n_fresh=16,
)

MEDIUM = ClosedLoopConfig(
    n_fit=12,
    fit_trials=6000,
    ensemble=2,
    fit_epochs=10,
    search=SearchConfig(n_trials=8, batch_size=8, n_rollouts=1, rescore_top=2, rescore_rollouts=2, max_sessions=40),
    n_fresh=300,
)
"""A scale at which every family runs within about an hour on two shared cores (the twins are
fitted on fewer animals, for fewer epochs, and the search sees fewer candidates and rollouts
than :class:`ClosedLoopConfig`'s full scale; there are more fresh animals)."""

SCALES: dict[str, ClosedLoopConfig] = {"quick": QUICK, "medium": MEDIUM, "full": ClosedLoopConfig()}


def paired_difference(default: np.ndarray, proposed: np.ndarray, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> Interval:
    """Mean of ``default - proposed`` trials over the same animals, bootstrap interval."""
    return bootstrap_mean(default - proposed, level, n_boot, seed)


def fit_twins(family: Family, cfg: ClosedLoopConfig) -> tuple[TwinPool, pd.DataFrame, float, float]:
    """Simulate the lab's cohort under the default protocol and fit its twins (an ensemble)."""
    truth = PACED_TRUTHS[family]
    w0, log_rate = draw_individuals(truth, cfg.n_fit, Individuality(), seed=cfg.seed)
    sim = simulate(truth.build(), IBL_DEFAULT, cfg.n_fit, cfg.fit_trials, seed=cfg.seed, w0=w0, log_rate=log_rate, subject_prefix=family.value)
    df = sim.trials
    t0 = time.perf_counter()
    ensemble: dict[str, list] = {s: [] for s in df["subject"].unique()}
    val_lls = []
    for rule in cfg.rule.split(","):
        for k in range(cfg.ensemble):
            config = CohortFitConfig(
                spec=ModelSpec(rule),
                fit=FitConfig(epochs=cfg.fit_epochs, patience=10, seed=cfg.seed + k),
                adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE,
            )
            pop = fit_population(df, config, progress=False)
            val_lls.append(pop.val_ll)
            for t in adapt_animals(pop, df):
                ensemble[t.subject].append(t.twin)
    seconds = time.perf_counter() - t0
    first = {s: ts[0].model for s, ts in ensemble.items()}
    return TwinPool.from_twins(ensemble, FitRange.from_trials(first, df)), df, seconds, float(np.mean(val_lls))


def fresh_runs(family: Family, curricula: list[Curriculum], cfg: ClosedLoopConfig) -> list[TrainingRun]:
    """The same fresh ground-truth animals (never seen by a twin) under each curriculum, with
    common random numbers: every curriculum's run draws from the same simulation seed, so two
    identical curricula give identical runs (a realised difference of exactly zero) and the
    paired difference of two curricula carries less run-to-run noise (the streams stay aligned
    until the curricula make the animals' trials differ)."""
    truth = PACED_TRUTHS[family]
    w0, log_rate = draw_individuals(truth, cfg.n_fresh, Individuality(), seed=cfg.seed + 777)
    model = truth.build()
    return [simulate_training(model, [cur] * cfg.n_fresh, cfg.search.max_sessions, seed=cfg.seed + 1000, w0=w0, log_rate=log_rate) for cur in curricula]


def run_family(family: Family, cfg: ClosedLoopConfig, progress: bool = True) -> dict[str, object]:
    """The whole closed loop for one family; returns its result row."""
    t0 = time.perf_counter()
    pool, df, fit_s, val_ll = fit_twins(family, cfg)
    space = CurriculumSpace(Constraints())
    search_cfg = replace(cfg.search, seed=cfg.seed)
    t1 = time.perf_counter()
    res = search_curricula(pool, space, search_cfg, progress=progress)
    search_s = time.perf_counter() - t1
    default_run, proposed_run = fresh_runs(family, [res.default.curriculum, res.best.curriculum], cfg)
    d = default_run.trials_to_criterion.double().numpy()
    p = proposed_run.trials_to_criterion.double().numpy()
    realised = paired_reduction(d, p, n_boot=4000, seed=cfg.seed)
    diff = paired_difference(d, p, seed=cfg.seed)
    predicted = res.predicted_speedup
    attr = res.attribution
    kept = [c for c in attr.changes if c.kept] if attr is not None else []
    return {
        "family": family.value,
        "twin_rule": cfg.rule,
        "twin_heldout_session_ll": val_ll,
        "ensemble": cfg.ensemble,
        "n_fit_animals": cfg.n_fit,
        "n_fresh_animals": cfg.n_fresh,
        "default_mean_trials": float(d.mean()),
        "default_median_trials": float(np.median(d)),
        "default_trials_q05": float(np.quantile(d, 0.05)),
        "default_trials_q95": float(np.quantile(d, 0.95)),
        "proposed_mean_trials": float(p.mean()),
        "proposed_median_trials": float(np.median(p)),
        "proposed_trials_q05": float(np.quantile(p, 0.05)),
        "proposed_trials_q95": float(np.quantile(p, 0.95)),
        "default_reached": float(default_run.reached.double().mean()),
        "proposed_reached": float(proposed_run.reached.double().mean()),
        "default_mean_sessions": float(default_run.sessions_to_criterion.double().mean()),
        "proposed_mean_sessions": float(proposed_run.sessions_to_criterion.double().mean()),
        "trials_saved_mean": diff.mean,
        "trials_saved_lo95": diff.lo,
        "trials_saved_hi95": diff.hi,
        "realised_speedup": realised.mean,
        "realised_speedup_lo95": realised.lo,
        "realised_speedup_hi95": realised.hi,
        "predicted_speedup": predicted.mean,
        "predicted_speedup_lo90": predicted.lo,
        "predicted_speedup_hi90": predicted.hi,
        "predicted_level": cfg.search.robust.level,
        "prediction_error_points": 100 * (predicted.mean - realised.mean),
        "max_sessions": cfg.search.max_sessions,
        "predicted_lower_quantile": res.robust.lower_quantile if res.robust is not None else float("nan"),
        "predicted_by_family": "; ".join(f"{f.family} {f.speedup.mean:+.1%}" for f in res.robust.by_family) if res.robust is not None else "",
        "proposed_changes": "; ".join(c.description for c in kept),
        "proposed_change_effects": "; ".join(
            f"{c.description}: drop-one {c.drop_one.mean:+.1%} [{c.drop_one.lo:+.1%}, {c.drop_one.hi:+.1%}], add-one {c.add_one.mean:+.1%} [{c.add_one.lo:+.1%}, {c.add_one.hi:+.1%}]"
            for c in kept
        ),
        "dropped_changes": "; ".join(f"{c.description} ({c.reason})" for c in attr.changes if not c.kept) if attr is not None else "",
        "kept_change_harmful_90": any(c.drop_one.hi < 0 for c in kept),
        "search_note": res.note,
        "twin_default_mean_trials": res.default.mean_trials.mean,
        "twin_proposed_mean_trials": res.best.mean_trials.mean,
        "proposed_warnings": "; ".join(res.best.warnings),
        "proposed_curriculum": res.best.curriculum.description,
        "fit_seconds": fit_s,
        "search_seconds": search_s,
        "total_seconds": time.perf_counter() - t0,
        "_result": res,
        "_runs": (default_run, proposed_run),
    }


def survival_figure(rows: list[dict[str, object]], path: Path) -> Path:
    """Fraction of fresh animals trained vs trials, default vs proposed, per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        for run, label, colour in zip(row["_runs"], ("IBL default", "proposed"), ("#666666", "#1f77b4")):  # type: ignore[arg-type]
            t = np.sort(run.trials_to_criterion.double().numpy()[run.reached.numpy()])
            ax.step(t, np.arange(1, len(t) + 1) / len(run.reached), where="post", label=label, color=colour)
        ax.set_title(f"{row['family']}: fresh ground-truth animals")
        ax.set_xlabel("trials")
        ax.set_ylabel("fraction trained_1a")
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


FAMILY_COLUMNS = (
    "family", "predicted", "realised", "abs_error_points", "interval_covers", "never_trained_default", "never_trained_proposed", "changes",
)


def summary_rows(rows: list[dict[str, object]]) -> pd.DataFrame:
    """One row per family: the predicted and realised speed-ups with their intervals, the error,
    the never-trained fractions, the proposal's changes and the issue's done-when checks.

    ``dw1`` (realised 95 % interval above zero, the family not slowed and no more never-trained
    animals than under the default), ``dw2`` (``|predicted - realised| <= 10`` points and the
    predicted interval covers the realised value), ``dw4`` (no kept change's drop-one effect is
    harmful with 90 % confidence).
    """
    out = []
    for r in rows:
        pred, lo, hi = float(r["predicted_speedup"]), float(r["predicted_speedup_lo90"]), float(r["predicted_speedup_hi90"])  # type: ignore[arg-type]
        real, rlo, rhi = float(r["realised_speedup"]), float(r["realised_speedup_lo95"]), float(r["realised_speedup_hi95"])  # type: ignore[arg-type]
        nd, np_ = 1 - float(r["default_reached"]), 1 - float(r["proposed_reached"])  # type: ignore[arg-type]
        err = 100 * abs(pred - real)
        covers = lo <= real <= hi
        out.append(
            {
                "family": r["family"],
                "predicted": f"{pred:+.1%} [{lo:+.1%}, {hi:+.1%}]",
                "realised": f"{real:+.1%} [{rlo:+.1%}, {rhi:+.1%}]",
                "abs_error_points": round(err, 1),
                "interval_covers": "yes" if covers else "no",
                "never_trained_default": f"{nd:.1%}",
                "never_trained_proposed": f"{np_:.1%}",
                "changes": r["proposed_changes"] or "none (default kept)",
                "dw1": "met" if rlo > 0 and np_ <= nd else "not met",
                "dw2": "met" if err <= 10 and covers else "not met",
                "dw4": "not met" if r["kept_change_harmful_90"] else "met",
                "predicted_speedup": pred,
                "predicted_lo90": lo,
                "predicted_hi90": hi,
                "realised_speedup": real,
                "realised_lo95": rlo,
                "realised_hi95": rhi,
                "default_mean_trials": r["default_mean_trials"],
                "proposed_mean_trials": r["proposed_mean_trials"],
                "max_sessions": r["max_sessions"],
                "n_fresh_animals": r["n_fresh_animals"],
                "search_note": r["search_note"],
            }
        )
    return pd.DataFrame(out)


def families_markdown(table: pd.DataFrame, rows: list[dict[str, object]], command: str, cfg: ClosedLoopConfig, seconds: float, runs: Sequence[str] = ()) -> str:
    """The across-families summary as Markdown (command, scale, table, done-when verdicts);
    ``runs``: the commands of runs made apart that ``command`` merged."""
    mean_real = float(table["realised_speedup"].mean())
    shown = list(FAMILY_COLUMNS) + ["dw1", "dw2", "dw4"]
    lines = [
        "# Closed-loop curriculum validation on every ground-truth family",
        "",
        f"Command: `{command}` ({seconds / 60:.0f} min{' of per-family wall time in all' if runs else ''}). Scale: `{json.dumps(asdict(cfg), default=str)}`",
        "",
        *([f"Merging the runs (made side by side, one process each, `nice -n 10`, 1 torch thread): {'; '.join(f'`{r}`' for r in runs)}", ""] if runs else []),
        f"Default: `{IBL_DEFAULT.name}` (iblrig v8 trainingChoiceWorld, rule for rule). One sessions cap, {cfg.search.max_sessions}, "
        f"for the twins' predictions and the fresh animals' runs. {cfg.n_fresh} fresh ground-truth animals per family, the same animals "
        f"under both curricula (paired). Twins: rule(s) `{cfg.rule}`, {cfg.ensemble} population fit(s) each, fitted on {cfg.n_fit} animals "
        f"x {cfg.fit_trials} trials under the default. Candidates ranked by the {cfg.search.robust.statistic.value} "
        f"(q = {cfg.search.robust.quantile}) of the per-(model, animal) speed-ups; the proposal is the minimal set of changes "
        f"that help robustly (drop-one {cfg.search.attribution.level:.0%} intervals).",
        "",
        f"Predicted: the twins' speed-up with its {cfg.search.robust.level:.0%} interval (animals and models resampled). "
        "Realised: on the fresh animals, with a 95 % paired-bootstrap interval. Never trained: fraction of fresh animals "
        f"not at trained_1a within the cap (their trials count as those done, so realised speed-ups are of censored counts). "
        "The fresh animals' two runs share the animals (starting weights, learning rates) and the simulation seed (common random "
        "numbers), so where the search kept the default (\"none (default kept)\") the realised figure is exactly zero.",
        "",
        table[shown].to_markdown(index=False),
        "",
        f"Mean realised speed-up across families: {mean_real:+.1%} (done-when 1 asks >= 25 %: {'met' if mean_real >= 0.25 else 'not met'}).",
        "",
        "dw1: realised 95 % interval above zero and no more never-trained animals than the default; "
        "dw2: |predicted - realised| <= 10 points and the predicted interval covers the realised value; "
        "dw4: no kept change harmful by its drop-one effect with 90 % confidence.",
        "",
    ]
    if all("twin_default_mean_trials" in r for r in rows):
        lines += [
            "Twins against the fresh animals under the default (mean trials to trained_1a within the cap; the twins' own figure is "
            "over their fitted animals and rollouts): "
            + "; ".join(f"{r['family']} twins {float(r['twin_default_mean_trials']):.0f} vs fresh {float(r['default_mean_trials']):.0f}" for r in rows),  # type: ignore[arg-type]
            "",
        ]
    lines += ["Per family, the kept changes' effects (drop-one, add-one; twins' 90 % intervals), the changes dropped, and notes:", ""]
    for r in rows:
        lines.append(f"- {r['family']}: {r['proposed_change_effects'] or 'no change kept'}" + (f"; dropped: {r['dropped_changes']}" if r["dropped_changes"] else "") + (f"; note: {r['search_note']}" if r["search_note"] else ""))
    lines.append("")
    return "\n".join(lines)


def merge_runs(csvs: list[Path], out: Path, stem: str, command: str, cfg: ClosedLoopConfig) -> pd.DataFrame:
    """The across-families summary of runs made apart (say, families split over processes): each
    run's per-family CSV (``closed_loop_<scale>_<rule>.csv``) and, beside it, its Markdown's
    command line, which the summary states."""
    frames = [pd.read_csv(c, keep_default_na=False) for c in csvs]
    raw = pd.concat(frames, ignore_index=True)
    order = {f.value: i for i, f in enumerate(Family)}
    raw = raw.sort_values("family", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in raw.to_dict(orient="records")]
    for r in rows:
        r["kept_change_harmful_90"] = str(r["kept_change_harmful_90"]).lower() == "true"
    runs = []
    for c in csvs:
        md = c.with_suffix(".md")
        line = next((ln for ln in md.read_text().splitlines() if ln.startswith("Command: `")), "") if md.exists() else ""
        runs.append(line.split("`")[1] if line else str(c))
    summary = summary_rows(rows)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / f"{stem}.csv", index=False)
    raw.to_csv(out / f"{stem}_runs.csv", index=False)
    seconds = float(raw["total_seconds"].sum())
    (out / f"{stem}.md").write_text(families_markdown(summary, rows, command, cfg, seconds, runs))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small, fast version (for tests and smoke runs); same as --scale quick")
    ap.add_argument("--scale", choices=sorted(SCALES), default=None, help="sizes of the run (default: full)")
    ap.add_argument("--families", nargs="+", default=["reinforce", "asymmetric"], choices=[f.value for f in Family] + ["all"], help="ground-truth families ('all': every one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rule", default="dnn", help="the twins' learning rule(s), comma-separated (dnn, rnn, reinforce, ...)")
    ap.add_argument("--n-fresh", type=int, default=None, help="fresh ground-truth animals per family (overrides the scale)")
    ap.add_argument("--max-sessions", type=int, default=None, help="the one sessions cap of predictions and validation (overrides the scale)")
    ap.add_argument("--stem", default=None, help="file name stem of the across-families summary (default closed_loop_families[_quick]_<rule>)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="only write the across-families summary of these runs' per-family CSVs (made with the same scale)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scale = "quick" if args.quick else (args.scale or "full")
    cfg = replace(SCALES[scale], rule=args.rule)
    if args.n_fresh is not None:
        cfg = replace(cfg, n_fresh=args.n_fresh)
    if args.max_sessions is not None:
        cfg = replace(cfg, search=replace(cfg.search, max_sessions=args.max_sessions))
    if args.merge:
        argv_shown = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
        stem = args.stem or f"closed_loop_families{'' if scale == 'full' else '_' + scale}_{args.rule.replace(',', '_')}"
        summary = merge_runs(args.merge, args.out, stem, f"python experiments/closed_loop.py {argv_shown}", cfg)
        print(summary[list(FAMILY_COLUMNS) + ["dw1", "dw2", "dw4"]].to_string(index=False))
        return 0
    families = [f.value for f in Family] if "all" in args.families else args.families
    args.out.mkdir(parents=True, exist_ok=True)
    rule_tag = args.rule.replace(",", "_")
    tag = "" if scale == "full" else f"_{scale}"
    t_start = time.perf_counter()
    rows = []
    for fam in families:
        row = run_family(Family(fam), cfg, progress=False)
        rows.append(row)
        res = row["_result"]
        res.save(args.out / f"closed_loop{tag}_{fam}_{rule_tag}")  # type: ignore[union-attr]
        print(
            f"{fam}: default {row['default_mean_trials']:.0f} trials (median {row['default_median_trials']:.0f}), proposed "
            f"{row['proposed_mean_trials']:.0f} (median {row['proposed_median_trials']:.0f}); realised speed-up "
            f"{row['realised_speedup']:.1%} [{row['realised_speedup_lo95']:.1%}, {row['realised_speedup_hi95']:.1%}], predicted "
            f"{row['predicted_speedup']:.1%} [{row['predicted_speedup_lo90']:.1%}, {row['predicted_speedup_hi90']:.1%}]; "
            f"changes: {row['proposed_changes'] or 'none'}; sessions cap {row['max_sessions']} for both; {row['total_seconds']:.0f} s",
            flush=True,
        )
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    stem = "closed_loop" + tag + f"_{rule_tag}"
    table.to_csv(args.out / f"{stem}.csv", index=False)
    survival_figure(rows, args.out / f"{stem}_trained_fraction.png")
    cols = [
        "family", "twin_rule", "twin_heldout_session_ll", "default_mean_trials", "proposed_mean_trials", "default_median_trials", "proposed_median_trials",
        "trials_saved_mean", "trials_saved_lo95", "trials_saved_hi95", "realised_speedup", "realised_speedup_lo95",
        "realised_speedup_hi95", "predicted_speedup", "predicted_lower_quantile", "prediction_error_points", "max_sessions", "default_mean_sessions", "proposed_mean_sessions",
    ]
    argv_shown = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    command = f"python experiments/closed_loop.py {argv_shown}".strip()
    md = [
        "# Closed-loop curriculum validation" + (f" ({scale})" if tag else ""),
        "",
        f"Command: `{command}`. Config: `{json.dumps(asdict(cfg), default=str)}`",
        "",
        table[cols].to_markdown(index=False, floatfmt=".3g"),
        "",
        "Proposed curricula:",
        "",
        *[
            f"- {r['family']}: {r['proposed_curriculum']}; changes kept: {r['proposed_changes'] or 'none'}; predicted per twin family: {r['predicted_by_family']}"
            + (f" (warnings: {r['proposed_warnings']})" if r["proposed_warnings"] else "")
            for r in rows
        ],
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    print(table[cols].to_string(index=False))
    if len(rows) > 1:
        fam_stem = args.stem or f"closed_loop_families{tag}_{rule_tag}"
        summary = summary_rows(rows)
        summary.to_csv(args.out / f"{fam_stem}.csv", index=False)
        (args.out / f"{fam_stem}.md").write_text(families_markdown(summary, rows, command, cfg, time.perf_counter() - t_start))
        print(summary[list(FAMILY_COLUMNS) + ["dw1", "dw2", "dw4"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
