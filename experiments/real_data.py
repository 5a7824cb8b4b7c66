"""Real-data forecasting comparison (issue 6, items 2 and 3).

Twins (the ``dnn`` rule fitted on the cohort and adapted per animal) fitted on each animal's
earlier sessions forecast its later sessions, against PsyTrack (weights carried forward from the
last fitted trial), the static GLM and REINFORCE; the delta-structured DNN (``dnn_delta``) and the
RNN rule are fitted and compared the same way. On

* the 53 trained IBL mice of ``../shared/data/ibl/`` (``twin.data.ibl.read_ibl_export``), each capped
  at its first ``k + m`` sessions: every rule is fitted as a population on sessions ``1..k-1``
  of all mice (session ``k`` for early stopping), then adapted per mouse (initial weights and
  learning-rate multipliers, or not at all, whichever validates better on session ``k``), and
  scored teacher-forced on sessions ``k+1..k+m``;
* the Akrami-lab rat W053 (``twin.data.generic.read_psytrack_rat``; named stimuli ``s_a``, ``s_b``
  through ``FeatureSpec(stimuli=...)``), one animal, the same protocol with its own ``k`` and ``m``.

The reference predictors need no fit: chance (``-ln 2``) and "the stimulus side at the last
session's accuracy" (``p(choice = rewarded side) = accuracy in session k``).

Writes ``experiments/results/real_data_per_mouse.csv``, ``real_data_per_session.csv``,
``real_data_adaptation.csv``, ``real_data_summary.md`` and the same for the rat
(``rat_per_animal.csv``, ``rat_per_session.csv``, ``rat_adaptation.csv``, ``rat_summary.md``).
Run from the repository root:

    nice -n 10 .venv/bin/python experiments/real_data.py                # both data sets (~20 min on 2 busy cores)
    nice -n 10 .venv/bin/python experiments/real_data.py --dataset ibl  # the mice only (~14 min; --no-rnn: ~9)
    nice -n 10 .venv/bin/python experiments/real_data.py --quick        # 4 mice, few epochs, into runs/real_data_quick/

This script is longer than the project's ~500-line guide on purpose: it is one experiment read
top to bottom (configuration, the comparison, its summary tables and the files it writes), run
as a script and loaded by path by its test; the reusable parts it stands on are in the core
(``twin.fit``, ``twin.models.params``, ``twin.baselines``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/scipy load BLAS: PsyTrack's sparse solves stay on one core

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(_REPO))

from twin.baselines.psytrack import PsyTrackConfig, forecast_psytrack, psytrack_available  # noqa: E402
from twin.data.batch import TrialBatch, make_batch  # noqa: E402
from twin.data.splits import SessionSplit, split_sessions  # noqa: E402
from twin.data.features import FeatureSpec  # noqa: E402
from twin.fit.train import FitConfig, fit  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.models.params import Adaptation, TwinModel, stack_params  # noqa: E402
from twin.models.policy import choice_log_likelihood, logits  # noqa: E402
from twin.fit.adapt import adapt  # noqa: E402

LN2 = math.log(2.0)
RAT_FEATURES = FeatureSpec(stimuli=("s_a", "s_b"))
"""The rat's policy features: its two tones and a bias."""
LAST_ACCURACY = "last_session_accuracy"
"""Model label of the reference predictor: the rewarded side at the last session's accuracy."""
PSYTRACK = "psytrack"
"""Model label of PsyTrack with its last weights carried forward."""


DEFAULT_RULE_FIT: tuple[tuple[str, FitConfig], ...] = (
    ("dnn", FitConfig(epochs=120, patience=15, lr_patience=10)),
    ("dnn_delta", FitConfig(epochs=60, patience=10, lr_patience=5, scale_lr_multiplier=10.0)),
    ("rnn", FitConfig(epochs=40, patience=8, lr_patience=10)),
)
"""Per-rule population settings, sized on these data (the free DNN improves slowly and gains
nothing from a faster update scale, the delta-structured DNN converges in ~50 epochs with one;
the RNN costs ~4 s an epoch on 53 mice)."""
RAT_RULE_FIT: tuple[tuple[str, FitConfig], ...] = (
    ("reinforce", FitConfig(epochs=40, patience=8, lr_patience=5)),
    ("dnn", FitConfig(epochs=60, patience=10, lr_patience=10)),
    ("dnn_delta", FitConfig(epochs=40, patience=8, lr_patience=5, scale_lr_multiplier=10.0)),
)
"""The rat's settings: one animal of ~15,000 fitted trials runs one trial at a time (no batch to
share the per-step cost), so the epoch caps are lower."""


@dataclass(frozen=True)
class ForecastConfig:
    """One forecasting comparison.

    Attributes:
        k: validation session; rules are fitted on sessions ``1..k-1`` and early-stopped on ``k``.
        m: forecast horizon: sessions ``k+1..k+m`` are scored (fewer when an animal has fewer).
        rules: population rules to fit, each adapted per animal; a model's label in the tables is
            its rule name.
        twin_rule: the rule whose adapted models are the project's twins (the headline).
        flexible_rules: rules also compared against every baseline like the twin (those in
            ``rules``).
        features: policy features.
        fit: default population optimisation settings.
        rule_fit: ``(rule, settings)`` overrides of ``fit`` per rule.
        adapt: optimisation settings of the per-animal adaptations.
        adaptations: candidate adaptations, chosen per rule by the validation likelihood of
            session ``k`` (a rule that does not learn gets ``w0`` in place of ``w0+rate``).
        psytrack: PsyTrack settings, or None to leave it out.
        psytrack_sessions: PsyTrack is fitted on the last this-many sessions ``..k`` (None: all).
        max_subjects: keep only the first this-many eligible animals (None: all).
        seed: seeds every fit.
    """

    k: int = 6
    m: int = 4
    rules: tuple[str, ...] = ("static", "reinforce", "dnn", "dnn_delta")
    twin_rule: str = "dnn"
    flexible_rules: tuple[str, ...] = ("dnn_delta", "rnn")
    features: FeatureSpec = field(default_factory=FeatureSpec)
    fit: FitConfig = FitConfig(epochs=60, patience=10, lr_patience=5)
    rule_fit: tuple[tuple[str, FitConfig], ...] = DEFAULT_RULE_FIT
    adapt: FitConfig = FitConfig(learning_rate=0.02, epochs=30, patience=6, lr_patience=3)
    adaptations: tuple[Adaptation, ...] = (Adaptation.NONE, Adaptation.INITIAL_WEIGHTS_AND_RATE)
    psytrack: PsyTrackConfig | None = PsyTrackConfig(optimize=("sigma",))
    psytrack_sessions: int | None = None
    max_subjects: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2 or self.m < 1:
            raise ValueError("need k >= 2 and m >= 1")
        if self.twin_rule not in self.rules:
            raise ValueError(f"twin_rule {self.twin_rule!r} is not among the rules {self.rules}")
        if not self.adaptations:
            raise ValueError("need at least one adaptation")

    def fit_for(self, rule: str) -> FitConfig:
        """Population optimisation settings of ``rule`` (seeded with :attr:`seed`)."""
        return replace(dict(self.rule_fit).get(rule, self.fit), seed=self.seed)

    @property
    def compared(self) -> tuple[str, ...]:
        """The twin and the other flexible rules that were fitted, each compared with every baseline."""
        return (self.twin_rule, *[r for r in self.flexible_rules if r in self.rules and r != self.twin_rule])


@dataclass(frozen=True)
class ForecastComparison:
    """What :func:`compare_forecasts` measured.

    Attributes:
        per_animal: one row per animal: ``subject``, ``n_fit_trials``, ``n_test_trials``,
            ``n_test_sessions``, then ``ll_<model>`` (nats/trial) and ``acc_<model>`` (the
            more likely choice was made) for every model.
        per_session: long table: ``subject``, ``session``, ``model``, ``n_trials``, ``ll``,
            ``accuracy``.
        adaptation: per rule and candidate adaptation: validation and forecast LL, chosen flag,
            epochs, seconds.
        models: model labels in table order (``twin`` first).
        seconds: wall time per stage.
        excluded: animals left out (too few sessions).
        config: the settings.
    """

    per_animal: pd.DataFrame
    per_session: pd.DataFrame
    adaptation: pd.DataFrame
    models: tuple[str, ...]
    seconds: dict[str, float]
    excluded: tuple[str, ...]
    config: ForecastConfig


def prepare_sessions(df: pd.DataFrame, k: int, m: int, max_subjects: int | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Cap every animal at its first ``k + m`` sessions and keep those with a session after ``k``.

    Args:
        df: canonical trials table (sessions numbered 1.. per subject).
        k: validation session.
        m: forecast horizon.
        max_subjects: keep only the first this-many eligible subjects (table order).

    Returns:
        The reduced table and the subjects excluded for having ``k`` sessions or fewer.
    """
    n_sess = df.groupby("subject", sort=False)["session"].max()
    ok = [s for s, n in n_sess.items() if n > k]
    excluded = tuple(str(s) for s, n in n_sess.items() if n <= k)
    if max_subjects is not None:
        ok = ok[:max_subjects]
    out = df[df["subject"].isin(ok) & (df["session"] <= k + m)].reset_index(drop=True)
    return out, excluded


@torch.no_grad()
def twin_trial_scores(twins: dict[str, TwinModel], batch: TrialBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-trial log-likelihood and hits of per-animal twins over one population rule, in one
    batched pass.

    Args:
        twins: subject → twin; the twins must reference one rule (the batched adaptations of
            one population model).
        batch: the animals, scoring ``batch.mask``.

    Returns:
        ``([B, T] log-likelihood, [B, T] hit)``, both 0 where not scored.

    Raises:
        ValueError: the twins reference different rules.
    """
    chosen = [twins[s] for s in batch.subjects]
    w0, log_rate = stack_params([t.params for t in chosen])
    w = chosen[0].model.trajectory(batch, w0, log_rate)
    ll = choice_log_likelihood(w, batch.x, batch.y)
    z = logits(w, batch.x)
    m = batch.mask.float()
    hit = ((z > 0).float() == batch.y).float()
    return ll * m, hit * m


def last_accuracy_scores(batch: TrialBatch, session: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference predictor: the rewarded side, chosen with the probability the animal was
    correct in ``session`` (clipped to [0.01, 0.99]), scored on ``batch.mask``.

    Returns:
        ``([B, T] log-likelihood, [B, T] hit)``, 0 where not scored.
    """
    correct = (batch.y == batch.answer).float()
    in_s = (batch.session == session) & batch.valid
    acc = ((correct * in_s).sum(1) / in_s.sum(1).clamp(min=1)).clamp(0.01, 0.99).unsqueeze(1)
    ll = torch.where(correct > 0, acc.log(), (1 - acc).log())
    hit = torch.where(acc >= 0.5, correct, 1 - correct)
    m = batch.mask.float()
    return ll * m, hit * m


def _adapt_candidates(rule_learns: bool, candidates: tuple[Adaptation, ...]) -> tuple[Adaptation, ...]:
    """The candidate adaptations of a rule: learning-rate multipliers mean nothing to a rule that
    does not learn, so it gets ``w0`` instead of ``w0+rate``."""
    out: list[Adaptation] = []
    for ad in candidates:
        if not rule_learns and ad is Adaptation.INITIAL_WEIGHTS_AND_RATE:
            ad = Adaptation.INITIAL_WEIGHTS
        if ad not in out:
            out.append(ad)
    return tuple(out)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


@dataclass(frozen=True)
class RuleFit:
    """One rule fitted as a population and adapted per animal (the adaptation chosen on the
    validation session).

    Attributes:
        rule: the rule.
        twins: subject → the chosen adaptation's twin.
        test_ll: ``[B, T]`` per-trial log-likelihood on the forecast trials (0 elsewhere).
        test_hit: ``[B, T]`` hits there.
        val_ll: ``[B, T]`` per-trial log-likelihood on the validation session (0 elsewhere).
        rows: the adaptation table's rows of this rule.
        seconds: wall time of the fit and its adaptations.
    """

    rule: str
    twins: dict[str, TwinModel]
    test_ll: torch.Tensor
    test_hit: torch.Tensor
    val_ll: torch.Tensor
    rows: list[dict[str, object]]
    seconds: float


def fit_rule(rule: str, split: SessionSplit, config: ForecastConfig, progress: bool = False) -> RuleFit:
    """Fit ``rule`` as a population on ``split.train`` (early-stopped on ``split.val``), adapt it
    per animal with each candidate adaptation, keep the one with the better validation
    likelihood, and score its twins teacher-forced on ``split.test``."""
    t0 = time.perf_counter()
    test = split.test
    pop = fit(ModelSpec(rule, config.features), split.train, split.val, config.fit_for(rule), progress=False)
    _log(progress, f"{rule}: population val LL {pop.best_val_ll:.4f} at epoch {pop.best_epoch}/{len(pop.history)} "
         f"({pop.seconds:.0f} s)")
    rows: list[dict[str, object]] = []
    best: tuple[float, str, dict[str, TwinModel], torch.Tensor, torch.Tensor] | None = None
    for ad in _adapt_candidates(pop.model.rule.learns, config.adaptations):
        res = adapt(pop.model, split.train, split.val, ad, replace(config.adapt, seed=config.seed))
        ll, hit = twin_trial_scores(res.twins, test)
        n = float(test.mask.sum())
        rows.append(
            {
                "rule": rule,
                "adaptation": ad.value,
                "val_ll": res.val_ll,
                "forecast_ll": float(ll.sum()) / n,
                "population_epochs": len(pop.history),
                "population_best_epoch": pop.best_epoch,
                "seconds": res.seconds,
            }
        )
        _log(progress, f"  adapt {ad.value}: val LL {res.val_ll:.4f}, forecast LL {float(ll.sum()) / n:.4f} ({res.seconds:.0f} s)")
        if best is None or res.val_ll > best[0]:
            best = (res.val_ll, ad.value, res.twins, ll, hit)
    assert best is not None
    for row in rows:
        row["chosen"] = row["adaptation"] == best[1]
    val_ll, _ = twin_trial_scores(best[2], split.val)
    return RuleFit(rule, best[2], best[3], best[4], val_ll, rows, time.perf_counter() - t0)


def psytrack_scores(test: TrialBatch, config: ForecastConfig, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """PsyTrack fitted on sessions ``..k`` (the last ``psytrack_sessions`` of them), its last
    weights carried forward over ``test.mask``: ``([B, T] log-likelihood, [B, T] hit, seconds)``,
    or None when it is left out or not installed."""
    if config.psytrack is None:
        return None
    if not psytrack_available():
        _log(True, "psytrack is not installed: PsyTrack left out (pip install psytrack==2.0.2)")
        return None
    t0 = time.perf_counter()
    first = 1 if config.psytrack_sessions is None else max(1, config.k - config.psytrack_sessions + 1)
    pt = forecast_psytrack(test, config.k, config.psytrack, fit_from=first, progress=progress)
    return torch.from_numpy(pt.ll).float(), torch.from_numpy(pt.hit).float(), time.perf_counter() - t0


def compare_forecasts(df: pd.DataFrame, config: ForecastConfig = ForecastConfig(), progress: bool = False) -> ForecastComparison:
    """Fit every model on each animal's earlier sessions and score its later ones.

    Args:
        df: canonical trials table (with ``stim_<name>`` columns for named-stimulus features).
        config: the settings.
        progress: print what is being done.

    Returns:
        The per-animal and per-session tables, the adaptation choices and timings.

    Raises:
        ValueError: no animal has a session after ``k``.
    """
    torch.manual_seed(config.seed)
    data, excluded = prepare_sessions(df, config.k, config.m, config.max_subjects)
    if data.empty:
        raise ValueError(f"no animal has more than k={config.k} sessions")
    batch = make_batch(data, config.features)
    split = split_sessions(batch, config.k)
    test = split.test
    _log(progress, f"{batch.n_animals} animals, {int(batch.valid.sum())} trials; fit on sessions 1..{config.k - 1} "
         f"({int(split.train.valid.sum())} trials), validate on {config.k}, forecast {config.k + 1}..{config.k + config.m} "
         f"({int(test.mask.sum())} trials)")
    trial_ll: dict[str, torch.Tensor] = {}
    trial_hit: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    adapt_rows: list[dict[str, object]] = []

    for rule in config.rules:
        rf = fit_rule(rule, split, config, progress)
        adapt_rows += rf.rows
        trial_ll[rule], trial_hit[rule] = rf.test_ll, rf.test_hit
        seconds[rule] = rf.seconds

    trial_ll[LAST_ACCURACY], trial_hit[LAST_ACCURACY] = last_accuracy_scores(test, config.k)
    pt_scores = psytrack_scores(test, config, progress)
    if pt_scores is not None:
        trial_ll[PSYTRACK], trial_hit[PSYTRACK], seconds[PSYTRACK] = pt_scores

    models = (*config.compared, *[lbl for lbl in trial_ll if lbl not in config.compared])
    per_animal, per_session = _tables(batch, split.train, test, trial_ll, trial_hit, models)
    return ForecastComparison(
        per_animal=per_animal,
        per_session=per_session,
        adaptation=pd.DataFrame(adapt_rows),
        models=models,
        seconds=seconds,
        excluded=excluded,
        config=config,
    )


def _tables(
    batch: TrialBatch,
    train: TrialBatch,
    test: TrialBatch,
    trial_ll: dict[str, torch.Tensor],
    trial_hit: dict[str, torch.Tensor],
    models: tuple[str, ...],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-animal (wide) and per-session (long) tables from per-trial scores."""
    mask = test.mask
    n = mask.sum(1).clamp(min=1).double()
    last_test = torch.where(mask, test.session, torch.zeros_like(test.session)).max(1).values
    first_test = torch.where(mask, test.session, torch.full_like(test.session, 10**6)).min(1).values
    per = pd.DataFrame(
        {
            "subject": list(batch.subjects),
            "n_fit_trials": train.valid.sum(1).numpy(),
            "n_test_trials": mask.sum(1).numpy(),
            "n_test_sessions": (last_test - first_test + 1).clamp(min=0).numpy(),
        }
    )
    for mdl in models:
        per[f"ll_{mdl}"] = (trial_ll[mdl].double().sum(1) / n).numpy()
    for mdl in models:
        per[f"acc_{mdl}"] = (trial_hit[mdl].double().sum(1) / n).numpy()
    rows = []
    sessions = sorted(int(s) for s in torch.unique(test.session[mask]).tolist())
    for s in sessions:
        ms = mask & (test.session == s)
        ns = ms.sum(1)
        for i, subj in enumerate(batch.subjects):
            if int(ns[i]) == 0:
                continue
            for mdl in models:
                rows.append(
                    {
                        "subject": subj,
                        "session": s,
                        "model": mdl,
                        "n_trials": int(ns[i]),
                        "ll": float((trial_ll[mdl][i] * ms[i]).sum() / ns[i]),
                        "accuracy": float((trial_hit[mdl][i] * ms[i]).sum() / ns[i]),
                    }
                )
    return per, pd.DataFrame(rows)


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign-test p-value (ties dropped)."""
    n = wins + losses
    if n == 0:
        return float("nan")
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _ll(per: pd.DataFrame, model: str) -> np.ndarray:
    return per[f"ll_{model}"].to_numpy() if model != "chance" else np.full(len(per), -LN2)


def summarize(result: ForecastComparison) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model table and twin-vs-baseline table.

    Returns:
        ``models``: per model: pooled LL (trial-weighted, nats/trial), median and mean per-animal
        LL, pooled accuracy, fraction of animals above chance; ``gains``: for the twin (and each
        other compared flexible rule, column ``model``) against every other model and chance:
        median (and quartiles) of the per-animal LL gain, mean gain, pooled (trial-weighted)
        gain, fraction of animals where the model wins, and the two-sided sign-test p-value.
    """
    per = result.per_animal
    w = per["n_test_trials"].to_numpy(dtype=float)
    rows = []
    for mdl in (*result.models, "chance"):
        ll = _ll(per, mdl)
        acc = per[f"acc_{mdl}"].to_numpy() if mdl != "chance" else np.full(len(per), np.nan)
        rows.append(
            {
                "model": mdl + (" (twin)" if mdl == result.config.twin_rule else ""),
                "pooled_ll": float((ll * w).sum() / w.sum()),
                "median_ll": float(np.median(ll)),
                "mean_ll": float(ll.mean()),
                "pooled_accuracy": float((acc * w).sum() / w.sum()) if mdl != "chance" else float("nan"),
                "better_than_chance": float((ll > -LN2).mean()),
            }
        )
    grows = []
    for cand in result.config.compared:
        if f"ll_{cand}" not in per.columns:
            continue
        mine = _ll(per, cand)
        for mdl in (*[m for m in result.models if m != cand], "chance"):
            gain = mine - _ll(per, mdl)
            wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
            grows.append(
                {
                    "model": cand + (" (twin)" if cand == result.config.twin_rule else ""),
                    "baseline": mdl,
                    "median_gain": float(np.median(gain)),
                    "gain_q25": float(np.quantile(gain, 0.25)),
                    "gain_q75": float(np.quantile(gain, 0.75)),
                    "mean_gain": float(gain.mean()),
                    "pooled_gain": float((gain * w).sum() / w.sum()),
                    "wins": f"{wins}/{len(gain)}",
                    "fraction_wins": wins / len(gain),
                    "sign_test_p": sign_test_p(wins, losses),
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(grows)


# --------------------------------------------------------------------------------------------
# the script


def _md(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A markdown table: float columns as ``floatfmt``, strings as they are (p-values such as
    ``8.2e-05`` stay that way instead of being re-read as numbers and rounded to 0)."""
    shown = df.copy()
    numeric = [c for c in shown.columns if pd.api.types.is_float_dtype(shown[c])]
    for c in numeric:
        shown[c] = shown[c].map(lambda v: "nan" if pd.isna(v) else format(v, floatfmt))
    align = ["right" if c in numeric or pd.api.types.is_integer_dtype(df[c]) else "left" for c in shown.columns]
    try:
        return shown.to_markdown(index=False, disable_numparse=True, colalign=align)
    except ImportError:  # pragma: no cover - tabulate is a dependency
        return "```\n" + shown.to_string(index=False) + "\n```"


def _config_lines(cfg: ForecastConfig) -> list[str]:
    pt = cfg.psytrack
    pt_text = "left out" if pt is None else (
        f"per-weight random-walk sigma chosen by evidence (optimised: {', '.join(pt.optimize)}; start sigma {pt.sigma:g}, "
        f"sigInit {pt.sig_init:g}, sigDay {pt.sig_day if pt.sig_day is not None else 'none'}), fitted on sessions "
        f"{'1' if cfg.psytrack_sessions is None else max(1, cfg.k - cfg.psytrack_sessions + 1)}..{cfg.k}, "
        f"the last fitted trial's weights carried forward unchanged"
    )
    fits = "; ".join(
        f"{r}: max {f.epochs} epochs, patience {f.patience}, lr {f.learning_rate or 'rule default'}"
        + (f", update-scale lr x{f.scale_lr_multiplier:g}" if f.scale_lr_multiplier != 1 else "")
        for r in cfg.rules
        for f in [cfg.fit_for(r)]
    )
    return [
        f"- Split: fit on sessions 1..{cfg.k - 1}, early stopping and choice of adaptation on session {cfg.k}, "
        f"forecast (teacher-forced, scored) sessions {cfg.k + 1}..{cfg.k + cfg.m}; the models run through session {cfg.k} "
        "on the animal's real trials before the forecast starts.",
        f"- Features: {', '.join(cfg.features.names)}. Rules: {', '.join(cfg.rules)}; twin = `{cfg.twin_rule}`.",
        f"- Population fits (Adam, TBPTT {cfg.fit.tbptt}, seed {cfg.seed}): {fits}. "
        f"Per-animal adaptation candidates: {', '.join(a.value for a in cfg.adaptations)} (max {cfg.adapt.epochs} epochs, "
        f"lr {cfg.adapt.learning_rate}), the one with the better session-{cfg.k} likelihood kept per rule.",
        f"- PsyTrack: {pt_text}.",
        f"- `{LAST_ACCURACY}`: p(choice = rewarded side) = the animal's accuracy in session {cfg.k}; it is given the "
        "rewarded side, which the policy models only see through the stimulus.",
    ]


def write_outputs(result: ForecastComparison, out: Path, stem: str, title: str, notes: list[str], command: str, wall: float) -> str:
    """Write ``<stem>_per_mouse.csv`` (or per-animal), ``<stem>_per_session.csv``,
    ``<stem>_adaptation.csv`` and ``<stem>_summary.md``; return the summary text."""
    out.mkdir(parents=True, exist_ok=True)
    models, gains = summarize(result)
    per_name = f"{stem}_per_mouse.csv" if stem == "real_data" else f"{stem}_per_animal.csv"
    result.per_animal.to_csv(out / per_name, index=False, float_format="%.6f")
    result.per_session.to_csv(out / f"{stem}_per_session.csv", index=False, float_format="%.6f")
    result.adaptation.to_csv(out / f"{stem}_adaptation.csv", index=False, float_format="%.6f")
    per = result.per_animal
    timing = ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.seconds.items())
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}` ({platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread, "
        f"niced, on 2 CPU cores shared with other jobs; wall time {wall / 60:.1f} min: {timing}).",
        "",
        *notes,
        f"- Animals: {len(per)} scored ({int(per['n_test_trials'].sum())} forecast trials, "
        f"{int(per['n_fit_trials'].sum())} fitted trials)"
        + (f"; excluded for having <= {result.config.k} sessions: {', '.join(result.excluded)}" if result.excluded else "")
        + ".",
        *_config_lines(result.config),
        "",
        "## Forecast log-likelihood per trial (nats; higher is better)",
        "",
        "pooled = over all forecast trials; median/mean = over animals of each animal's mean; "
        "better_than_chance = fraction of animals above -ln 2.",
        "",
        _md(models),
        "",
        "## The twin against each baseline (per-animal LL gain, nats/trial)",
        "",
        "gain = LL(model) - LL(baseline) per animal; fraction_wins = animals where the gain is > 0; "
        "sign_test_p = two-sided exact sign test. The twin is the project's `"
        + result.config.twin_rule
        + "` rule adapted per animal; other flexible rules are compared the same way below it.",
        "",
        _md(gains.assign(sign_test_p=gains["sign_test_p"].map(lambda p: f"{p:.2g}"))),
        "",
        "## Adaptation per rule (chosen on the validation session; forecast LL shown for information)",
        "",
        _md(result.adaptation),
        "",
        "## Caveats",
        "",
        "- Scores are teacher-forced: every model sees the animal's real choices and rewards up to each scored trial "
        "(the rules update on them); none is simulating the sessions open-loop.",
        "- PsyTrack is scored the way a lab would use it to forecast: its last fitted weights, unchanged. It is a "
        "descriptive model (it tracks the weights inside the fitted sessions) and does not claim to forecast.",
        "- One seed per fit, no ensembles; the checkpoint kept is the best on the validation session.",
        (
            f"- Population fits stopped by their epoch cap while still improving: {', '.join(_capped(result))} "
            "(more epochs would likely improve them)."
            if _capped(result)
            else "- Every population fit stopped early (patience), none at its epoch cap."
        ),
        "",
    ]
    text = "\n".join(lines)
    (out / f"{stem}_summary.md").write_text(text)
    return text


def _ibl_notes(cfg: ForecastConfig) -> list[str]:
    return [
        "Data: `../shared/data/ibl/ibl_may2020_53mice_trained.csv.gz` via `twin.data.ibl.read_ibl_export` "
        "(no-go trials dropped). These mice were **already trained**: session 1-3 are their last 3 training "
        "sessions, later ones biased-block sessions (P(left) 0.2/0.8 blocks). This is forecasting of trained "
        "behaviour with block-driven bias swings, not of learning from scratch.",
        f"- Subsampling: every mouse is capped at its first {cfg.k + cfg.m} sessions (of 7-89); "
        "mice with fewer forecast sessions are scored on those they have.",
    ]


def _rat_notes(cfg: ForecastConfig) -> list[str]:
    return [
        "Data: `../shared/data/ibl/psytrack_rat_W053_Akrami.npz` (Akrami-lab rat W053, auditory parametric working "
        "memory, 80 sessions, 20,000 trials, learning during training) via `twin.data.generic.read_psytrack_rat`, through "
        "the generic named-stimulus path: `FeatureSpec(stimuli=(\"s_a\", \"s_b\"))`, one weight per tone plus a bias.",
        "- One animal: the population fit *is* the animal's fit, so the twin's adaptation is `none`; "
        "per-animal statistics (win fractions, sign tests) are over one animal and say nothing; "
        "the per-session table (`rat_per_session.csv`) shows how each model does across the forecast sessions.",
    ]


def session_gains(result: ForecastComparison) -> pd.DataFrame:
    """Like the gains of :func:`summarize`, but over (animal, forecast session) pairs: for one
    animal (the rat) the sessions are the only replication there is.

    Returns:
        Per compared model and baseline: median (and quartiles) of the per-session LL gain,
        sessions won, the fraction won and the two-sided sign-test p-value (sessions are not
        independent: read it as a description).
    """
    ps = result.per_session.pivot_table(index=["subject", "session"], columns="model", values="ll")
    rows = []
    for cand in result.config.compared:
        if cand not in ps.columns:
            continue
        for mdl in [m for m in result.models if m != cand]:
            gain = (ps[cand] - ps[mdl]).to_numpy()
            wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
            rows.append(
                {
                    "model": cand + (" (twin)" if cand == result.config.twin_rule else ""),
                    "baseline": mdl,
                    "median_gain": float(np.median(gain)),
                    "gain_q25": float(np.quantile(gain, 0.25)),
                    "gain_q75": float(np.quantile(gain, 0.75)),
                    "sessions_won": f"{wins}/{len(gain)}",
                    "fraction_won": wins / len(gain),
                    "sign_test_p": f"{sign_test_p(wins, losses):.2g}",
                }
            )
    return pd.DataFrame(rows)


def _capped(result: ForecastComparison) -> list[str]:
    """Rules whose population fit kept improving up to its epoch cap."""
    ad = result.adaptation.drop_duplicates("rule")
    return [
        str(r.rule)
        for r in ad.itertuples()
        if int(r.population_best_epoch) == int(r.population_epochs) == result.config.fit_for(str(r.rule)).epochs
    ]


def _per_session_means(result: ForecastComparison) -> pd.DataFrame:
    ps = result.per_session
    wide = ps.pivot_table(index="session", columns="model", values="ll").reset_index()
    wide["session"] = wide["session"].astype(int).astype(str)
    return wide[["session", *[m for m in result.models if m in wide.columns]]]


def main(argv: list[str] | None = None) -> None:
    """Run the comparison(s) and write the results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("ibl", "rat", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="4 mice / 30 rat sessions, few epochs, static/REINFORCE/DNN only (smoke test)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default experiments/results; --quick: runs/real_data_quick)")
    ap.add_argument("--k", type=int, default=6, help="IBL validation session (fit on 1..k-1)")
    ap.add_argument("--m", type=int, default=4, help="IBL forecast horizon (sessions k+1..k+m)")
    ap.add_argument("--rat-k", type=int, default=60)
    ap.add_argument("--rat-m", type=int, default=20)
    ap.add_argument("--no-rnn", action="store_true", help="leave the RNN rule out of the IBL comparison (~5 of its minutes)")
    ap.add_argument("--no-delta", action="store_true", help="leave the delta-structured DNN (dnn_delta) out")
    ap.add_argument("--no-psytrack", action="store_true")
    ap.add_argument("--max-subjects", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rules: tuple[str, ...] = ("static", "reinforce", "dnn")
    rules += () if args.no_delta or args.quick else ("dnn_delta",)
    rules += () if args.no_rnn or args.quick else ("rnn",)
    base = ForecastConfig(rules=rules, seed=args.seed, max_subjects=args.max_subjects)
    if args.no_psytrack:
        base = replace(base, psytrack=None)
    if args.quick:
        base = replace(
            base,
            fit=FitConfig(epochs=4, patience=2),
            rule_fit=(),
            adapt=FitConfig(learning_rate=0.02, epochs=3, patience=2),
            max_subjects=args.max_subjects or 4,
        )
    command = "nice -n 10 .venv/bin/python experiments/real_data.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = args.out or Path("runs/real_data_quick" if args.quick else "experiments/results")
    if args.dataset in ("ibl", "both"):
        from twin.data.ibl import read_ibl_export

        t0 = time.perf_counter()
        df, _ = read_ibl_export()
        cfg = replace(base, k=args.k, m=args.m)
        res = compare_forecasts(df, cfg, progress=True)
        title = f"Forecasting later sessions of {len(res.per_animal)} trained IBL mice"
        text = write_outputs(res, out, "real_data", title, _ibl_notes(cfg), command.strip(), time.perf_counter() - t0)
        print(text, flush=True)
    if args.dataset in ("rat", "both"):
        from twin.data.generic import read_psytrack_rat

        t0 = time.perf_counter()
        df, _ = read_psytrack_rat()
        k, m = (20, 10) if args.quick else (args.rat_k, args.rat_m)
        rat_rules = tuple(r for r in base.rules if r != "rnn")
        cfg = replace(
            base,
            k=k,
            m=m,
            rules=rat_rules,
            features=RAT_FEATURES,
            rule_fit=() if args.quick else RAT_RULE_FIT,
            adaptations=(Adaptation.NONE,),
            max_subjects=None,
        )
        res = compare_forecasts(df, cfg, progress=True)
        notes = _rat_notes(cfg)
        text = write_outputs(res, out, "rat", "Forecasting later sessions of the Akrami-lab rat W053", notes, command.strip(), time.perf_counter() - t0)
        text += (
            "\n## Per forecast session: each flexible rule against each baseline (LL gain, nats/trial)\n\n"
            + _md(session_gains(res))
            + "\n\n## Forecast LL per session (nats/trial)\n\n"
            + _md(_per_session_means(res))
            + "\n"
        )
        (out / "rat_summary.md").write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
