"""Issue 16's done-when experiment on the synthetic families: twins you can trust as simulators.

For each ground-truth family (every :class:`~twin.sim.agents.Family`, parameters
:data:`~twin.sim.agents.DEFAULT_TRUTHS`) a cohort of ``fit + test`` animals (individual starting
weights and learning-rate multipliers, :class:`~twin.sim.agents.Individuality`) trains for
``trials`` trials under the IBL default protocol (seeded). The default twin, the ensemble
(:func:`twin.fit.ensemble_cohort.fit_ensemble`: static, reinforce, dnn, dnn_delta, rnn, weighted
by stacking on held-out future sessions), is fitted on the fitting animals only. Each held-out
animal then gets its own starting state: per component, the MAP ``w0`` and rate multipliers from
its first ``cutoff`` sessions under the population prior (:func:`twin.fit.adapt.infer_start`, prior
:func:`twin.fit.adapt.cohort_start_prior` from the fitting animals' first sessions), never the
population mean; the ensemble weights are the fit's **new-animal stacking weights**
(:attr:`~twin.fit.ensemble_cohort.EnsembleFit.new_animal_weights`: each component scored on the
fitting animals' future sessions from starts inferred from their first ``cutoff`` sessions, the
way it is used here; a new animal has no held-out sessions of its own to weight by). The ratio
under the cohort's weights (stacked on adapted twins, the cohort's own use) is reported beside it.

Scored on the held-out animals' sessions after the cut-off:

1. **LL-gain ratio** ``(LL(model) − LL(static_own)) / (LL(truth) − LL(static_own))``
   (:func:`twin.analysis.evaluate.ll_gain_ratio`), whose zero is each animal's own static fit
   (:func:`~twin.analysis.evaluate.own_static_scores`, in-sample on the scored sessions) and whose
   one is the true rule with the animal's true ``w0``/rate, teacher-forced from trial 1. Models:
   the ensemble and every single component, each teacher-forced from its inferred start.
   Done when: ensemble ≥ 0.95, best single flexible rule (dnn, dnn_delta, rnn) ≥ 0.90.
2. **Generative check** of the ensemble (:func:`twin.sim.check.run_ensemble_check`: each rollout
   draws a component by the weights and runs free from the animal's state at the cut-off, under
   the protocol, its advancement reacting to the twin's choices): predicted mean trials to
   ``trained_1a`` within ±15% of realised (trials censored at each animal's last trial, as
   :func:`twin.analysis.generative.generative_check` counts them), fraction trained within ±10
   points, 90% interval coverage of trials to ``trained_1a`` in 85–95%. The oracle (true rule, true
   starts, same cut-off) is reported beside it: what rollout noise alone allows.

Intervals: 95% bootstrap over held-out animals (``--boot`` resamples; every ratio recomputed from
the resampled animals' summed log-likelihoods). PASS/FAIL is judged on the point estimate.

The issue's target scale is ``--fit-animals 30 --test-animals 20 --trials 5000`` (the defaults).
Writes ``OUT.md``, ``OUT.csv`` (one row per family) and ``OUT_animals.csv`` (one row per held-out
animal); ``--smoke`` is a tiny run for correctness only.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from twin.analysis.criteria import TRAINED_1A
from twin.analysis.evaluate import ll_gain_ratio, own_static_scores
from twin.analysis.generative import generative_check
from twin.data.batch import TrialBatch, make_batch
from twin.fit.adapt import cohort_start_prior, infer_start
from twin.fit.ensemble_cohort import (
    DEFAULT_ENSEMBLE_RULES, EnsembleFitConfig, FitComponents, component_log_likelihood, ensemble_components, fit_components_here, fit_ensemble,
)
from twin.fit.train import FitConfig
from twin.fit.prequential import session_by_session_log_likelihood
from twin.models.ensemble import TwinEnsemble, mixture_log_likelihood
from twin.models.learner import LearnerModel
from twin.models.params import TwinModel, TwinParams
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family, Individuality, draw_individuals
from twin.sim.check import run_check, run_ensemble_check, twin_starts
from twin.sim.simulate import simulate

FLEXIBLE_RULES = ("dnn", "dnn_delta", "rnn")
"""The flexible rules of done-when 1's second criterion."""
LEVELS = (0.5, 0.8, 0.9, 0.95)
"""Interval levels scored by the generative check (done-when 2 reads the 90% one)."""
CRITERION = TRAINED_1A.name
"""The criterion of done-when 2 (IBL ``trained_1a``; column suffix ``1a``)."""


@dataclass(frozen=True)
class FidelityConfig:
    """One run of the experiment.

    Attributes:
        fit_animals: animals the ensemble is fitted on.
        test_animals: held-out animals scored.
        trials: trials per animal.
        epochs: population epochs at most per component fit (the library's default).
        patience: early-stopping patience (the library's default: at 10, half the
            perseveration ``dnn`` fits stopped in their first 4 epochs and lost on new animals,
            ``experiments/results/refit_diagnostic.md``).
        rollouts: free runs per held-out animal.
        cutoff: sessions of each held-out animal its start is inferred from (scored after them).
        rules: the ensemble's rule families.
        seeds: seeds per rule (``static`` gets one).
        refit: stack at half the sessions and refit each population rule on all sessions.
            Without it (the library's default, :class:`~twin.fit.ensemble_cohort.EnsembleFitConfig`)
            the stacking split is late (each rule fitted on all but the fitting animals' last
            sessions and kept), at half the cost.
        boot: bootstrap resamples.
        infer_iterations: L-BFGS iterations at most of each start inference.
        seed: seeds the cohort, the fits and the rollouts.
    """

    fit_animals: int = 30
    test_animals: int = 20
    trials: int = 5000
    epochs: int = FitConfig().epochs
    patience: int = FitConfig().patience
    rollouts: int = 100
    cutoff: int = 2
    rules: tuple[str, ...] = DEFAULT_ENSEMBLE_RULES
    seeds: int = 1
    refit: bool = False
    boot: int = 2000
    seed: int = 0
    infer_iterations: int = 100


def _sessions_upto(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each animal's first ``n`` sessions."""
    return df[df.groupby("subject")["session"].rank(method="dense") <= n]


def _summed(ll: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``[A]`` summed log-likelihood of each animal's masked trials."""
    return (ll.double() * mask.double()).sum(1).numpy()


def _ratio_interval(model: np.ndarray, static: np.ndarray, truth: np.ndarray, idx: np.ndarray) -> tuple[float, float, float]:
    """The LL-gain ratio of summed per-animal LLs ``[A]``, and its bootstrap interval over the
    animal resamples ``idx`` ``[n_boot, A]``."""
    point = ll_gain_ratio(float(model.sum()), float(static.sum()), float(truth.sum()))
    sm, ss, st = model[idx].sum(1), static[idx].sum(1), truth[idx].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(st - ss > 0, (sm - ss) / (st - ss), np.nan)
    lo, hi = np.nanquantile(boot, [0.025, 0.975])
    return point, float(lo), float(hi)


def _generative_figures(animals: pd.DataFrame, n_boot: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """Done-when 2's figures on the animals scored on the criterion, each ``(point, lo, hi)``
    with a bootstrap interval over ``n_boot`` resamples of those animals."""
    sc = animals[animals[f"scored_{CRITERION}"].astype(bool)]
    obs_t, pred_t = sc[f"obs_trials_{CRITERION}"].to_numpy(float), sc[f"pred_mean_trials_{CRITERION}"].to_numpy(float)
    obs_r, pred_r = sc[f"obs_reached_{CRITERION}"].to_numpy(float), sc[f"pred_reached_{CRITERION}"].to_numpy(float)
    cov = sc[f"cov90_{CRITERION}"].to_numpy(float)
    n = len(sc)
    if n == 0:
        return {k: (float("nan"),) * 3 for k in ("trials_ratio", "frac_gap", "cov90", "obs_trials", "pred_trials", "obs_frac", "pred_frac")}
    rs = np.random.default_rng(seed).integers(0, n, (n_boot, n))

    def stat(f) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
        b = np.array([f(r) for r in rs])
        lo, hi = np.nanquantile(b, [0.025, 0.975])
        return float(f(np.arange(n))), float(lo), float(hi)

    return {
        "trials_ratio": stat(lambda r: pred_t[r].mean() / obs_t[r].mean()),
        "frac_gap": stat(lambda r: pred_r[r].mean() - obs_r[r].mean()),
        "cov90": stat(lambda r: np.nanmean(cov[r])),
        "obs_trials": stat(lambda r: obs_t[r].mean()),
        "pred_trials": stat(lambda r: pred_t[r].mean()),
        "obs_frac": stat(lambda r: obs_r[r].mean()),
        "pred_frac": stat(lambda r: pred_r[r].mean()),
    }


def _log(message: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Cohort:
    """One family's simulated cohort, split into fitting and held-out animals.

    Attributes:
        true_model: the ground-truth learner.
        w0: ``[N, K]`` every animal's true initial weights.
        log_rate: ``[N, K]`` its true log learning-rate multipliers.
        subjects: the N animals, in simulation order (the rows of ``w0``).
        fitting: the fitting animals' trials.
        test: the held-out animals' trials.
        max_session: the most sessions an animal has.
    """

    true_model: LearnerModel
    w0: torch.Tensor
    log_rate: torch.Tensor
    subjects: list[str]
    fitting: pd.DataFrame
    test: pd.DataFrame
    max_session: int


def simulate_cohort(family: Family, cfg: FidelityConfig) -> Cohort:
    """The family's cohort of ``fit + test`` animals, and which are held out (seeded)."""
    gt = DEFAULT_TRUTHS[family]
    true_model = gt.build()
    n = cfg.fit_animals + cfg.test_animals
    w0, log_rate = draw_individuals(gt, n, Individuality(), seed=cfg.seed)
    sim = simulate(true_model, IBL_DEFAULT, n, cfg.trials, seed=cfg.seed, subject_prefix=family.value, w0=w0, log_rate=log_rate)
    subjects = list(dict.fromkeys(sim.trials["subject"]))
    perm = np.random.default_rng(cfg.seed).permutation(n)
    test = [subjects[i] for i in sorted(perm[: cfg.test_animals].tolist())]
    held = sim.trials["subject"].isin(test)
    return Cohort(true_model, w0, log_rate, subjects, sim.trials[~held], sim.trials[held], int(sim.trials["session"].max()))


def truth_from_inferred_starts(true_model: LearnerModel, first_fit: TrialBatch, first_test: TrialBatch, scored: TrialBatch, iterations: int) -> np.ndarray:
    """``[A, T]`` summed per held-out animal: the held-out LL of the *true rule* when each animal's
    start is inferred from its first sessions exactly as every component's is (prior from the
    fitting animals' first sessions, MAP ``w0`` and rates): what the start inference alone costs
    a twin that must infer its start. A reference, not a bound: a mixture of rules hedges over
    the start's uncertainty, which one point estimate does not, and can score above it."""
    prior = cohort_start_prior(true_model, first_fit, iterations=iterations)
    starts = infer_start(true_model, first_test, prior, fit_rate=True, iterations=iterations)
    return _summed(component_log_likelihood([starts[s] for s in first_test.subjects], scored), scored.mask)


def truth_session_by_session(true_model: LearnerModel, first_fit: TrialBatch, scored: TrialBatch, cutoff: int, iterations: int) -> np.ndarray:
    """``[A]`` summed per held-out animal: the held-out LL of the *true rule* re-started as each
    session arrives (:func:`twin.fit.prequential.session_by_session_log_likelihood`, the prior
    as in :func:`truth_from_inferred_starts`): what inferring the start costs a twin that is
    updated session by session, as twins in service are. A reference, not a bound."""
    prior = cohort_start_prior(true_model, first_fit, iterations=iterations)
    return _summed(session_by_session_log_likelihood(true_model, scored, prior, cutoff + 1, iterations=iterations), scored.mask)


def run_start_reference(family: Family, cfg: FidelityConfig) -> dict[str, object]:
    """Only :func:`truth_from_inferred_starts` on the family's cohort (the same
    cohort, split, static zero and truth as :func:`run_family`; no ensemble is fitted)."""
    t0 = time.perf_counter()
    c = simulate_cohort(family, cfg)
    first_fit, first_test = make_batch(_sessions_upto(c.fitting, cfg.cutoff)), make_batch(_sessions_upto(c.test, cfg.cutoff))
    full = make_batch(c.test)
    scored = full.with_mask(full.mask & (full.session > cfg.cutoff))
    ti = [c.subjects.index(s) for s in first_test.subjects]
    with torch.no_grad():
        truth_ll = c.true_model.log_likelihood(make_batch(c.test, c.true_model.spec.features).with_mask(scored.mask), c.w0[ti], c.log_rate[ti])
    static = own_static_scores(scored)
    st = static.per_animal["ll"].to_numpy() * static.per_animal["n_trials"].to_numpy()
    tr = _summed(truth_ll, scored.mask)
    reference = truth_from_inferred_starts(c.true_model, first_fit, first_test, scored, cfg.infer_iterations)
    idx = np.random.default_rng(cfg.seed).integers(0, len(ti), (cfg.boot, len(ti)))
    n_scored = float(scored.mask.sum())
    row: dict[str, object] = {"family": family.value, "held_out": len(ti), "ll_static_own": st.sum() / n_scored, "ll_truth": tr.sum() / n_scored, "ll_truth_inferred": reference.sum() / n_scored}
    row["ratio_truth_inferred"], row["ratio_truth_inferred_lo"], row["ratio_truth_inferred_hi"] = _ratio_interval(reference, st, tr, idx)
    rolling = truth_session_by_session(c.true_model, first_fit, scored, cfg.cutoff, cfg.infer_iterations)
    row["ll_truth_rolling"] = rolling.sum() / n_scored
    row["ratio_truth_rolling"], row["ratio_truth_rolling_lo"], row["ratio_truth_rolling_hi"] = _ratio_interval(rolling, st, tr, idx)
    row["seconds"] = time.perf_counter() - t0
    return row


def run_family(family: Family, cfg: FidelityConfig, progress: bool = False, fit_components: FitComponents = fit_components_here) -> tuple[dict[str, object], pd.DataFrame]:
    """The experiment on one family: its table row and its per-animal table (``fit_components``:
    how the ensemble's components run, here or as Ray tasks; the same results either way)."""
    t0 = time.perf_counter()
    c = simulate_cohort(family, cfg)
    true_model, w0, log_rate, subjects, fitting_df, test_df = c.true_model, c.w0, c.log_rate, c.subjects, c.fitting, c.test
    _log(f"{family.value}: simulated {len(subjects)} animals x {cfg.trials} trials ({c.max_session} sessions at most)", t0)

    # the ensemble, fitted on the fitting animals only
    ens_cfg = EnsembleFitConfig(
        components=ensemble_components(cfg.rules, seeds=cfg.seeds), fit=FitConfig(epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed), refit=cfg.refit,
        new_animal_sessions=cfg.cutoff,
    )
    ens_fit = fit_ensemble(fitting_df, ens_cfg, progress=progress, fit_components=fit_components)
    t_fit = time.perf_counter() - t0
    _log(f"{family.value}: ensemble fitted (" + ", ".join(f"{c.label} {c.seconds:.0f}s" for c in ens_fit.components) + ")", t0)
    labels = tuple(c.label for c in ens_cfg.components)
    populations = [ens_fit.animals[0].ensemble.components[j].population for j in range(len(labels))]
    weights, cohort_weights = ens_fit.new_animal_weights, ens_fit.stacking.cohort

    # held-out animals: each one's start from its own first sessions, scored after them
    first_fit, first_test = make_batch(_sessions_upto(fitting_df, cfg.cutoff)), make_batch(_sessions_upto(test_df, cfg.cutoff))
    mapped: list[list[TwinModel]] = []
    for pop in populations:
        prior = cohort_start_prior(pop, first_fit, iterations=cfg.infer_iterations)
        starts = infer_start(pop, first_test, prior, fit_rate=True, iterations=cfg.infer_iterations)
        mapped.append([starts[s] for s in first_test.subjects])
    order = list(first_test.subjects)
    _log(f"{family.value}: held-out starts inferred", t0)
    full: TrialBatch = make_batch(test_df)
    assert list(full.subjects) == order, "the batches must hold the held-out animals in one order"
    scored = full.with_mask(full.mask & (full.session > cfg.cutoff))
    comp_ll = torch.stack([component_log_likelihood(mapped[j], scored) for j in range(len(labels))])  # [M, A, T]
    ens_ll = mixture_log_likelihood(comp_ll, weights)
    by_subject = {s: i for i, s in enumerate(subjects)}
    ti = [by_subject[s] for s in order]
    with torch.no_grad():
        truth_ll = true_model.log_likelihood(make_batch(test_df, true_model.spec.features).with_mask(scored.mask), w0[ti], log_rate[ti])
    static = own_static_scores(scored)
    st = static.per_animal["ll"].to_numpy() * static.per_animal["n_trials"].to_numpy()
    tr, en = _summed(truth_ll, scored.mask), _summed(ens_ll, scored.mask)
    reference = truth_from_inferred_starts(true_model, first_fit, first_test, scored, cfg.infer_iterations)
    comps = {lab: _summed(comp_ll[j], scored.mask) for j, lab in enumerate(labels)}
    idx = np.random.default_rng(cfg.seed).integers(0, len(order), (cfg.boot, len(order)))
    n_scored = float(scored.mask.sum())
    row: dict[str, object] = {"family": family.value, "held_out": len(order), "scored_trials": int(n_scored)}
    row["ll_static_own"], row["ll_truth"], row["ll_ensemble"] = st.sum() / n_scored, tr.sum() / n_scored, en.sum() / n_scored
    row["ratio_ensemble"], row["ratio_ensemble_lo"], row["ratio_ensemble_hi"] = _ratio_interval(en, st, tr, idx)
    row["ll_truth_inferred"] = reference.sum() / n_scored
    row["ratio_truth_inferred"], row["ratio_truth_inferred_lo"], row["ratio_truth_inferred_hi"] = _ratio_interval(reference, st, tr, idx)
    en_cw = _summed(mixture_log_likelihood(comp_ll, cohort_weights), scored.mask)
    row["ratio_ensemble_cohort_w"], row["ratio_ensemble_cohort_w_lo"], row["ratio_ensemble_cohort_w_hi"] = _ratio_interval(en_cw, st, tr, idx)
    for lab, v in comps.items():
        row[f"ratio_{lab}"], row[f"ratio_{lab}_lo"], row[f"ratio_{lab}_hi"] = _ratio_interval(v, st, tr, idx)
        row[f"weight_{lab}"] = float(weights[labels.index(lab)])
        row[f"cohort_weight_{lab}"] = float(cohort_weights[labels.index(lab)])
    flex = [lab for lab in labels if lab.split("/")[0] in FLEXIBLE_RULES]
    best = max(flex, key=lambda lab: float(row[f"ratio_{lab}"])) if flex else None  # type: ignore[arg-type]
    row["best_flexible"] = best or ""
    for k in ("", "_lo", "_hi"):
        row[f"ratio_best_flexible{k}"] = row[f"ratio_{best}{k}"] if best else float("nan")

    _log(f"{family.value}: held-out LLs scored", t0)
    # the generative check of the ensemble (and of the oracle), from the cut-off
    ensembles = [TwinEnsemble.of([mapped[j][i] for j in range(len(labels))], weights, labels) for i in range(len(order))]
    cut = [cfg.cutoff] * len(order)
    run = run_ensemble_check(ensembles, test_df, order, cut, IBL_DEFAULT, cfg.rollouts, seed=cfg.seed + 1)
    gen = generative_check(run.subjects, run.observed, run.predicted, run.cutoff, run.n_rollouts, levels=LEVELS)
    oracle = [TwinModel(true_model, TwinParams(w0[i], log_rate[i], "truth")) for i in ti]
    orun = run_check(true_model, twin_starts(oracle, test_df, order, cut, IBL_DEFAULT), test_df, IBL_DEFAULT, cfg.rollouts, seed=cfg.seed + 1)
    ogen = generative_check(orun.subjects, orun.observed, orun.predicted, orun.cutoff, orun.n_rollouts, levels=LEVELS)
    for prefix, g in (("", gen), ("oracle_", ogen)):
        figs = _generative_figures(g.animals, cfg.boot, cfg.seed)
        row[f"{prefix}scored_1a"] = int(g.animals[f"scored_{CRITERION}"].sum())
        for key, (p, lo, hi) in figs.items():
            row[f"{prefix}{key}"], row[f"{prefix}{key}_lo"], row[f"{prefix}{key}_hi"] = p, lo, hi
    row["pass_ensemble_095"] = bool(float(row["ratio_ensemble"]) >= 0.95)
    row["pass_flexible_090"] = bool(float(row["ratio_best_flexible"]) >= 0.90)
    row["pass_trials_15pct"] = bool(abs(float(row["trials_ratio"]) - 1.0) <= 0.15)
    row["pass_frac_10pt"] = bool(abs(float(row["frac_gap"])) <= 0.10)
    row["pass_cov90"] = bool(0.85 <= float(row["cov90"]) <= 0.95)
    row["fit_seconds"], row["seconds"] = t_fit, time.perf_counter() - t0
    row["fit_warnings"] = "; ".join(sorted({w for c in ens_fit.components for w in c.warnings}))
    per = pd.DataFrame({"family": family.value, "subject": order, "n_scored": scored.mask.sum(1).numpy(), "ll_static_own": st, "ll_truth": tr, "ll_ensemble": en, **{f"ll_{lab}": v for lab, v in comps.items()}})
    ga = gen.animals.set_index("subject")
    for col in (f"obs_trials_{CRITERION}", f"pred_mean_trials_{CRITERION}", f"obs_reached_{CRITERION}", f"pred_reached_{CRITERION}", f"scored_{CRITERION}", f"cov90_{CRITERION}"):
        per[col] = ga.loc[order, col].to_numpy()
    return row, per


def _fmt(p: object, lo: object, hi: object, digits: int = 2) -> str:
    return f"{float(p):.{digits}f} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"  # type: ignore[arg-type]


def markdown(rows: pd.DataFrame, cfg: FidelityConfig, command: str) -> str:
    """The result table, README-ready, with the command and the scale in the header."""
    target = (cfg.fit_animals, cfg.test_animals, cfg.trials) == (30, 20, 5000)
    flags = lambda r, k: "PASS" if r[k] else "FAIL"  # noqa: E731
    t1 = []
    for _, r in rows.iterrows():
        gain = float(r["ll_truth"]) - float(r["ll_static_own"])
        undefined = not gain > 0  # the truth gains nothing over each animal's own static fit: no ratio
        t1.append({
            "family": r["family"],
            "truth gain (nats/trial)": f"{gain:+.4f}",
            "ensemble ratio": "undefined" if undefined else _fmt(r["ratio_ensemble"], r["ratio_ensemble_lo"], r["ratio_ensemble_hi"]),
            "≥0.95": "n/a" if undefined else flags(r, "pass_ensemble_095"),
            "truth, inferred start": "undefined" if undefined else _fmt(r["ratio_truth_inferred"], r["ratio_truth_inferred_lo"], r["ratio_truth_inferred_hi"]) if "ratio_truth_inferred" in r and pd.notna(r["ratio_truth_inferred"]) else "-",
            "ensemble, cohort weights": "undefined" if undefined or "ratio_ensemble_cohort_w" not in r else _fmt(r["ratio_ensemble_cohort_w"], r["ratio_ensemble_cohort_w_lo"], r["ratio_ensemble_cohort_w_hi"]),
            "best flexible": "undefined" if undefined else f"{r['best_flexible'].split('/')[0]} {_fmt(r['ratio_best_flexible'], r['ratio_best_flexible_lo'], r['ratio_best_flexible_hi'])}",
            "≥0.90": "n/a" if undefined else flags(r, "pass_flexible_090"),
            **{lab.split("/")[0]: f"{float(r[f'ratio_{lab}']):.2f}" for lab in _labels(rows)},
        })
    t2 = []
    for _, r in rows.iterrows():
        t2.append({
            "family": r["family"],
            "n scored": int(r["scored_1a"]),
            "obs trials→1a": f"{float(r['obs_trials']):.0f}",
            "pred": f"{float(r['pred_trials']):.0f}",
            "pred/obs": _fmt(r["trials_ratio"], r["trials_ratio_lo"], r["trials_ratio_hi"]),
            "±15%": flags(r, "pass_trials_15pct"),
            "obs trained": f"{float(r['obs_frac']):.2f}",
            "pred trained": f"{float(r['pred_frac']):.2f}",
            "gap": _fmt(r["frac_gap"], r["frac_gap_lo"], r["frac_gap_hi"]),
            "±10pt": flags(r, "pass_frac_10pt"),
            "cov90": _fmt(r["cov90"], r["cov90_lo"], r["cov90_hi"]),
            "85–95%": flags(r, "pass_cov90"),
            "oracle pred/obs": f"{float(r['oracle_trials_ratio']):.2f}",
            "oracle gap": f"{float(r['oracle_frac_gap']):+.2f}",
            "oracle cov90": f"{float(r['oracle_cov90']):.2f}",
        })
    t3 = [{"family": r["family"], **{f"w {lab.split('/')[0]}": f"{float(r[f'weight_{lab}']):.2f}" + (f" ({float(r[f'cohort_weight_{lab}']):.2f})" if f"cohort_weight_{lab}" in r else "")
                                     for lab in _labels(rows)}, "LL static_own": f"{float(r['ll_static_own']):.4f}",
           "LL truth": f"{float(r['ll_truth']):.4f}", "LL ensemble": f"{float(r['ll_ensemble']):.4f}", "minutes": f"{float(r['seconds']) / 60:.1f}", "fit warnings": r["fit_warnings"] if isinstance(r["fit_warnings"], str) and r["fit_warnings"] else "none"} for _, r in rows.iterrows()]
    scale = f"{cfg.fit_animals} fitting + {cfg.test_animals} held-out animals × {cfg.trials:,} trials per family"
    lines = [
        "# Simulator fidelity on the synthetic families (issue 16, done-when 1 and 2)",
        "",
        f"**Scale: {scale}**" + ("" if target else " — REDUCED, not the issue's target of 30 fitting + 20 held-out animals × 5,000 trials") + ".",
        f"Ensemble of {', '.join(cfg.rules)} ({cfg.seeds} seed(s) each), {cfg.epochs} epochs at most (patience {cfg.patience}), refit after stacking: {cfg.refit}" + (" (stacked at half the sessions, then each rule refitted on all)" if cfg.refit else " (each rule fitted on all but the fitting animals' last sessions and kept, stacked on the sessions after)") + ";",
        f"held-out starts inferred from each animal's first {cfg.cutoff} sessions (MAP w0 and rates under the population prior, L-BFGS ≤ {cfg.infer_iterations} iterations), scored on the later sessions;",
        f"{cfg.rollouts} rollouts per held-out animal; 95% bootstrap intervals over held-out animals ({cfg.boot} resamples); seed {cfg.seed}.",
        "PASS/FAIL judged on the point estimate. Script: `experiments/simulator_fidelity.py` (its docstring defines every figure).",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
        "## Done-when 1: LL-gain ratio on held-out animals (zero = each animal's own static fit, one = the truth)",
        "",
        "`truth gain` is the denominator, LL(truth) − LL(static_own) per scored trial; where it is not positive the ratio is",
        "undefined (n/a). Single-rule columns: each component's ratio, teacher-forced from its own inferred start.",
        "`ensemble ratio` weights the components by the new-animal stacking weights (the default for an animal outside the",
        "cohort); `ensemble, cohort weights` by the cohort's weights, stacked on twins adapted to many sessions.",
        "`truth, inferred start`: the true rule from starts inferred like every component's: what inferring the start",
        "from the first sessions alone costs (a reference, not a bound: a mixture hedges over the start's uncertainty).",
        "",
        pd.DataFrame(t1).to_markdown(index=False),
        "",
        "## Done-when 2: generative check of the ensemble from the cut-off (trials to trained_1a censored at the animal's last trial)",
        "",
        "The `oracle` columns run the true rule from each animal's true start, same cut-off: what rollout noise and",
        f"{cfg.test_animals} animals alone allow.",
        "",
        pd.DataFrame(t2).to_markdown(index=False),
        "",
        "## Stacking weights, per-trial LLs on the scored sessions (nats), time",
        "",
        "`w`: the new-animal weights the ensemble ratio and the generative check use (the cohort's weights in brackets).",
        "",
        pd.DataFrame(t3).to_markdown(index=False),
        "",
    ]
    return "\n".join(lines)


def _labels(rows: pd.DataFrame) -> list[str]:
    return [c[len("weight_") :] for c in rows.columns if c.startswith("weight_")]


SMOKE = FidelityConfig(fit_animals=4, test_animals=3, trials=1500, epochs=1, patience=1, rollouts=4, rules=("static", "reinforce", "dnn"), refit=False, boot=50)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FidelityConfig()
    ap.add_argument("--fit-animals", type=int, default=d.fit_animals)
    ap.add_argument("--test-animals", type=int, default=d.test_animals)
    ap.add_argument("--trials", type=int, default=d.trials)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--patience", type=int, default=d.patience)
    ap.add_argument("--rollouts", type=int, default=d.rollouts)
    ap.add_argument("--cutoff", type=int, default=d.cutoff)
    ap.add_argument("--rules", nargs="+", default=list(d.rules))
    ap.add_argument("--seeds", type=int, default=d.seeds)
    ap.add_argument("--refit", action="store_true", help="stack at half the sessions and refit each rule on all of them (the old default)")
    ap.add_argument("--no-refit", action="store_true", help="keep the stacking phase's rules (the default; kept for old commands)")
    ap.add_argument("--boot", type=int, default=d.boot)
    ap.add_argument("--families", nargs="+", default=[f.value for f in Family], choices=[f.value for f in Family])
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--infer-iterations", type=int, default=d.infer_iterations, help="L-BFGS iterations at most of each held-out start inference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="fit the ensemble's components as Ray tasks on a local Ray of every core (cluster.ensemble; the same results)")
    ap.add_argument("--smoke", action="store_true", help="a tiny run for correctness (overrides the scale options)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/simulator_fidelity"))
    ap.add_argument("--start-reference-only", action="store_true", help="only the true rule from inferred starts per family (OUT_start_reference.md/.csv; no ensemble fitted)")
    ap.add_argument("--render", action="store_true", help="only rewrite OUT.md from OUT.csv (same scale options as the run; the command shown drops --render)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = FidelityConfig(args.fit_animals, args.test_animals, args.trials, args.epochs, args.patience, args.rollouts, args.cutoff, tuple(args.rules), args.seeds, args.refit and not args.no_refit, args.boot, args.seed, args.infer_iterations)
    if args.smoke:
        cfg = replace(SMOKE, seed=args.seed)
    if args.render:
        table = pd.read_csv(args.out.with_suffix(".csv"))
        shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--render"]
        args.out.with_suffix(".md").write_text(markdown(table, cfg, "python experiments/simulator_fidelity.py " + " ".join(shown)))
        return table
    if args.start_reference_only:
        ref = pd.DataFrame([run_start_reference(Family(fam), cfg) for fam in args.families])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = args.out.parent / f"{args.out.name}_start_reference"
        ref.to_csv(out.with_suffix(".csv"), index=False)
        shown = "python experiments/simulator_fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv)
        body = pd.DataFrame([{"family": r["family"], "truth gain (nats/trial)": f"{float(r['ll_truth']) - float(r['ll_static_own']):+.4f}",
                              "truth, inferred start": _fmt(r["ratio_truth_inferred"], r["ratio_truth_inferred_lo"], r["ratio_truth_inferred_hi"])
                              if float(r["ll_truth"]) > float(r["ll_static_own"]) else "undefined",
                              "LL/trial lost to the inferred start": f"{float(r['ll_truth']) - float(r['ll_truth_inferred']):+.4f}",
                              "truth, re-started each session": _fmt(r["ratio_truth_rolling"], r["ratio_truth_rolling_lo"], r["ratio_truth_rolling_hi"])
                              if float(r["ll_truth"]) > float(r["ll_static_own"]) else "undefined",
                              "LL/trial lost, re-started": f"{float(r['ll_truth']) - float(r['ll_truth_rolling']):+.4f}",
                              "minutes": f"{float(r['seconds']) / 60:.1f}"} for _, r in ref.iterrows()])
        out.with_suffix(".md").write_text("\n".join([
            "# The true rule from inferred starts: what inferring a new animal's start costs", "",
            f"`{shown}`: the cohorts, splits and zero of the fidelity run ({cfg.fit_animals} fitting + {cfg.test_animals} held-out animals x {cfg.trials:,} trials, seed {cfg.seed});",
            f"each held-out animal's w0 and rates inferred from its first {cfg.cutoff} sessions under the prior of the fitting animals' first sessions, the true rule fixed;",
            "LL-gain ratio (zero = each animal's own static fit, one = the true rule from the true start), 95% bootstrap intervals.",
            "`re-started each session`: session s scored from the MAP start of sessions < s (twin.fit.prequential), as a twin in service is updated.",
            "A reference, not a bound: an ensemble hedges over the start's uncertainty, which one MAP start does not.", "",
            body.to_markdown(index=False), ""]))
        print(body.to_string(index=False))
        return ref
    run_components: FitComponents = fit_components_here
    if args.ray:
        from cluster.ensemble import fit_components_ray
        from cluster.ray_env import init_ray

        init_ray()
        run_components = fit_components_ray()
    rows, per = [], []
    for fam in args.families:
        row, animals = run_family(Family(fam), cfg, progress=args.progress, fit_components=run_components)
        rows.append(row)
        per.append(animals)
        print(f"{fam}: ensemble ratio {row['ratio_ensemble']:.3f}, best flexible {row['best_flexible']} {row['ratio_best_flexible']:.3f}, "
              f"trials pred/obs {row['trials_ratio']:.2f}, frac gap {row['frac_gap']:+.2f}, cov90 {row['cov90']:.2f} ({row['seconds'] / 60:.1f} min)", flush=True)
        table = pd.DataFrame(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out.with_suffix(".csv"), index=False)
        pd.concat(per, ignore_index=True).to_csv(args.out.parent / f"{args.out.name}_animals.csv", index=False)
        command = "python experiments/simulator_fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.with_suffix(".md").write_text(markdown(table, cfg, command))
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
