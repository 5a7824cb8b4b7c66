"""Per-animal twins: the population rule adapted to one animal.

A twin (:class:`~twin.models.params.TwinModel`) is the cohort's population model plus the animal's
:class:`~twin.models.params.TwinParams`: initial weights ``w_0`` and per-weight learning-rate
multipliers ``exp(ρ)`` fitted to that animal's own sessions over the shared population rule (or,
with full fine-tuning, the animal's own rule). The adaptation is chosen by the likelihood of
each animal's held-out *future* sessions, the use a twin is for.

A *new* animal's starting state is inferred from its own first trials (:func:`infer_start`: the
MAP ``w_0``, and optionally ``ρ``, under a population prior :class:`StartPrior` made from the
cohort's fitted twins), not taken to be the population mean.

Adaptations of ``w_0``/``ρ`` are fitted for many animals in one batch: ``[B, K]`` parameters
trained together against the frozen population rule (the animals' losses are independent, so one
joint optimiser over the batch is the same as one per animal up to Adam's per-parameter scaling).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from twin.data.batch import TrialBatch
from twin.analysis.evaluate import score
from twin.data.splits import split_sessions
from twin.fit.train import ConvergenceIssue, EpochRecord, FitConfig, convergence_warnings, fit, resolve_device, train_epoch, _inputs
from twin.models.learner import LearnerModel
from twin.models.params import Adaptation, TwinModel, TwinParams, rule_ref

log = logging.getLogger("twin.fit.adapt")

#: The objective an :func:`infer_start` closure reports where the rollout overflowed (a
#: non-finite loss): large and finite, so L-BFGS's line search backtracks from the step instead
#: of reading the NaN as progress and extrapolating (PyTorch's strong-Wolfe search compares with
#: NaN as False and keeps stepping out, which once left starts of order 1e24).
NONFINITE_LOSS = 1e30


@dataclass(frozen=True)
class TwinFitResult:
    """Twins of a batch of animals.

    Attributes:
        twins: subject → the animal's twin (its population model in eval mode, no gradients;
            the twins of a batched adaptation share one).
        adaptation: what was adapted.
        val_ll: mean validation log-likelihood per trial at the kept epoch (nats).
        seconds: wall time.
        warnings: subject → convergence warnings of the fit that made its twin
            (:func:`twin.fit.train.convergence_warnings`; a batched adaptation's apply to every
            animal of the batch); subjects without any are left out.
    """

    twins: dict[str, TwinModel]
    adaptation: Adaptation
    val_ll: float
    seconds: float
    warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)


BATCHED_ADAPT_CONFIG = FitConfig(learning_rate=0.02, epochs=100, patience=10)
"""Default settings of the batched ``w0``/rate adaptations."""
FULL_ADAPT_CONFIG = FitConfig(learning_rate=1e-3, epochs=30, patience=5)
"""Default settings of full per-animal fine-tuning."""


def default_adapt_config(adaptation: Adaptation) -> FitConfig:
    """The default optimisation settings of an adaptation."""
    return FULL_ADAPT_CONFIG if adaptation is Adaptation.FULL else BATCHED_ADAPT_CONFIG


def _frozen_copy(population: LearnerModel) -> LearnerModel:
    """A CPU copy of ``population`` in eval mode without gradients (the twins' shared rule)."""
    return copy.deepcopy(population).cpu().eval().requires_grad_(False)


def adapt_batched(
    population: LearnerModel,
    train: TrialBatch,
    val: TrialBatch,
    fit_rate: bool,
    config: FitConfig = BATCHED_ADAPT_CONFIG,
) -> TwinFitResult:
    """Fit per-animal ``w_0`` (and ``ρ`` if ``fit_rate``) for every animal of the batch at once.

    Args:
        population: the cohort model (not modified).
        train: the animals' training sessions.
        val: the same animals (same order) scored on their validation session(s).
        fit_rate: also fit the learning-rate multipliers.
        config: optimisation settings (``learning_rate`` applies to the per-animal parameters).
    """
    if train.subjects != val.subjects:
        raise ValueError("train and val batches must hold the same animals in the same order")
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = copy.deepcopy(population).to(device).eval().requires_grad_(False)
    n_b, k = train.n_animals, model.n_weights
    w0 = torch.nn.Parameter(model.w0.detach().expand(n_b, k).clone())
    log_rate = torch.nn.Parameter(model.log_rate.detach().expand(n_b, k).clone(), requires_grad=fit_rate)
    params = [w0] + ([log_rate] if fit_rate else [])
    opt = torch.optim.Adam(params, lr=config.learning_rate or 0.02)
    train_d, val_d = train.to(device), val.to(device)
    inp = _inputs(train_d)
    n_val = max(float(val_d.mask.sum().item()), 1.0)

    @torch.no_grad()
    def val_ll() -> float:
        return float(model.log_likelihood(val_d, w0, log_rate).sum().item() / n_val)

    best, best_epoch = val_ll(), 0
    best_params = (w0.detach().clone(), log_rate.detach().clone())
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        t_epoch = time.perf_counter()
        train_ll, _ = train_epoch(model, opt, train_d, inp, config.tbptt, params, config.grad_clip, w0=w0, log_rate=log_rate, fused=config.fused)
        v = val_ll()
        history.append(EpochRecord(epoch, train_ll, v, time.perf_counter() - t_epoch, config.learning_rate or 0.02))
        if v > best + 1e-7:
            best, best_epoch, best_params = v, epoch, (w0.detach().clone(), log_rate.detach().clone())
        if epoch - best_epoch >= config.patience:
            break
    warnings = _batch_warnings(model, val_d, best_params, history, best_epoch, best, config)  # before the model leaves the device
    shared, ref = model.cpu().eval().requires_grad_(False), rule_ref(population)  # the twins' one copy of the rule
    twins = {s: TwinModel(shared, TwinParams(best_params[0][i].cpu(), best_params[1][i].cpu(), ref)) for i, s in enumerate(train.subjects)}
    return TwinFitResult(
        twins=twins,
        adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE if fit_rate else Adaptation.INITIAL_WEIGHTS,
        val_ll=best,
        seconds=time.perf_counter() - t0,
        warnings=warnings,
    )


def _batch_warnings(
    model: LearnerModel,
    val: TrialBatch,
    params: tuple[torch.Tensor, torch.Tensor],
    history: list[EpochRecord],
    best_epoch: int,
    best_ll: float,
    config: FitConfig,
) -> dict[str, tuple[str, ...]]:
    """Each animal's convergence warnings of a batched adaptation: the batch's epoch-cap warnings,
    and a worse-than-chance warning where the animal's own validation LL (at the kept ``params``,
    ``([B, K], [B, K])``) is below a coin flip's."""
    # an adaptation's early peak is its per-animal parameters overfitting, which early stopping is for
    batch = tuple(w.message for w in convergence_warnings(history, best_epoch, best_ll, config) if w.issue not in (ConvergenceIssue.WORSE_THAN_CHANCE, ConvergenceIssue.EARLY_PEAK))
    with torch.no_grad():
        ll = model.log_likelihood(val, params[0], params[1]).sum(1) / val.mask.sum(1).clamp(min=1)
    out = {}
    for s, v in zip(val.subjects, ll.tolist()):
        own = tuple(w.message for w in convergence_warnings((), best_epoch, v, config) if w.issue is ConvergenceIssue.WORSE_THAN_CHANCE)
        if batch + own:
            out[s] = batch + own
    return out


def adapt(
    population: LearnerModel,
    train: TrialBatch,
    val: TrialBatch,
    adaptation: Adaptation,
    config: FitConfig | None = None,
) -> TwinFitResult:
    """Twins of every animal in ``train`` with the given adaptation."""
    t0 = time.perf_counter()
    if adaptation is Adaptation.NONE:
        twin = TwinModel.of(_frozen_copy(population))
        n = max(float(val.mask.sum().item()), 1.0)
        v = float(twin.model.log_likelihood(val).sum().item() / n)
        return TwinFitResult({s: twin for s in train.subjects}, adaptation, v, time.perf_counter() - t0)
    if adaptation in (Adaptation.INITIAL_WEIGHTS, Adaptation.INITIAL_WEIGHTS_AND_RATE):
        cfg = config or BATCHED_ADAPT_CONFIG
        return adapt_batched(population, train, val, adaptation is Adaptation.INITIAL_WEIGHTS_AND_RATE, cfg)
    # full fine-tuning: one warm-started fit per animal (each animal its own parameters)
    cfg = config or FULL_ADAPT_CONFIG
    twins, tot_ll, tot_n, warnings = {}, 0.0, 0.0, {}
    for i, s in enumerate(train.subjects):
        res = fit(population.spec, train.select([i]), val.select([i]), cfg, init=population, progress=False)
        twins[s] = TwinModel.of(res.model)  # the animal's own rule
        kept = tuple(w.message for w in res.warnings if w.issue is not ConvergenceIssue.EARLY_PEAK)  # an animal's own rule overfitting: what early stopping is for
        if kept:
            warnings[s] = kept
        n = float(val.select([i]).mask.sum().item())
        tot_ll, tot_n = tot_ll + res.best_val_ll * n, tot_n + n
    return TwinFitResult(twins, adaptation, tot_ll / max(tot_n, 1.0), time.perf_counter() - t0, warnings)


def forecast_ll(twins: dict[str, TwinModel], test: TrialBatch) -> pd.DataFrame:
    """Per-animal forecast log-likelihood of each twin on its own animal's scored trials."""
    rows = []
    for i, s in enumerate(test.subjects):
        sc = score(twins[s].model, test.select([i]))
        rows.append({"subject": s, "n_trials": sc.n_trials, "ll": sc.ll, "accuracy": sc.accuracy})
    return pd.DataFrame(rows)


def choose_adaptation(
    population: LearnerModel,
    batch: TrialBatch,
    k: int,
    adaptations: tuple[Adaptation, ...] = (Adaptation.NONE, Adaptation.INITIAL_WEIGHTS, Adaptation.INITIAL_WEIGHTS_AND_RATE),
) -> tuple[Adaptation, pd.DataFrame]:
    """Pick the adaptation whose twins best forecast each animal's sessions after ``k``.

    Twins are fitted on sessions ``1..k-1`` (session ``k`` for early stopping) and scored,
    teacher-forced, on sessions ``k+1..``.

    Returns:
        The best adaptation and a table (adaptation, forecast LL per trial, accuracy, seconds).
    """
    split = split_sessions(batch, k)
    rows = []
    for ad in adaptations:
        res = adapt(population, split.train, split.val, ad)
        per = forecast_ll(res.twins, split.test)
        n = per["n_trials"].sum()
        rows.append(
            {
                "adaptation": ad.value,
                "forecast_ll_nats": float((per["ll"] * per["n_trials"]).sum() / n),
                "accuracy": float((per["accuracy"] * per["n_trials"]).sum() / n),
                "val_ll": res.val_ll,
                "seconds": res.seconds,
            }
        )
    table = pd.DataFrame(rows)
    best = Adaptation(table.loc[table["forecast_ll_nats"].idxmax(), "adaptation"])
    return best, table


@dataclass(frozen=True)
class StartPrior:
    """The population prior of a new animal's starting state: independent normals on each
    initial weight and each log learning-rate multiplier.

    Attributes:
        w0_mean: ``[K]`` prior mean of the initial weights (the population's ``w0``).
        w0_sd: ``[K]`` prior SD of the initial weights (their spread across fitted animals).
        log_rate_sd: ``[K]`` prior SD of the log learning-rate multipliers (mean 0).
    """

    w0_mean: torch.Tensor
    w0_sd: torch.Tensor
    log_rate_sd: torch.Tensor

    @classmethod
    def from_params(cls, params: list[TwinParams], floor: float = 0.05) -> "StartPrior":
        """The prior of a cohort's fitted twins: mean and SD (floored at ``floor``) of their
        ``w0``, SD of their ``log_rate``; needs at least two twins."""
        if len(params) < 2:
            raise ValueError("a population prior needs at least two fitted twins")
        w0 = torch.stack([p.w0 for p in params]).double()
        lr = torch.stack([p.log_rate for p in params]).double()
        return cls(w0.mean(0).float(), w0.std(0).clamp(min=floor).float(), lr.std(0).clamp(min=floor).float())


def infer_start(
    population: LearnerModel,
    first: TrialBatch,
    prior: StartPrior,
    fit_rate: bool = False,
    iterations: int = 100,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, TwinModel]:
    """Each animal's starting state from its own first trials: the MAP ``w0`` (and ``ρ`` when
    ``fit_rate``) under ``prior``, the population rule fixed, all animals in one batch.

    Maximises ``LL(first trials | w0, ρ) + log N(w0; mean, sd) + log N(ρ; 0, sd_ρ)`` by full-batch
    L-BFGS on the untruncated likelihood (``w0`` and ``ρ`` are ``[B, K]``; the animals' terms are
    independent, so one joint optimisation is one per animal). With no trials an animal gets the
    prior mean, which is then a stated choice, not a silent default.

    Args:
        population: the cohort model (not modified).
        first: the animals' first trials (``mask`` selects those used).
        prior: the population prior.
        fit_rate: also infer the learning-rate multipliers.
        iterations: L-BFGS iterations at most.
        init: ``([B, K], [B, K])`` the ``w0`` and ``ρ`` the optimisation starts from (an
            earlier MAP of the same animals, say); the prior mean and zero rates when None.
            The posterior is the same either way; a good start only takes fewer iterations.

    Returns:
        subject → twin (the population rule, shared, and the animal's MAP parameters).
    """
    model = copy.deepcopy(population).cpu().eval().requires_grad_(False)
    n_b, k = first.n_animals, model.n_weights
    if init is not None and (tuple(init[0].shape) != (n_b, k) or tuple(init[1].shape) != (n_b, k)):
        raise ValueError(f"init must be two [{n_b}, {k}] tensors, got {tuple(init[0].shape)} and {tuple(init[1].shape)}")
    w_init = prior.w0_mean.reshape(1, k).expand(n_b, k) if init is None else init[0]
    r_init = torch.zeros(n_b, k) if init is None or not fit_rate else init[1]
    w0 = torch.nn.Parameter(w_init.detach().clone().double())
    log_rate = torch.nn.Parameter(r_init.detach().clone().double(), requires_grad=fit_rate)
    model.double()
    batch = first.to_dtype(torch.float64)
    mean, sd, lr_sd = prior.w0_mean.double(), prior.w0_sd.double(), prior.log_rate_sd.double()
    params = [w0] + ([log_rate] if fit_rate else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def objective(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``[B]`` each animal's negative log posterior (up to a constant)."""
        out = -model.log_likelihood(batch, w, r).sum(1) + 0.5 * (((w - mean) / sd) ** 2).sum(1)
        return out + 0.5 * ((r / lr_sd) ** 2).sum(1) if fit_rate else out

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = objective(w0, log_rate).sum()
        if not bool(torch.isfinite(loss)):  # an overflowing step: report it as very bad, no gradient
            return loss.new_tensor(NONFINITE_LOSS)
        loss.backward()
        return loss

    start = (w0.detach().clone(), log_rate.detach().clone())
    opt.step(closure)
    with torch.no_grad():  # an animal whose optimum is not finite, or worse than where it began, keeps that
        end = objective(w0, log_rate)
        bad = ~torch.isfinite(end) | ~(w0.isfinite().all(1) & log_rate.isfinite().all(1)) | (end > objective(*start))
        if bool(bad.any()):
            w0[bad], log_rate[bad] = start[0][bad], start[1][bad]
            log.warning("start inference: %d of %d animals kept %s (their L-BFGS optimum was not finite or worse): %s",
                        int(bad.sum()), n_b, "the prior mean" if init is None else "their initial values", ", ".join(s for s, b in zip(first.subjects, bad.tolist()) if b)[:500])
    shared, ref = _frozen_copy(population), rule_ref(population)
    return {s: TwinModel(shared, TwinParams(w0[i].detach().float(), log_rate[i].detach().float(), ref)) for i, s in enumerate(first.subjects)}


def cohort_start_prior(population: LearnerModel, first: TrialBatch, w0_sd: float = 3.0, log_rate_sd: float = 1.0, iterations: int = 100) -> StartPrior:
    """The population prior of new animals' starts, made from fitting animals' first trials.

    Each fitting animal's start is inferred from its first trials the way a new animal's will be
    (:func:`infer_start`, ``w0`` and ``ρ``) under a wide prior (mean the population ``w0``, SDs
    ``w0_sd`` and ``log_rate_sd``); the prior is the spread of those starts
    (:meth:`StartPrior.from_params`), estimation noise included: a conservative prior. With a
    single animal there is no spread to measure, and the wide prior itself is returned.

    Args:
        population: the cohort model (not modified).
        first: the fitting animals' first trials (at least two animals).
        w0_sd: SD of the wide prior on the initial weights.
        log_rate_sd: SD of the wide prior on the log learning-rate multipliers.
        iterations: L-BFGS iterations at most.
    """
    k = population.n_weights
    wide = StartPrior(population.w0.detach().clone().float(), torch.full((k,), float(w0_sd)), torch.full((k,), float(log_rate_sd)))
    if first.n_animals < 2:
        return wide
    return StartPrior.from_params([t.params for t in infer_start(population, first, wide, fit_rate=True, iterations=iterations).values()])


__all__ = ["StartPrior", "TwinFitResult", "adapt", "adapt_batched", "choose_adaptation", "cohort_start_prior", "forecast_ll", "infer_start"]
