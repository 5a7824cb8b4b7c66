"""Rolling-origin forecast evaluation on real data (issue 16, done-when 3).

For several origins ``k`` the one-origin comparison of :mod:`experiments.real_data` is repeated
with its own pieces (:func:`real_data.prepare_sessions`, :func:`real_data.fit_rule`,
:func:`real_data.last_accuracy_scores`, :func:`real_data.psytrack_scores`), keeping its
convention: every rule is fitted as a population on sessions ``1..k-1`` of every animal,
early-stopped (and its per-animal adaptation chosen) on session ``k``, and forecasts sessions
``k+1..k+h`` (``h = 3``); every model runs through session ``k`` on the animal's real trials
before the forecast starts. Each animal is capped at its first ``k + h`` sessions.

Models:

* ``ensemble`` — the issue's default twin: the fitted rules (``static``, ``reinforce``, ``dnn``,
  ``dnn_delta``; ``rnn`` with ``--rnn``) mixed per trial, ``p = Σ_j π_j p_j``, with weights
  stacked (:func:`twin.fit.stacking.stack`: cohort weights, per-animal MAP with the default
  shrinkage) on each animal's **session k** per-trial likelihoods, the only held-out session
  before the forecast (it also early-stopped the fits, so the weights see it twice; the
  forecast sessions are untouched by everything);
* the single rules ``dnn``, ``dnn_delta``, ``reinforce``, ``static`` (each adapted per animal);
* ``last_session_accuracy`` (the rewarded side at the animal's session-``k`` accuracy) and
  ``psytrack`` (PsyTrack fitted on sessions ``1..k``, its last weights carried forward).

Scores per animal and origin:

1. **Teacher-forced** log-likelihood per trial over the forecast sessions (and accuracy of the
   more likely choice).
2. **Free-running (generative) check** (IBL mice only; the rat's tone stimuli are not something
   the simulator can present): each learning model runs ``R`` rollouts of the animal's forecast
   sessions with its own sampled choices and its own rewards from its state at the end of
   session ``k`` (:func:`twin.sim.check.twin_starts`, :func:`twin.sim.check.run_check`, each
   session replaying the contrast set the animal was shown; the ensemble by
   :func:`twin.sim.check.run_ensemble_check`, each rollout drawing one component by the
   animal's weights). The per-session accuracy on all trials and on easy trials (contrast ≥ 50%)
   of the rollouts is scored against the animal's by CRPS and 80/95% interval coverage (randomised
   PIT) with :func:`twin.analysis.generative.crps_ensemble` / :func:`~twin.analysis.generative.coverage`.
   The models that do not learn are sampled on the animal's own forecast trials (their choices
   do not depend on their history): PsyTrack from its per-trial p(correct); ``last_session_accuracy``
   as Bernoulli(session-``k`` accuracy) per trial — for easy accuracy its session-``k`` easy
   accuracy (each the natural carried-forward forecast of that number).

Paired two-sided exact sign tests (``real_data.sign_test_p``, ties dropped) of the ensemble against
each baseline, over (animal, origin) pairs and per origin (for the rat, one animal, over
(origin, forecast session) pairs). Writes ``rolling_origin_summary.md``,
``rolling_origin_per_animal.csv`` (one row per dataset, origin, animal and model) and
``rolling_origin_sign_tests.csv`` into ``experiments/results/`` (``--quick``: ``runs/rolling_origin_quick/``);
with ``--dataset ibl`` or ``rat`` alone the stem is ``rolling_origin_ibl`` / ``rolling_origin_rat``
(so the two data sets can run as two processes).
Run from the repository root:

    nice -n 10 .venv/bin/python experiments/rolling_origin.py            # mice k=4,6,8 and rat k=20,40,60 in one process (> 2 h on busy cores)
    nice -n 10 .venv/bin/python experiments/rolling_origin.py --quick    # 3 mice, 2 origins, few epochs

The committed tables were made as four processes at once, each origin saved as it finished, then
combined (the fits are sequential in time, so one process per origin is what makes it fit in an
hour on 2 shared cores):

    for k in 4 6 8; do nice -n 10 .venv/bin/python experiments/rolling_origin.py --dataset ibl --origins $k \
        --delta-epochs 20 --psytrack-sessions 3 --parts runs/rolling_parts --out runs/rolling_ibl_k$k & done
    nice -n 10 .venv/bin/python experiments/rolling_origin.py --dataset rat --rat-origins 20 30 40 --parts runs/rolling_parts &
    wait; nice -n 10 .venv/bin/python experiments/rolling_origin.py --combine runs/rolling_parts
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import importlib.util
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from collections.abc import Callable
import json

import numpy as np
import pandas as pd
import torch

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from twin.analysis.criteria import SessionStats  # noqa: E402
from twin.analysis.generative import coverage, crps_ensemble  # noqa: E402
from twin.data.batch import TrialBatch, make_batch  # noqa: E402
from twin.data.splits import split_sessions  # noqa: E402
from twin.fit.stacking import StackingConfig, stack  # noqa: E402
from twin.fit.train import FitConfig  # noqa: E402
from twin.models.ensemble import TwinEnsemble, mixture_log_likelihood  # noqa: E402
from twin.models.params import Adaptation  # noqa: E402
from twin.sim.check import CheckRun, run_check, run_ensemble_check, twin_starts  # noqa: E402


def _load_real_data() -> ModuleType:
    """``experiments/real_data.py`` as a module (experiments is not a package)."""
    name = "experiments_real_data"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "real_data.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


rd = _load_real_data()

ENSEMBLE = "ensemble"
"""Model label of the default twin (stacked mixture of the fitted rules)."""
BASELINES = ("dnn", "dnn_delta", "reinforce", "static", rd.LAST_ACCURACY, rd.PSYTRACK)
"""What the ensemble is tested against (those that were run)."""
ISSUE_BASELINES = ("static", "reinforce", rd.LAST_ACCURACY, rd.PSYTRACK)
"""The baselines done-when 3 names."""
EASY = 0.5
"""Unsigned contrast at and above which a trial is easy."""
LEVELS = (0.8, 0.95)
"""Interval levels whose coverage is reported."""


@dataclass(frozen=True)
class RollingConfig:
    """One rolling-origin evaluation of one data set.

    Attributes:
        origins: the origins ``k`` (validation sessions).
        horizon: forecast sessions ``k+1..k+horizon``.
        forecast: the one-origin settings (rules, fits, adaptation, PsyTrack; ``k``/``m`` are
            replaced per origin).
        stacking: how the ensemble's weights are fitted on session ``k``.
        rollouts: free runs per animal in the generative check (0: no generative check).
        seed: seeds the rollouts.
    """

    origins: tuple[int, ...] = (4, 6, 8)
    horizon: int = 3
    forecast: object = field(default_factory=lambda: rd.ForecastConfig(rules=("static", "reinforce", "dnn", "dnn_delta")))
    stacking: StackingConfig = StackingConfig()
    rollouts: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.origins or min(self.origins) < 2 or self.horizon < 1:
            raise ValueError("need origins >= 2 and a horizon >= 1")
        if self.rollouts < 0:
            raise ValueError("rollouts must be >= 0")

    def at(self, k: int) -> object:
        """The one-origin settings at origin ``k``."""
        return replace(self.forecast, k=k, m=self.horizon)


@dataclass(frozen=True)
class OriginResult:
    """One origin.

    Attributes:
        k: the origin.
        per_animal: one row per animal and model: ``subject``, ``model``, ``n_fit_trials``,
            ``n_test_trials``, ``ll`` (nats/trial), ``acc``; with the generative check,
            ``gen_crps_acc``, ``gen_crps_easy``, ``gen_abs_err_acc`` (|mean rollout - observed|),
            ``gen_cov80_acc``, ``gen_cov95_acc``, ``gen_cov80_easy``, ``gen_cov95_easy`` (means
            over the animal's forecast sessions).
        per_session: teacher-forced ``subject``, ``session``, ``model``, ``n_trials``, ``ll``,
            ``accuracy`` (as :mod:`real_data`).
        weights: cohort stacking weights, component → weight.
        seconds: wall time per stage.
        excluded: animals with ``<= k`` sessions.
    """

    k: int
    per_animal: pd.DataFrame
    per_session: pd.DataFrame
    weights: dict[str, float]
    seconds: dict[str, float]
    excluded: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# the ensemble


def mixture_scores(component_ll: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-animal mixtures of component twins, per trial.

    Args:
        component_ll: ``[M, B, T]`` each component's per-trial log-likelihood.
        weights: ``[B, M]`` each animal's mixture weights.
        mask: ``[B, T]`` the scored trials.

    Returns:
        ``([B, T] log Σ_j π_bj exp(ll_jbt), [B, T] hit)``, 0 off the mask; a hit when the mixture
        gave the observed choice more than 1/2.
    """
    ll = mixture_log_likelihood(component_ll, weights.T)
    m = mask.double()
    return (ll * m).float(), ((ll > np.log(0.5)).double() * m).float()


# --------------------------------------------------------------------------------------------
# the generative check


def _accuracies(stats: SessionStats) -> tuple[torch.Tensor, torch.Tensor]:
    """``([N, S] accuracy on all trials, [N, S] accuracy on easy trials)``; NaN where none."""
    easy = (stats.contrast.abs() >= EASY * 100 - 1e-6).double()
    nc = stats.n_correct
    acc = nc.sum(-1) / stats.n.sum(-1)
    easy_acc = (nc * easy).sum(-1) / (stats.n * easy).sum(-1)
    return acc, easy_acc


def _session_scores(pred: np.ndarray, obs: np.ndarray) -> dict[str, np.ndarray]:
    """``[N, R]`` rollouts and ``[N]`` observations of one quantity → per-case CRPS, absolute
    error of the rollouts' mean and coverage flags (NaN where the observation is missing)."""
    ok = np.isfinite(obs) & np.isfinite(pred).any(1)
    p = np.where(np.isfinite(pred), pred, np.nanmean(np.where(np.isfinite(pred), pred, 0.0), 1, keepdims=True))
    out = {
        "crps": np.where(ok, crps_ensemble(np.nan_to_num(p), np.nan_to_num(obs)), np.nan),
        "abs_err": np.where(ok, np.abs(np.nanmean(p, 1) - obs), np.nan),
    }
    for lv, v in coverage(pred, np.where(ok, obs, np.nan), LEVELS).items():
        out[f"cov{round(lv * 100)}"] = v
    return out


def check_scores(run: CheckRun, k: int) -> pd.DataFrame:
    """Per animal and forecast session: observed and rollout accuracies scored.

    Args:
        run: a check run from cut-off ``k`` (every animal's first free session is ``k``, 0-based).
        k: the origin.

    Returns:
        ``subject``, ``session`` (1-based), ``obs_acc``, ``pred_acc``, ``crps_acc``,
        ``abs_err_acc``, ``cov80_acc``, ``cov95_acc`` and the same for ``easy``.
    """
    a, rr = len(run.subjects), run.n_rollouts
    o_acc, o_easy = (t.numpy() for t in _accuracies(run.observed))
    p_acc, p_easy = (t.numpy().reshape(a, rr, -1) for t in _accuracies(run.predicted))
    rows = []
    n_sess = run.observed.n_sessions.numpy()
    for i, s in enumerate(run.subjects):
        js = np.arange(k, n_sess[i])
        part: dict[str, object] = {"subject": [s] * len(js), "session": js + 1}
        for name, o, p in (("acc", o_acc, p_acc), ("easy", o_easy, p_easy)):
            sc = _session_scores(p[i][:, js].T, o[i, js])
            part[f"obs_{name}"] = o[i, js]
            part[f"pred_{name}"] = np.nanmean(p[i][:, js], 0) if js.size else np.array([])
            part.update({f"{m}_{name}": v for m, v in sc.items()})
        rows.append(pd.DataFrame(part))
    return pd.concat(rows, ignore_index=True)


def sampled_check(test: TrialBatch, p_correct: torch.Tensor, n_rollouts: int, seed: int, p_correct_easy: torch.Tensor | None = None) -> pd.DataFrame:
    """The generative check of a model whose choices do not depend on its history, sampled on the
    animal's own forecast trials: each trial correct with probability ``p_correct``.

    Args:
        test: the animals, scoring ``test.mask``.
        p_correct: ``[B, T]`` the model's probability of the rewarded choice.
        n_rollouts: ``R``.
        seed: seeds the draws.
        p_correct_easy: ``[B, T]`` used for the easy-accuracy rollouts instead (None: ``p_correct``).

    Returns:
        As :func:`check_scores`.
    """
    g = torch.Generator().manual_seed(int(seed))
    correct = (test.y == test.answer).double()
    easy_t = _easy_trials(test)
    rows = []
    sessions = sorted(int(v) for v in torch.unique(test.session[test.mask]).tolist())
    for i, s in enumerate(test.subjects):
        part: dict[str, list[object]] = {}
        for sess in sessions:
            m = test.mask[i] & (test.session[i] == sess)
            if not bool(m.any()):
                continue
            e = m & easy_t[i]
            part.setdefault("subject", []).append(s)
            part.setdefault("session", []).append(sess)
            for name, sel, pc in (("acc", m, p_correct), ("easy", e, p_correct if p_correct_easy is None else p_correct_easy)):
                n = int(sel.sum())
                if n == 0:
                    obs, draws = float("nan"), np.full(n_rollouts, np.nan)
                else:
                    obs = float(correct[i, sel].mean())
                    draws = torch.bernoulli(pc[i, sel].double().clamp(0, 1).expand(n_rollouts, n), generator=g).mean(1).numpy()
                part.setdefault(f"obs_{name}", []).append(obs)
                part.setdefault(f"_draws_{name}", []).append(draws)
        if part:
            rows.append(part)
    out = []
    for part in rows:
        df = pd.DataFrame({k: v for k, v in part.items() if not k.startswith("_")})
        for name in ("acc", "easy"):
            d = np.stack(part[f"_draws_{name}"])
            df[f"pred_{name}"] = np.nanmean(d, 1) if np.isfinite(d).any() else np.nan
            for m, v in _session_scores(d, df[f"obs_{name}"].to_numpy(dtype=float)).items():
                df[f"{m}_{name}"] = v
        out.append(df)
    return pd.concat(out, ignore_index=True)


def _easy_trials(batch: TrialBatch) -> torch.Tensor:
    """``[B, T]`` bool, trials whose unsigned contrast is easy (>= :data:`EASY`)."""
    return (batch.contrast_left + batch.contrast_right) >= EASY - 1e-6


def p_correct_from_ll(ll: torch.Tensor, batch: TrialBatch) -> torch.Tensor:
    """``[B, T]`` a model's probability of the rewarded choice from its per-trial log-likelihood
    of the observed choice (``p(obs)`` if the animal was correct, else ``1 - p(obs)``)."""
    p_obs = ll.double().exp()
    return torch.where(batch.y == batch.answer, p_obs, 1 - p_obs)


def session_accuracy(batch: TrialBatch, session: int, easy: bool) -> torch.Tensor:
    """``[B, 1]`` each animal's accuracy in ``session`` (on easy trials with ``easy``), clipped to
    [0.01, 0.99]; 0.5 where it had none."""
    sel = (batch.session == session) & batch.valid
    if easy:
        sel = sel & _easy_trials(batch)
    correct = (batch.y == batch.answer).double()
    n = sel.sum(1)
    acc = torch.where(n > 0, (correct * sel).sum(1) / n.clamp(min=1), torch.full_like(n, 0.5, dtype=torch.float64))
    return acc.clamp(0.01, 0.99).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# one origin


def _wide(per: pd.DataFrame, models: tuple[str, ...]) -> pd.DataFrame:
    """:mod:`real_data`'s wide per-animal table to one row per animal and model."""
    rows = []
    for mdl in models:
        rows.append(
            pd.DataFrame(
                {
                    "subject": per["subject"],
                    "model": mdl,
                    "n_fit_trials": per["n_fit_trials"],
                    "n_test_trials": per["n_test_trials"],
                    "ll": per[f"ll_{mdl}"],
                    "acc": per[f"acc_{mdl}"],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def run_origin(df: pd.DataFrame, k: int, config: RollingConfig, generative: bool = True, progress: bool = False) -> OriginResult:
    """Fit every model through origin ``k`` and score the next ``horizon`` sessions.

    Args:
        df: canonical trials table.
        k: the origin (validation session).
        config: the settings.
        generative: run the free-running check (needs contrast stimuli).
        progress: print what is being done.

    Raises:
        ValueError: no animal has a session after ``k``.
    """
    fc = config.at(k)
    torch.manual_seed(fc.seed)
    data, excluded = rd.prepare_sessions(df, k, config.horizon, fc.max_subjects)
    if data.empty:
        raise ValueError(f"no animal has more than k={k} sessions")
    batch = make_batch(data, fc.features)
    split = split_sessions(batch, k)
    test = split.test
    rd._log(progress, f"origin k={k}: {batch.n_animals} animals; fit 1..{k - 1}, validate {k}, forecast {k + 1}..{k + config.horizon} "
            f"({int(test.mask.sum())} trials)")
    seconds: dict[str, float] = {}
    fits = {}
    for rule in fc.rules:
        fits[rule] = rd.fit_rule(rule, split, fc, progress)
        seconds[rule] = fits[rule].seconds
    comps = tuple(fc.rules)
    st = stack(torch.stack([fits[r].val_ll for r in comps]), split.val.mask, config.stacking)
    weights = {r: float(w) for r, w in zip(comps, st.cohort)}
    rd._log(progress, "  stacking weights (cohort): " + ", ".join(f"{r} {w:.3f}" for r, w in weights.items()))
    trial_ll: dict[str, torch.Tensor] = {}
    trial_hit: dict[str, torch.Tensor] = {}
    trial_ll[ENSEMBLE], trial_hit[ENSEMBLE] = mixture_scores(torch.stack([fits[r].test_ll for r in comps]), st.per_animal, test.mask)
    for r in comps:
        trial_ll[r], trial_hit[r] = fits[r].test_ll, fits[r].test_hit
    trial_ll[rd.LAST_ACCURACY], trial_hit[rd.LAST_ACCURACY] = rd.last_accuracy_scores(test, k)
    pt = rd.psytrack_scores(test, fc, progress)
    if pt is not None:
        trial_ll[rd.PSYTRACK], trial_hit[rd.PSYTRACK], seconds[rd.PSYTRACK] = pt
    models = tuple(trial_ll)
    per, per_session = rd._tables(batch, split.train, test, trial_ll, trial_hit, models)
    long = _wide(per, models)

    if generative and config.rollouts > 0:
        t0 = time.perf_counter()
        subjects = list(batch.subjects)
        cut = [k] * len(subjects)
        gen: dict[str, pd.DataFrame] = {}
        for r in comps:
            twins = [fits[r].twins[s] for s in subjects]
            run = run_check(twins[0].population, twin_starts(twins, data, subjects, cut), data, None, config.rollouts, seed=config.seed)
            gen[r] = check_scores(run, k)
        ens = [TwinEnsemble.of([fits[r].twins[s] for r in comps], st.per_animal[i], comps) for i, s in enumerate(subjects)]
        gen[ENSEMBLE] = check_scores(run_ensemble_check(ens, data, subjects, cut, None, config.rollouts, seed=config.seed), k)
        gen[rd.LAST_ACCURACY] = sampled_check(
            test, torch.ones_like(test.y, dtype=torch.float64) * session_accuracy(test, k, False), config.rollouts, config.seed + 1,
            torch.ones_like(test.y, dtype=torch.float64) * session_accuracy(test, k, True),
        )
        if rd.PSYTRACK in trial_ll:
            gen[rd.PSYTRACK] = sampled_check(test, p_correct_from_ll(trial_ll[rd.PSYTRACK], test), config.rollouts, config.seed + 2)
        seconds["generative"] = time.perf_counter() - t0
        rd._log(progress, f"  generative check: {seconds['generative']:.0f} s")
        metrics = ["crps_acc", "crps_easy", "abs_err_acc", "abs_err_easy", "cov80_acc", "cov95_acc", "cov80_easy", "cov95_easy"]
        agg = []
        for mdl, g in gen.items():
            a = g.groupby("subject", sort=False)[metrics].mean().reset_index().assign(model=mdl)
            agg.append(a.rename(columns={m: f"gen_{m}" for m in metrics}))
        long = long.merge(pd.concat(agg, ignore_index=True), on=["subject", "model"], how="left")
        gsess = pd.concat([g.assign(model=mdl) for mdl, g in gen.items()], ignore_index=True)
        per_session = per_session.merge(gsess, on=["subject", "session", "model"], how="left")
    long.insert(0, "origin", k)
    per_session.insert(0, "origin", k)
    return OriginResult(k, long, per_session, weights, seconds, excluded)


def run_rolling(
    df: pd.DataFrame, config: RollingConfig, generative: bool = True, progress: bool = False, on_origin: Callable[[OriginResult], None] | None = None
) -> list[OriginResult]:
    """:func:`run_origin` at every origin (skipping origins no animal reaches); ``on_origin`` is
    called with each origin's result as soon as it is done."""
    out = []
    for k in config.origins:
        try:
            out.append(run_origin(df, k, config, generative, progress))
        except ValueError as exc:
            rd._log(True, f"origin k={k} skipped: {exc}")
            continue
        if on_origin is not None:
            on_origin(out[-1])
    return out


# --------------------------------------------------------------------------------------------
# sign tests


def sign_test(diff: np.ndarray) -> dict[str, object]:
    """Two-sided exact sign test of paired differences (> 0: the ensemble better; ties dropped)."""
    d = np.asarray(diff, dtype=float)
    d = d[np.isfinite(d)]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = rd.sign_test_p(wins, losses)
    return {
        "n_pairs": len(d),
        "wins": wins,
        "losses": losses,
        "median_diff": float(np.median(d)) if len(d) else float("nan"),
        "mean_diff": float(d.mean()) if len(d) else float("nan"),
        "p": float(p),
    }


SCORES = (("ll", 1.0, "teacher-forced LL/trial"), ("gen_crps_acc", -1.0, "free-run CRPS of session accuracy"), ("gen_crps_easy", -1.0, "free-run CRPS of easy accuracy"))
"""(column, sign that makes "higher is better", description)."""


def sign_tests(per_animal: pd.DataFrame, dataset: str, unit: str = "animal") -> pd.DataFrame:
    """The ensemble against each baseline on each score, pooled over origins and per origin.

    Args:
        per_animal: rows of :class:`OriginResult` ``per_animal`` (or per-session rows with
            ``unit="session"``) of one data set, with an ``origin`` column.
        dataset: its label.
        unit: ``animal`` (pairs are (animal, origin)) or ``session`` (pairs are (origin, session)).

    Returns:
        One row per score, baseline and origin (``all`` for the pooled test).
    """
    keys = ["origin", "subject"] + (["session"] if unit == "session" else [])
    rows = []
    for col, sign, _ in SCORES:
        if col not in per_animal.columns:
            continue
        wide = per_animal.pivot_table(index=keys, columns="model", values=col)
        if ENSEMBLE not in wide.columns:
            continue
        for base in BASELINES:
            if base not in wide.columns or wide[base].isna().all():
                continue
            diff = sign * (wide[ENSEMBLE] - wide[base])
            groups = [("all", diff)] + [(str(o), diff.xs(o, level="origin")) for o in sorted(wide.index.get_level_values("origin").unique())]
            for origin, d in groups:
                rows.append({"dataset": dataset, "score": col, "baseline": base, "origin": origin, "unit": unit, **sign_test(d.to_numpy())})
    return pd.DataFrame(rows)


def verdict(tests: pd.DataFrame, score: str, baselines: tuple[str, ...], alpha: float = 0.05) -> tuple[bool, list[str]]:
    """Whether the ensemble beats every one of ``baselines`` on ``score`` (pooled test: more wins
    than losses and ``p < alpha``), and the baselines it does not beat."""
    t = tests[(tests["score"] == score) & (tests["origin"] == "all")]
    failed = []
    for b in baselines:
        r = t[t["baseline"] == b]
        if r.empty:
            failed.append(f"{b} (not run)")
            continue
        r0 = r.iloc[0]
        if not (r0["wins"] > r0["losses"] and r0["p"] < alpha):
            failed.append(f"{b} ({r0['wins']}-{r0['losses']}, p={r0['p']:.2g})")
    return not failed, failed


# --------------------------------------------------------------------------------------------
# the script


def _model_table(per: pd.DataFrame) -> pd.DataFrame:
    """Per origin and model: pooled LL, mean accuracy, generative scores (means over animals)."""
    cols = [c for c in ("gen_crps_acc", "gen_crps_easy", "gen_abs_err_acc", "gen_cov80_acc", "gen_cov95_acc", "gen_cov80_easy", "gen_cov95_easy") if c in per.columns]
    rows = []
    for (o, mdl), g in per.groupby(["origin", "model"], sort=False):
        w = g["n_test_trials"].to_numpy(dtype=float)
        row = {"origin": str(o), "model": mdl, "animals": len(g), "pooled_ll": float((g["ll"] * w).sum() / w.sum()), "mean_ll": float(g["ll"].mean()), "pooled_acc": float((g["acc"] * w).sum() / w.sum())}
        row.update({c: float(g[c].mean()) for c in cols})
        rows.append(row)
    return pd.DataFrame(rows)


def _test_table(tests: pd.DataFrame) -> pd.DataFrame:
    t = tests.copy()
    t["ensemble_wins"] = t["wins"].astype(str) + "/" + t["losses"].astype(str)
    t["p"] = t["p"].map(lambda p: f"{p:.2g}")
    return t[["score", "baseline", "origin", "n_pairs", "ensemble_wins", "median_diff", "mean_diff", "p"]]


def _verdict_lines(tests: pd.DataFrame, label: str) -> list[str]:
    lines = []
    for col, _, desc in SCORES:
        if col not in set(tests["score"]):
            continue
        ok, failed = verdict(tests, col, ISSUE_BASELINES)
        ok_all, failed_all = verdict(tests, col, BASELINES)
        lines.append(
            f"- {label}, {desc}: beats every issue baseline (static, reinforce, last_session_accuracy, psytrack; pooled two-sided sign test p < 0.05): "
            f"**{'yes' if ok else 'no'}**" + ("" if ok else f" (not beaten: {', '.join(failed)})")
            + f"; beats every model run (also dnn, dnn_delta): **{'yes' if ok_all else 'no'}**" + ("" if ok_all else f" (not beaten: {', '.join(failed_all)})") + "."
        )
    return lines


def _loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def config_line(cfg: RollingConfig, generative: bool) -> str:
    """What a section's settings were, one markdown bullet (without the origins)."""
    return (
        f"horizon {cfg.horizon} sessions; rules {', '.join(cfg.forecast.rules)} (fits: {_fit_lines(cfg)}; adaptation max {cfg.forecast.adapt.epochs} "
        f"epochs); PsyTrack {'left out' if cfg.forecast.psytrack is None else 'fitted on sessions ' + ('1' if cfg.forecast.psytrack_sessions is None else f'k-{cfg.forecast.psytrack_sessions - 1}') + '..k'}; "
        f"generative check: {cfg.rollouts if generative else 0} rollouts per animal"
        + (f"; at most {cfg.forecast.max_subjects} animals per origin" if cfg.forecast.max_subjects else "")
    )


def _fit_lines(cfg: RollingConfig) -> str:
    fc = cfg.forecast
    return "; ".join(
        f"{r}: max {f.epochs} epochs, patience {f.patience}" + (f", update-scale lr x{f.scale_lr_multiplier:g}" if f.scale_lr_multiplier != 1 else "")
        for r in fc.rules for f in [fc.fit_for(r)]
    )


def write_summary(
    out: Path, sections: list[tuple[str, str, list[OriginResult], pd.DataFrame, str]], command: str, wall: float, load: tuple[str, str], notes: list[str],
    stem: str = "rolling_origin",
) -> str:
    """Write ``<stem>_per_animal.csv``, ``<stem>_per_session.csv``, ``<stem>_sign_tests.csv`` and
    ``<stem>_summary.md``; return the summary text."""
    out.mkdir(parents=True, exist_ok=True)
    per = pd.concat([r.per_animal.assign(dataset=name) for name, _, rs, _, _ in sections for r in rs], ignore_index=True)
    per = per[["dataset", *[c for c in per.columns if c != "dataset"]]]
    per.to_csv(out / f"{stem}_per_animal.csv", index=False, float_format="%.6f")
    sess = pd.concat([r.per_session.assign(dataset=name) for name, _, rs, _, _ in sections for r in rs], ignore_index=True)
    sess.to_csv(out / f"{stem}_per_session.csv", index=False, float_format="%.6f")
    tests = pd.concat([t for *_, t, _ in sections], ignore_index=True)
    tests.to_csv(out / f"{stem}_sign_tests.csv", index=False, float_format="%.6g")
    lines = [
        "# Rolling-origin forecast evaluation on real data (issue 16, done-when 3)",
        "",
        f"Command: {command} ({platform.machine()}, torch {torch.__version__}, 1 thread per process, niced, "
        f"2 CPU cores shared with other agents' jobs; load average (1/5/15 min) {load[0]} at start, {load[1]} at end; wall time {wall / 60:.1f} min).",
        "",
        "Protocol (the convention of `experiments/real_data.py`): at origin k every rule is fitted as a population on sessions 1..k-1, "
        "early-stopped and its per-animal adaptation (none or w0+rate) chosen on session k, and forecasts sessions k+1..k+3; every "
        "model runs through session k on the animal's real trials first. Each animal is capped at its first k+3 sessions; animals with "
        "<= k sessions are left out of that origin. The ensemble (the default twin) mixes the fitted rules per trial with weights stacked "
        "on each animal's session-k per-trial likelihoods (cohort weights, per-animal MAP with shrinkage 100 pseudo-trials) — session k "
        "also early-stopped the fits; the forecast sessions are used by nothing but the scores. Sign tests: two-sided exact binomial "
        "(real_data.sign_test_p), ties dropped; `ensemble_wins` = pairs the ensemble is better / worse; diff = ensemble - baseline "
        "(LL: higher is better; CRPS: baseline - ensemble, so > 0 favours the ensemble).",
        "",
        *notes,
        "",
        "## Verdicts",
        "",
    ]
    for name, _, _, tests_d, _ in sections:
        lines += _verdict_lines(tests_d, name)
    for name, cfg_text, rs, tests_d, desc in sections:
        per_d = per[per["dataset"] == name]
        lines += [
            "",
            f"## {name}",
            "",
            desc,
            "",
            f"- Origins {', '.join(str(r.k) for r in rs)}; {cfg_text}.",
            "- Excluded (<= k sessions): " + "; ".join(f"k={r.k}: {len(r.excluded)}" for r in rs) + ".",
            "- Cohort stacking weights: " + "; ".join(f"k={r.k}: " + ", ".join(f"{c} {w:.2f}" for c, w in r.weights.items()) for r in rs) + ".",
            "- Time per origin: " + "; ".join(f"k={r.k}: " + ", ".join(f"{s} {v / 60:.1f}" for s, v in r.seconds.items()) + " min" for r in rs) + ".",
            "",
            "### Scores per origin and model",
            "",
            "pooled_ll: over all forecast trials (nats/trial); gen_*: free-running check, means over animals of the per-session "
            "means (crps_acc / crps_easy: CRPS of session accuracy on all / easy (>= 50%) trials; abs_err_acc: |rollout mean - observed|; "
            "cov80/95: share of sessions inside the rollouts' central interval).",
            "",
            rd._md(_model_table(per_d)),
            "",
            "### Ensemble against each baseline (paired sign tests)",
            "",
            rd._md(_test_table(tests_d)),
        ]
    lines += [
        "",
        "## Caveats",
        "",
        "- The IBL mice were already trained (sessions 1-3 are their last training sessions, later ones biased blocks): this is "
        "forecasting trained behaviour, not learning from scratch; the rat learns during its 80 sessions.",
        "- One seed per fit. The free-running check replays each forecast session's contrast set and block structure, "
        "not the exact trial sequence; `psytrack` and `last_session_accuracy` (which do not learn) are sampled on the exact "
        "forecast trials instead, which gives them slightly less stimulus noise than the replayed runs.",
        "- (animal, origin) pairs share animals across origins, and the rat's (origin, session) pairs are one animal: the sign "
        "tests treat them as independent, which overstates the evidence somewhat.",
        "",
    ]
    text = "\n".join(lines)
    (out / f"{stem}_summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> str:
    """Run the evaluation(s), write the results and return the summary text."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("ibl", "rat", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="3 mice, origins 3 and 4, rat origins 15 and 20, few epochs, 10 rollouts (smoke test)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--origins", type=int, nargs="+", default=None, help="IBL origins (default 4 6 8)")
    ap.add_argument("--rat-origins", type=int, nargs="+", default=None, help="rat origins (default 20 40 60: one animal fitted one trial at a time costs ~k/20 x 6 min per origin on 2 busy cores)")
    ap.add_argument("--horizon", type=int, default=3)
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument("--max-subjects", type=int, default=None)
    ap.add_argument("--rnn", action="store_true", help="also fit the RNN rule (an ensemble component; ~5 min per IBL origin)")
    ap.add_argument("--no-psytrack", action="store_true")
    ap.add_argument("--delta-epochs", type=int, default=None, help="epoch cap of the dnn_delta population fit (default: real_data's 60)")
    ap.add_argument("--psytrack-sessions", type=int, default=None, help="fit PsyTrack on the last this-many sessions ..k (default: all)")
    ap.add_argument("--parts", type=Path, default=None, help="also save each origin's result here as soon as it is done (DATASET_kK.json)")
    ap.add_argument("--combine", type=Path, default=None, help="fit nothing: write the summary from the origins saved in this --parts folder")
    ap.add_argument("--note", action="append", default=[], help="with --combine: a line added to the summary's notes (e.g. what did not finish)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.combine is not None:
        return combine(args.combine, args.out or Path("experiments/results"), args.dataset, tuple(args.note))
    torch.set_num_threads(1)
    t_start, load0 = time.perf_counter(), _loadavg()
    rules = ("static", "reinforce", "dnn", "dnn_delta") + (("rnn",) if args.rnn else ())
    base = rd.ForecastConfig(rules=rules, seed=args.seed, max_subjects=args.max_subjects)
    if args.no_psytrack:
        base = replace(base, psytrack=None)
    if args.psytrack_sessions is not None:
        base = replace(base, psytrack_sessions=args.psytrack_sessions)
    if args.delta_epochs is not None:
        base = replace(base, rule_fit=tuple((r, replace(f, epochs=args.delta_epochs) if r == "dnn_delta" else f) for r, f in base.rule_fit))
    rollouts = args.rollouts
    if args.quick:
        base = replace(base, rules=("static", "reinforce", "dnn"), fit=FitConfig(epochs=3, patience=2), rule_fit=(),
                       adapt=FitConfig(learning_rate=0.02, epochs=2, patience=2), max_subjects=args.max_subjects or 3, psytrack_sessions=1)
        rollouts = min(rollouts, 10)
    out = args.out or Path("runs/rolling_origin_quick" if args.quick else "experiments/results")
    command = "nice -n 10 .venv/bin/python experiments/rolling_origin.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sections = []
    notes: list[str] = []
    if args.dataset in ("ibl", "both"):
        from twin.data.ibl import read_ibl_export

        df, _ = read_ibl_export()
        origins = tuple(args.origins or ((3, 4) if args.quick else (4, 6, 8)))
        cfg = RollingConfig(origins=origins, horizon=args.horizon, forecast=base, rollouts=rollouts, seed=args.seed)
        rs = run_rolling(df, cfg, generative=True, progress=True, on_origin=_saver(args.parts, "ibl", config_line(cfg, True), command, t_start, load0))
        sections.append(("ibl", config_line(cfg, True), rs, sign_tests(_cat(rs, "per_animal"), "ibl"), IBL_DESC))
    if args.dataset in ("rat", "both"):
        from twin.data.generic import read_psytrack_rat

        df, _ = read_psytrack_rat()
        origins = tuple(args.rat_origins or ((15, 20) if args.quick else (20, 40, 60)))
        rat_base = replace(base, features=rd.RAT_FEATURES, rules=tuple(r for r in base.rules if r != "rnn"),
                           rule_fit=() if args.quick else rd.RAT_RULE_FIT, adaptations=(Adaptation.NONE,), max_subjects=None)
        cfg = RollingConfig(origins=origins, horizon=args.horizon, forecast=rat_base, rollouts=0, seed=args.seed)
        rs = run_rolling(df, cfg, generative=False, progress=True, on_origin=_saver(args.parts, "rat", config_line(cfg, False), command, t_start, load0))
        sections.append(("rat", config_line(cfg, False), rs, sign_tests(_cat(rs, "per_session"), "rat", unit="session"), RAT_DESC))
    if args.quick:
        notes.append("- **Quick mode** (smoke test): few mice, 2 origins, 3 epochs, 10 rollouts; the numbers mean nothing.")
    stem = "rolling_origin" if args.dataset == "both" else f"rolling_origin_{args.dataset}"
    text = write_summary(out, sections, f"`{command.strip()}`", time.perf_counter() - t_start, (load0, _loadavg()), notes, stem)
    print(text, flush=True)
    return text


IBL_DESC = ("Data: `../shared/data/ibl/ibl_may2020_53mice_trained.csv.gz` (`twin.data.ibl.read_ibl_export`, no-go trials dropped). "
            "Features: stimulus, bias. Sign-test pairs: (mouse, origin).")
RAT_DESC = ("Data: `../shared/data/ibl/psytrack_rat_W053_Akrami.npz` (`twin.data.generic.read_psytrack_rat`; features s_a, s_b, bias), "
            "one animal, so the adaptation is `none` and the sign-test pairs are (origin, forecast session), per-session teacher-forced LL. "
            "No free-running check: the simulator presents contrasts, not the rat's tone pairs.")


def _cat(rs: list[OriginResult], what: str) -> pd.DataFrame:
    return pd.concat([getattr(r, what) for r in rs], ignore_index=True)


def _saver(folder: Path | None, dataset: str, cfg_text: str, command: str, t_start: float, load0: str) -> Callable[[OriginResult], None] | None:
    """A callback that writes each origin's result (plain tables and dicts, as JSON: never a pickle) into ``folder``."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)

    def save(r: OriginResult) -> None:
        part = {
            "dataset": dataset, "k": r.k, "per_animal": r.per_animal.to_dict(orient="list"), "per_session": r.per_session.to_dict(orient="list"), "weights": r.weights, "seconds": r.seconds,
            "excluded": r.excluded, "config": cfg_text, "command": command.strip(), "wall_s": time.perf_counter() - t_start, "load": (load0, _loadavg()),
        }
        (folder / f"{dataset}_k{r.k}.json").write_text(json.dumps(part, default=float))

    return save


def combine(folder: Path, out: Path, dataset: str = "both", extra_notes: tuple[str, ...] = ()) -> str:
    """Write the summary of the origins saved by ``--parts`` runs (one or several processes) in
    ``folder``: their tables, the commands that made them and the longest process's wall time."""
    parts = []
    for f in sorted(folder.glob("*_k*.json")):
        part = json.loads(f.read_text())
        part["per_animal"], part["per_session"] = pd.DataFrame(part["per_animal"]), pd.DataFrame(part["per_session"])
        parts.append(part)
    parts = [p for p in parts if dataset == "both" or p["dataset"] == dataset]
    if not parts:
        raise SystemExit(f"no saved origins in {folder}")
    sections = []
    for name, desc, unit, what in (("ibl", IBL_DESC, "animal", "per_animal"), ("rat", RAT_DESC, "session", "per_session")):
        ps = sorted((p for p in parts if p["dataset"] == name), key=lambda p: p["k"])
        if not ps:
            continue
        rs = [OriginResult(p["k"], p["per_animal"], p["per_session"], p["weights"], p["seconds"], tuple(p["excluded"])) for p in ps]
        cfgs = sorted({p["config"] for p in ps})
        sections.append((name, " / ".join(cfgs), rs, sign_tests(_cat(rs, what), name, unit=unit), desc))
    commands = sorted({p["command"] for p in parts})
    wall = max(p["wall_s"] for p in parts)
    loads = (min(p["load"][0] for p in parts), max(p["load"][1] for p in parts))
    notes = [f"- Run as {len(commands)} process(es) at once, each saving its origins (`--parts`), combined by "
             f"`nice -n 10 .venv/bin/python experiments/rolling_origin.py --combine {folder}`; the wall time is the longest process's."]
    notes += [f"- {n}" for n in extra_notes]
    stem = "rolling_origin" if dataset == "both" else f"rolling_origin_{dataset}"
    text = write_summary(out, sections, "; ".join(f"`{c}`" for c in commands), wall, loads, notes, stem)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
