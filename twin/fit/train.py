"""Maximum-likelihood fitting of learner models, many animals in one batch.

The loss is the negative log-likelihood of the observed choices along the deterministic,
teacher-forced weight trajectory. Long sequences are cut into chunks for truncated
backpropagation through time (one Adam step per chunk, the weights and recurrent state carried
across chunks without gradient). The checkpoint kept is the one with the best validation
likelihood; training stops when it has not improved for ``patience`` epochs.

Truncation biases the gradient of a rule whose updates persist: an update made early in a chunk
changes every later choice, but only the choices inside the chunk reach its gradient. An optional
second phase therefore refines the Adam solution with full-batch L-BFGS on the untruncated
likelihood (exact gradient through the whole trajectory), again keeping the round with the best
validation likelihood.
"""

from __future__ import annotations

import copy
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from twin.progress import progress_bar

from twin.cancel import checkpoint
from twin.data.batch import TrialBatch
from twin.errors import TwinError
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.policy import choice_log_likelihood
from twin.models.rules import UpdateInputs


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings.

    Attributes:
        epochs: maximum passes over the data.
        learning_rate: Adam step size (None: the rule's ``default_learning_rate``).
        tbptt: chunk length (trials) for truncated backpropagation through time.
        patience: epochs without validation improvement before stopping.
        lr_patience: epochs without improvement before the step size is halved.
        grad_clip: maximum gradient norm.
        seed: seeds the parameter initialisation.
        device: ``cpu``, ``cuda`` (error if absent) or ``auto`` (CUDA when present).
        fit_w0: also fit the initial weights.
        scale_lr_multiplier: step-size multiplier for the log-parametrised update scales
            (``log_scale``) of the DNN and RNN rules, which start at 1e-3.
        lbfgs_rounds: rounds of full-batch L-BFGS on the untruncated likelihood after the Adam
            phase (0: none); each round is scored on the validation set like an epoch.
        lbfgs_iterations: L-BFGS iterations per round.
        fused: use the rules' fused rollouts (:mod:`twin.models.rules.fused`) for the gradient;
            False runs the per-step autograd loop they are checked against (the reference).
        ema_decay: validate and keep an exponential moving average of the parameters over
            epochs, ``avg <- d avg + (1 - d) params`` after every epoch (0: off, the parameters
            themselves). A long rule's late-session likelihood swings from epoch to epoch (see
            ``experiments/refit_diagnostic.py``); the average smooths what early stopping sees.
    """

    epochs: int = 300
    learning_rate: float | None = None
    tbptt: int = 500
    patience: int = 30
    lr_patience: int = 10
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "cpu"
    fit_w0: bool = True
    scale_lr_multiplier: float = 1.0
    lbfgs_rounds: int = 0
    lbfgs_iterations: int = 50
    fused: bool = True
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must lie in [0, 1)")
        if self.lbfgs_rounds < 0:
            raise ValueError("lbfgs_rounds must be >= 0")
        if self.lbfgs_iterations < 1:
            raise ValueError("lbfgs_iterations must be >= 1")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.tbptt < 2:
            raise ValueError("tbptt must be >= 2 trials")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError("learning_rate must be > 0")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a fit: mean log-likelihood per trial (nats) and time."""

    epoch: int
    train_ll: float
    val_ll: float
    seconds: float
    learning_rate: float
    phase: str = "adam"
    """``adam`` (truncated-BPTT epoch) or ``lbfgs`` (one full-batch L-BFGS round)."""


class ConvergenceIssue(enum.Enum):
    """How a fit may have failed to converge."""

    BEST_AT_CAP = "best_at_cap"
    """The kept epoch is the last one the epoch cap allowed: the fit was still improving."""
    STILL_IMPROVING = "still_improving"
    """The epoch cap stopped the fit less than ``patience`` epochs after its last improvement."""
    LBFGS_BEST_AT_CAP = "lbfgs_best_at_cap"
    """The kept L-BFGS round is the last one allowed: the refinement was still improving."""
    WORSE_THAN_CHANCE = "worse_than_chance"
    """The kept validation log-likelihood is below a coin flip's, ``-ln 2`` nats per trial."""
    EARLY_PEAK = "early_peak"
    """Patience ended the fit with its best epoch within the first ``patience`` epochs while the
    training likelihood rose by more than :data:`EARLY_PEAK_TRAIN_RISE` after it: the
    validation likelihood of a long rollout swings from epoch to epoch, and an early, lucky peak
    can end a fit that had far to go (``experiments/results/refit_diagnostic.md``: such fits
    lose 0.1 nats/trial on new animals; a longer patience avoids them)."""


EARLY_PEAK_TRAIN_RISE = 0.01
"""Nats per trial the training likelihood must rise after an early best epoch for
:attr:`ConvergenceIssue.EARLY_PEAK`."""


@dataclass(frozen=True)
class FitWarning:
    """A convergence warning of a fit.

    Attributes:
        issue: what went wrong.
        message: one line for people, naming the numbers and the option to change.
    """

    issue: ConvergenceIssue
    message: str


def convergence_warnings(history: tuple[EpochRecord, ...] | list[EpochRecord], best_epoch: int, best_val_ll: float, config: FitConfig) -> tuple[FitWarning, ...]:
    """The convergence warnings of a fit's record (see :class:`ConvergenceIssue`)."""
    out = []
    adam = [r for r in history if r.phase == "adam"]
    lbfgs = [r for r in history if r.phase == "lbfgs"]
    n_adam = len(adam)
    capped = n_adam >= config.epochs
    best_phase = next((r.phase for r in history if r.epoch == best_epoch), "adam")
    if capped and best_phase == "adam" and best_epoch == n_adam:
        out.append(FitWarning(ConvergenceIssue.BEST_AT_CAP, f"best epoch {best_epoch} is the epoch cap {config.epochs}: the fit was still improving (raise --epochs)"))
    elif capped and best_phase == "adam" and n_adam - best_epoch < config.patience:
        out.append(
            FitWarning(
                ConvergenceIssue.STILL_IMPROVING,
                f"the epoch cap {config.epochs} stopped the fit {n_adam - best_epoch} epoch(s) after its best ({best_epoch}), "
                f"before {config.patience} epochs without improvement (raise --epochs)",
            )
        )
    best_adam = next((r for r in adam if r.epoch == best_epoch), None)
    if not capped and best_adam is not None and best_epoch <= config.patience and adam[-1].train_ll - best_adam.train_ll > EARLY_PEAK_TRAIN_RISE:
        out.append(
            FitWarning(
                ConvergenceIssue.EARLY_PEAK,
                f"validation peaked at epoch {best_epoch} and the fit stopped at {n_adam} while the training LL rose "
                f"{adam[-1].train_ll - best_adam.train_ll:.3f} nats/trial after it: a noisy validation may have ended it early (raise --patience)",
            )
        )
    if lbfgs and best_phase == "lbfgs" and len(lbfgs) >= config.lbfgs_rounds and best_epoch == lbfgs[-1].epoch:
        out.append(FitWarning(ConvergenceIssue.LBFGS_BEST_AT_CAP, f"the best L-BFGS round is the last allowed ({config.lbfgs_rounds}): still improving (raise --lbfgs-rounds)"))
    if math.isfinite(best_val_ll) and best_val_ll < -math.log(2.0):
        out.append(FitWarning(ConvergenceIssue.WORSE_THAN_CHANCE, f"validation LL {best_val_ll:.4f} nats/trial is worse than a coin flip ({-math.log(2.0):.4f})"))
    elif not math.isfinite(best_val_ll):
        out.append(FitWarning(ConvergenceIssue.WORSE_THAN_CHANCE, f"validation LL is {best_val_ll}: no usable epoch"))
    return tuple(out)


@dataclass(frozen=True)
class FitResult:
    """A fitted model and how the fit went.

    Attributes:
        model: the model at the best epoch (on CPU, in eval mode).
        history: per-epoch records.
        best_epoch: epoch whose parameters were kept.
        best_val_ll: its validation log-likelihood per trial (nats).
        seconds: wall time of the whole fit.
        device: where it ran.
        trial_steps: rule steps taken forward+backward (animals × trials × epochs).
        warnings: convergence warnings (:func:`convergence_warnings`); empty when none.
    """

    model: LearnerModel
    history: tuple[EpochRecord, ...] = field(repr=False)
    best_epoch: int
    best_val_ll: float
    seconds: float
    device: str
    trial_steps: int
    warnings: tuple[FitWarning, ...] = ()

    @property
    def warning_messages(self) -> list[str]:
        """The warnings' messages (for a model file's metadata or a table)."""
        return [w.message for w in self.warnings]


class DeviceUnavailableError(TwinError, RuntimeError):
    """CUDA was asked for but is not available."""


def resolve_device(requested: str) -> torch.device:
    """Turn ``cpu``/``cuda``/``cuda:N``/``auto`` into a device, failing clearly if CUDA is missing."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {requested!r} requested but CUDA is not available on this machine")
    return torch.device(requested)


def _inputs(batch: TrialBatch) -> UpdateInputs:
    return UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)


def _slice(inp: UpdateInputs, a: int, b: int) -> UpdateInputs:
    return UpdateInputs(
        x=inp.x[:, a:b], y=inp.y[:, a:b], reward=inp.reward[:, a:b], answer=inp.answer[:, a:b], next_session_start=inp.next_session_start[:, a:b]
    )


@torch.no_grad()
def mean_log_likelihood(model: LearnerModel, batch: TrialBatch) -> float:
    """Mean log-likelihood per scored trial (nats)."""
    n = batch.mask.sum().item()
    if n == 0:
        return float("nan")
    return float(model.log_likelihood(batch).sum().item() / n)


def train_epoch(
    model: LearnerModel,
    opt: torch.optim.Optimizer,
    batch: TrialBatch,
    inp: UpdateInputs,
    tbptt: int,
    params: list[torch.nn.Parameter],
    grad_clip: float,
    w0: torch.Tensor | None = None,
    log_rate: torch.Tensor | None = None,
    fused: bool = True,
) -> tuple[float, int]:
    """One pass of truncated BPTT over the batch: one optimiser step per chunk.

    ``w0`` and ``log_rate`` (``[B, K]``) override the model's own, for per-animal fits;
    ``fused=False`` runs the rule's per-step reference loop instead of its fused rollout.

    Returns:
        ``(sum of log-likelihoods over scored trials, rule steps taken)``.
    """
    n_b, n_t = batch.n_animals, batch.n_trials
    total_ll, steps = 0.0, 0
    w, h = model.initial(n_b, w0)
    for a in range(0, n_t, tbptt):
        b = min(a + tbptt, n_t)
        m = batch.mask[:, a:b]
        pre = model.rule.precompute(_slice(inp, a, b))
        ws, h_next = model.rollout(w, h, pre, log_rate, fused)
        w_used = torch.cat([w.unsqueeze(0), ws[:-1]], 0).transpose(0, 1)
        ll = choice_log_likelihood(w_used, batch.x[:, a:b], batch.y[:, a:b]) * m
        n_m = m.sum()
        # a chunk can have no path to any trained parameter (e.g. only w0 is trained and the
        # carried weights were detached at the previous chunk): score it, take no step
        if n_m > 0 and not ll.requires_grad:
            total_ll += float(ll.sum().item())
        elif n_m > 0:
            loss = -ll.sum() / n_m
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            total_ll += float(ll.sum().item())
        # carry the state across chunks without gradient (truncated BPTT); a rule whose
        # weights never change restarts from w0 so that w0 keeps its gradient
        w, h = (ws[-1].detach(), h_next.detach()) if model.rule.learns else model.initial(n_b, w0)
        steps += n_b * (b - a)
    return total_ll, steps


@torch.no_grad()
def _average_into(averaged: LearnerModel, model: LearnerModel, decay: float) -> LearnerModel:
    """``averaged <- decay averaged + (1 - decay) model``, parameters and float buffers."""
    for a, m in zip(averaged.state_dict().values(), model.state_dict().values(), strict=True):
        if a.is_floating_point():
            a.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        else:
            a.copy_(m)
    return averaged


def lbfgs_round(model: LearnerModel, batch: TrialBatch, opt: torch.optim.LBFGS, fused: bool = True) -> tuple[float, int]:
    """One round of full-batch L-BFGS on the untruncated negative log-likelihood.

    The loss backpropagates through the whole ``[B, T]`` trajectory, so an update's effect on
    every later choice reaches its gradient (truncated BPTT drops what lies beyond its chunk).

    Returns:
        ``(mean log-likelihood per scored trial after the round, rule steps taken)``.
    """
    n = float(batch.mask.sum().item())
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        evals += 1
        opt.zero_grad(set_to_none=True)
        loss = -model.log_likelihood(batch, fused=fused).sum() / n
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        ll = float(model.log_likelihood(batch).sum().item()) / n
    return ll, evals * batch.n_animals * batch.n_trials


def fit(
    spec: ModelSpec,
    train: TrialBatch,
    val: TrialBatch | None = None,
    config: FitConfig = FitConfig(),
    init: LearnerModel | None = None,
    progress: bool = True,
    description: str | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Fit a model by maximum likelihood.

    Args:
        spec: model structure; its features must match the batches'.
        train: trials to fit (``mask`` selects the scored ones).
        val: trials for early stopping and checkpoint selection (the training data if None).
        config: optimisation settings.
        init: warm start from this model's parameters instead of a fresh initialisation.
        progress: show a progress bar.
        description: progress-bar label.
        on_epoch: called after every epoch with its record (e.g. to report to a scheduler that
            may stop the fit by raising).

    Returns:
        The best model and the fit's record.
    """
    if train.features != spec.features:
        raise ValueError(f"batch features {train.features} differ from the model's {spec.features}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = LearnerModel(spec) if init is None else copy.deepcopy(init)
    model = model.to(device).train()
    model.requires_grad_(True)
    model.w0.requires_grad_(config.fit_w0)
    model.log_rate.requires_grad_(False)  # redundant with the rule's own scale in a population fit
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    train_d = train.to(device)
    val_d = (val if val is not None else train).to(device)
    inp = _inputs(train_d)
    lr = config.learning_rate if config.learning_rate is not None else model.rule.default_learning_rate
    scales = [p for n, p in named if n.endswith("log_scale")]
    others = [p for n, p in named if not n.endswith("log_scale")]
    groups = [{"params": others, "lr": lr}] + ([{"params": scales, "lr": lr * config.scale_lr_multiplier}] if scales else [])
    opt = torch.optim.Adam(groups) if params else None
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=config.lr_patience) if opt else None
    best_ll, best_epoch, best_state = -math.inf, 0, copy.deepcopy(model.state_dict())
    history: list[EpochRecord] = []
    t_start = time.perf_counter()
    steps = 0
    averaged = copy.deepcopy(model) if config.ema_decay > 0 else None
    bar = progress_bar(range(1, config.epochs + 1), desc=description or f"fit {spec.rule}", disable=not progress, leave=False)
    for epoch in bar:
        checkpoint()  # a caller's deadline or cancellation stops the fit between epochs too
        t0 = time.perf_counter()
        total_ll = 0.0
        if opt is not None:
            total_ll, n_steps = train_epoch(model, opt, train_d, inp, config.tbptt, params, config.grad_clip, fused=config.fused)
            steps += n_steps
        scored = model if averaged is None else _average_into(averaged, model, config.ema_decay if epoch > 1 else 0.0)
        scored.eval()
        val_ll = mean_log_likelihood(scored, val_d)
        model.train()
        train_ll = total_ll / max(float(train_d.mask.sum().item()), 1.0)
        lr = opt.param_groups[0]["lr"] if opt else 0.0
        history.append(EpochRecord(epoch, train_ll, val_ll, time.perf_counter() - t0, lr))
        if val_ll > best_ll + 1e-6:
            best_ll, best_epoch, best_state = val_ll, epoch, copy.deepcopy(scored.state_dict())
        bar.set_postfix(train=f"{train_ll:.4f}", val=f"{val_ll:.4f}", best=best_epoch)
        if on_epoch is not None:
            on_epoch(history[-1])
        if sched is not None:
            sched.step(val_ll)
        if opt is None or epoch - best_epoch >= config.patience:
            break
    if params and config.lbfgs_rounds > 0:
        # refine the best Adam checkpoint with exact full-trajectory gradients, in float64: the
        # last gains are ~1e-7 of the loss, below float32's resolution of a sum over many trials
        model.load_state_dict(best_state)
        model.double()
        train_d, val_d = train_d.to_dtype(torch.float64), val_d.to_dtype(torch.float64)
        lbfgs = torch.optim.LBFGS(
            params, lr=1.0, max_iter=config.lbfgs_iterations, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=1e-9, tolerance_change=1e-12,
        )
        n_adam = len(history)
        for rnd in progress_bar(range(1, config.lbfgs_rounds + 1), desc=f"{description or spec.rule} (L-BFGS)", disable=not progress, leave=False):
            t0 = time.perf_counter()
            train_ll, n_steps = lbfgs_round(model, train_d, lbfgs, config.fused)
            steps += n_steps
            model.eval()
            val_ll = mean_log_likelihood(model, val_d)
            model.train()
            epoch = n_adam + rnd
            history.append(EpochRecord(epoch, train_ll, val_ll, time.perf_counter() - t0, 1.0, phase="lbfgs"))
            if on_epoch is not None:
                on_epoch(history[-1])
            if not math.isfinite(train_ll):
                break
            if val_ll > best_ll + 1e-6:
                best_ll, best_epoch, best_state = val_ll, epoch, copy.deepcopy(model.state_dict())
            elif epoch - max(best_epoch, n_adam) >= 2:
                break  # two L-BFGS rounds without a validation gain: the refinement has started to overfit
    model.float()
    model.load_state_dict(best_state)  # copies (and casts) into the float32 parameters
    model = model.cpu().eval()
    model.requires_grad_(False)
    return FitResult(
        model=model,
        history=tuple(history),
        best_epoch=best_epoch,
        best_val_ll=best_ll,
        seconds=time.perf_counter() - t_start,
        device=str(device),
        trial_steps=steps,
        warnings=convergence_warnings(history, best_epoch, best_ll, config),
    )
