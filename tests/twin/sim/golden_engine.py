"""Golden outputs of the simulation engine on fixed seeds: the cases, and (run as a script) the
fixture ``data/engine_golden.safetensors`` they were produced into.

The fixture was written by the engine at commit 4d0546c (the torch-op loop before the
preallocated, kernel-backed engine); ``test_engine_golden.py`` checks that today's engine gives
the same tensors exactly (``torch.equal``). Regenerate only on purpose:

    PYTHONPATH=. .venv/bin/python tests/twin/sim/golden_engine.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from twin.data.features import FeatureSpec
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import make_config
from twin.protocol import IBL_DEFAULT, AdvanceKind, AdvanceRule, Curriculum, DebiasSide, FeedbackPolicy, StimulusSchedule, ZeroContrastSide
from twin.sim.simulate import run_task
from twin.sim.task import TaskEnv, session_schedule
from twin.sim.training import SessionPlan, simulate_training

FIXTURE = Path(__file__).parent / "data" / "engine_golden.safetensors"
RULES = ("static", "dnn", "rnn", "reinforce")


def protocols() -> list[Curriculum]:
    """Four protocols in one batch: the IBL default, quick advancement with biased blocks and
    repeat debiasing, a trial-count ladder with random zero sides and against-bias debiasing in
    blocks, and one phase without debiasing."""
    fast = Curriculum(
        name="fast",
        stimulus=StimulusSchedule(
            phases=((1.0, 0.5), (1.0, 0.5, 0.25), (1.0, 0.5, 0.25, 0.125, 0.0)),
            proportions=((1, 1), (1, 1, 2), (1, 1, 1, 1, 0.5)),
            advance=(AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=8, threshold=0.6), AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(0.25,), window=12, threshold=0.55)),
            zero_contrast_side=ZeroContrastSide.LEFT,
        ),
        feedback=FeedbackPolicy(debias_side=DebiasSide.REPEAT, biased_blocks=True, unbiased_trials=20, block_length=(5, 30), block_mean=12.0),
        session_trials=(40, 90),
    )
    ladder = Curriculum(
        name="ladder",
        stimulus=StimulusSchedule(
            phases=((1.0,), (1.0, 0.25), (0.5, 0.25, 0.0625, 0.0)),
            proportions=None,
            advance=(AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=25), AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.25), window=5, threshold=0.5)),
            zero_contrast_side=ZeroContrastSide.RANDOM,
        ),
        feedback=FeedbackPolicy(debias_side=DebiasSide.AGAINST_BIAS, debias_min_contrast=0.25, biased_blocks=True, unbiased_trials=10, block_length=(3, 15), block_mean=6.0),
        session_trials=(30, 70),
    )
    flat = Curriculum(name="flat", stimulus=StimulusSchedule.single((1.0, 0.25, 0.0), (2, 1, 1)), feedback=FeedbackPolicy(debias=False), session_trials=(50, 50))
    ibl = dataclasses.replace(IBL_DEFAULT, session_trials=(60, 110))
    return [ibl, fast, ladder, flat]


def model(rule: str, history: bool = False) -> LearnerModel:
    """A seeded model that learns noticeably within a few hundred trials."""
    torch.manual_seed(7)
    opts = {"scale_init": 0.05} if rule in ("dnn", "rnn") else {}
    spec = ModelSpec(rule, FeatureSpec(history=history), make_config(rule, **opts))
    m = LearnerModel(spec).eval()
    with torch.no_grad():
        m.w0.copy_(torch.linspace(0.5, -0.2, m.n_weights))
    return m


def cases() -> dict[str, torch.Tensor]:
    """Every golden tensor, by name."""
    out: dict[str, torch.Tensor] = {}
    protos = protocols()
    rows = [p for p in protos for _ in range(6)]  # 24 rows, several protocols in one batch
    b = len(rows)
    for rule in RULES:
        for history in (False, True):
            m = model(rule, history)
            k = m.n_weights
            g = torch.Generator().manual_seed(3)
            w0 = m.w0.detach() + 0.8 * torch.rand(b, k, generator=g) * torch.tensor([3.0] + [0.5] * (k - 1))
            log_rate = None if not history else 0.3 * torch.randn(b, k, generator=g)
            start = torch.tensor([0, 1] * (b // 2)) * torch.tensor([1 if len(p.stimulus.phases) > 1 else 0 for p in rows])
            run = simulate_training(m, rows, 6, seed=11, w0=w0, log_rate=log_rate, start_phase=start, stop_when_trained=history)
            tag = f"{rule}_h{int(history)}"
            for name in ("trials_to_criterion", "criterion_session", "reached", "end_phase", "w_min", "w_max", "sessions_to_criterion"):
                out[f"training/{tag}/{name}"] = getattr(run, name)
            out[f"training/{tag}/n"] = run.stats.n
            out[f"training/{tag}/n_right"] = run.stats.n_right
            # given session lengths and per-session protocols (the replay path)
            lengths = torch.tensor([[30, 45, 20], [25, 0, 0], [40, 35, 0]] * (b // 3))
            plan = SessionPlan(lengths, tuple(tuple(protos[(i + s) % 4] for i in range(b)) for s in range(3)))
            run = simulate_training(m, rows, 3, seed=5, w0=w0, plan=plan, stop_when_trained=False)
            out[f"plan/{tag}/n"], out[f"plan/{tag}/n_right"] = run.stats.n, run.stats.n_right
            out[f"plan/{tag}/w_max"], out[f"plan/{tag}/end_phase"] = run.w_max, run.end_phase
            # the trial-by-trial table (run_task)
            starts = torch.from_numpy(session_schedule(b, 120, protos[1], np.random.default_rng(2)))
            gen = torch.Generator().manual_seed(9)
            env = TaskEnv(rows, b, gen)
            w, h = m.initial(b, w0)
            roll = run_task(m, env, starts, gen, w, h, log_rate=log_rate, break_after=True)
            for name in ("contrast_left", "contrast_right", "answer", "prob_left", "choice", "reward", "p_right", "phase", "final_w", "final_h"):
                v = getattr(roll, name)
                out[f"task/{tag}/{name}"] = v.contiguous()
    return {k: v.contiguous() for k, v in out.items()}


if __name__ == "__main__":
    from safetensors.torch import save_file

    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    save_file(cases(), str(FIXTURE))
    print(f"wrote {FIXTURE}")
