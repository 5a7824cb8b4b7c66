"""Simulation-throughput benchmark: simulated trials per CPU-second through twins, as the optimizer
runs them (``twin.sim.training.simulate_training``: the iblrig task environment with per-phase
advancement, debiasing and proportions, choices sampled from the policy, the twin's rule
updating the weights, per-session counts for the training criterion), against references
measured in the same run:

* **engine**: today's engine (``simulate_training``, compiled environment kernels);
* **before**: the engine at commit ``4d0546c`` (before the kernels), the same call run in a
  subprocess on a ``git archive`` of that commit (skipped when git or the commit is missing);
* **naive eager**: a plain torch loop in this file doing the same per-trial work (inverse-CDF
  stimulus draw from the phase's contrasts and proportions, per-signed-contrast performance
  windows and the advancement check, repeat-on-error debiasing, the policy, the choice, the
  rule's MLP / GRU step through its ``nn`` layers, per-bin counts), written as one would write it;
* **compiled**: the same reference step under ``torch.compile`` (inductor; skipped with
  ``--no-compile`` and in ``--smoke``).

Rules: a DNN twin and an RNN twin (hidden size 32), and ``static`` (no learning: the cost of the
environment and the bookkeeping alone). Each figure is trials per CPU-second
(``time.process_time``, 1 torch thread by default) of one session of ``T`` trials for ``R``
rollouts, the fastest of 3 timed runs after a warm-up run; wall-clock figures are kept too. Ratios are engine / reference.

Prints a table and writes ``bench/results/sim_throughput.{json,md}``. Run from the repo root:

    .venv/bin/python bench/sim_throughput.py            # ~5-10 min on a shared 2-core machine
    .venv/bin/python bench/sim_throughput.py --smoke    # a few seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from twin.data.features import contrast_transform
from twin.models.learner import LearnerModel, ModelSpec
from twin.protocol import IBL_DEFAULT, AdvanceKind, Curriculum
from twin.sim.training import simulate_training

BEFORE_COMMIT = "4d0546c"
ROOT = Path(__file__).resolve().parents[1]
RULES = ("static", "dnn", "rnn")


REPEATS = 3
"""Timed runs of each case after its warm-up; the fastest counts (the machine is shared)."""


def _timed(fn, repeats: int = REPEATS):  # type: ignore[no-untyped-def]
    """``(cpu_s, wall_s)`` of the fastest (by CPU time) of ``repeats`` calls of ``fn()``."""
    runs = []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        runs.append((time.process_time() - c0, time.perf_counter() - t0))
    return min(runs)


def _model(rule: str) -> LearnerModel:
    torch.manual_seed(0)
    return LearnerModel(ModelSpec(rule)).eval()


def engine(rule: str, rollouts: int, trials: int, repeats: int) -> tuple[float, float]:
    """CPU and wall seconds of ``simulate_training`` for one session of ``trials`` trials."""
    model = _model(rule)
    proto = Curriculum(session_trials=(trials, trials))
    simulate_training(model, [proto] * min(rollouts, 1000), 1, seed=0, stop_when_trained=False)  # warm-up (compiles the kernels)
    return _timed(lambda: simulate_training(model, [proto] * rollouts, 1, seed=1, stop_when_trained=False), repeats)


_CHILD = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from twin.models.learner import LearnerModel, ModelSpec
from twin.protocol import Curriculum
from twin.sim.training import simulate_training
rule, rollouts, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = LearnerModel(ModelSpec(rule)).eval()
proto = Curriculum(session_trials=(trials, trials))
simulate_training(model, [proto] * min(rollouts, 1000), 1, seed=0, stop_when_trained=False)
runs = []
for _ in range(int(sys.argv[5])):
    c0, t0 = time.process_time(), time.perf_counter()
    simulate_training(model, [proto] * rollouts, 1, seed=1, stop_when_trained=False)
    runs.append([time.process_time() - c0, time.perf_counter() - t0])
import twin.sim.task as task
assert not hasattr(task, "task_kernels"), "not the engine before the kernels"
print(json.dumps(min(runs)))
"""


def before_tree(folder: Path) -> Path | None:
    """The ``twin`` package of :data:`BEFORE_COMMIT` extracted under ``folder`` (None: no git)."""
    try:
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_COMMIT, "twin"], capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    tar = folder / "before.tar"
    tar.write_bytes(blob)
    with tarfile.open(tar) as tf:
        tf.extractall(folder, filter="data")
    return folder


def before(tree: Path, rule: str, rollouts: int, trials: int, threads: int, repeats: int) -> tuple[float, float]:
    """CPU and wall seconds of the same call in the engine of :data:`BEFORE_COMMIT`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", _CHILD, rule, str(rollouts), str(trials), str(threads), str(repeats)], env=env, capture_output=True, text=True, check=True, cwd=tree)
    cpu, wall = json.loads(out.stdout.strip().splitlines()[-1])
    return float(cpu), float(wall)


# -- the naive reference: the same per-trial work, written plainly in torch -----------------------


class Reference:
    """The IBL default's mechanics for ``B`` rows in plain torch (one session, all rows in step):
    phases with contrast proportions, per-signed-contrast windows of the last 50 outcomes and the
    performance / trial-count advancement, repeat-on-error debiasing after easy errors, the
    policy and choice, the rule's step through the model's own layers, per-bin counts."""

    def __init__(self, model: LearnerModel, b: int) -> None:
        p = IBL_DEFAULT.stimulus
        self.model, self.b = model, b
        n_ph, width = len(p.phases), max(len(ph) for ph in p.phases)
        self.levels = torch.tensor(sorted({c for ph in p.phases for c in ph}))  # [L] every contrast
        n_lv = len(self.levels)
        self.table = torch.zeros(n_ph, width)
        self.cum = torch.ones(n_ph, width)
        self.level = torch.zeros(n_ph, width, dtype=torch.long)
        self.count = torch.ones(n_ph, dtype=torch.long)
        self.needs = torch.zeros(n_ph, 2 * n_lv, dtype=torch.bool)
        self.is_perf = torch.zeros(n_ph, dtype=torch.bool)
        self.trials = torch.full((n_ph,), 10**9)
        for i, ph in enumerate(p.phases):
            wts = torch.tensor(p.weights(i))
            self.table[i, : len(ph)] = torch.tensor(ph)
            self.cum[i, : len(ph)] = wts.cumsum(0) / wts.sum()
            self.level[i, : len(ph)] = torch.tensor([int((self.levels - c).abs().argmin()) for c in ph])
            self.count[i] = len(ph)
        for i, r in enumerate(p.advance):
            self.is_perf[i] = r.kind is AdvanceKind.PERFORMANCE
            if r.kind is AdvanceKind.TRIAL_COUNT:
                self.trials[i] = r.trials
            for c in r.contrasts if self.is_perf[i] else ():
                lv = int((self.levels - c).abs().argmin())
                self.needs[i, 2 * lv : 2 * lv + 2] = True
        self.window = 50
        k = model.n_weights
        self.w = model.w0.detach().expand(b, -1).clone()
        self.h = torch.zeros(b, model.rule.state_size)
        self.phase = torch.zeros(b, dtype=torch.long)
        self.in_phase = torch.zeros(b)
        self.buf = torch.zeros(b, 2 * n_lv, self.window)  # ring buffers of the last outcomes per level and side
        self.filled = torch.zeros(b, 2 * n_lv, dtype=torch.long)
        self.perf = torch.zeros(b, 2 * n_lv)  # correct among them, kept trial by trial
        self.pending = torch.zeros(b, dtype=torch.bool)
        self.last_c = torch.zeros(b)
        self.last_side = torch.zeros(b)
        self.last_lv = torch.zeros(b, dtype=torch.long)
        self.n = torch.zeros(b, 2 * n_lv)
        self.n_right = torch.zeros(b, 2 * n_lv)
        self.rows = torch.arange(b)
        self.k = k

    def state(self) -> list[torch.Tensor]:
        return [self.w, self.h, self.phase, self.in_phase, self.buf, self.filled, self.perf, self.pending, self.last_c, self.last_side, self.last_lv, self.n, self.n_right]

    def step(self, st: list[torch.Tensor], u: torch.Tensor) -> list[torch.Tensor]:
        """One trial of every row; ``u`` ``[B, 3]`` uniforms (contrast, side, choice)."""
        w, h, phase, in_phase, buf, filled, perf, pending, last_c, last_side, last_lv, n, n_right = st
        rows = self.rows
        # advancement, before the draw: correct among the last 50 per level and side
        ok = ((perf > 0.8 * self.window) | ~self.needs[phase]).all(1)
        go = (self.is_perf[phase] & ok) | (in_phase >= self.trials[phase])
        phase = phase + go.long()
        in_phase = torch.where(go, torch.zeros_like(in_phase), in_phase + 1)
        # stimulus: inverse CDF of the phase's proportions, the side, the debiasing repeat
        idx = torch.minimum((u[:, :1] >= self.cum[phase]).sum(1), self.count[phase] - 1)
        c = self.table[phase, idx]
        lv = self.level[phase, idx]
        side = (u[:, 1] >= 0.5).float()
        rep = pending & (phase < 5)
        c = torch.where(rep, last_c, c)
        lv = torch.where(rep, last_lv, lv)
        side = torch.where(rep, last_side, side)
        side = torch.where(c == 0, torch.zeros_like(side), side)
        # policy and choice
        x = torch.stack([contrast_transform(c) * (2 * side - 1), torch.ones_like(c)], 1)
        p = torch.sigmoid((w * x).sum(1))
        y = (u[:, 2] < p).float()
        r = (y == side).float()
        # outcome: performance windows, debiasing, counts
        cell = 2 * lv + side.long()
        done = filled[rows, cell]
        slot = done % self.window
        leaving = buf[rows, cell, slot] * (done >= self.window)
        buf.index_put_((rows, cell, slot), r)  # in place: the state is not copied each trial
        filled.index_put_((rows, cell), done + 1)
        perf.index_put_((rows, cell), r - leaving, accumulate=True)
        pending = (r == 0) & (c >= 0.5)
        n.index_put_((rows, cell), torch.ones_like(r), accumulate=True)
        n_right.index_put_((rows, cell), y, accumulate=True)
        # the rule's step
        inp = torch.cat([w, x, (2 * y - 1)[:, None], (2 * r - 1)[:, None], (2 * side - 1)[:, None], torch.zeros_like(y)[:, None]], 1)
        rule = self.model.rule
        name = self.model.spec.rule
        if name == "dnn":
            dw = rule.fc3(torch.relu(rule.fc2(torch.relu(rule.fc1(inp))))) * rule.log_scale.exp()
            w = w + dw
        elif name == "rnn":
            h = rule.gru(inp, h)
            w = w + rule.head2(torch.relu(rule.head1(h))) * rule.log_scale.exp()
        return [w, h, phase, in_phase, buf, filled, perf, pending, c, side, lv, n, n_right]


def reference(rule: str, rollouts: int, trials: int, compiled: bool, repeats: int) -> tuple[float, float]:
    """CPU and wall seconds of the reference loop (``compiled``: its step under ``torch.compile``)."""
    model = _model(rule)
    g = torch.Generator().manual_seed(1)

    def run(b: int, step) -> None:  # type: ignore[no-untyped-def]
        ref = Reference(model, b)
        st = ref.state()
        with torch.no_grad():
            for _ in range(trials):
                st = step(st, torch.rand(b, 3, generator=g))

    ref0 = Reference(model, rollouts)
    step = ref0.step
    if compiled:
        step = torch.compile(ref0.step, dynamic=False, fullgraph=True)
    run(rollouts, step)  # warm-up (and the compilation)
    return _timed(lambda: run(rollouts, step), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: more threads on a shared machine ran several times slower)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 200 rollouts of 20 trials, no compiled reference, no subprocess")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference")
    ap.add_argument("--no-before", action="store_true", help=f"skip the engine of {BEFORE_COMMIT}")
    ap.add_argument("--repeats", type=int, default=None, help=f"timed runs per case, the fastest counts (default {REPEATS}; 1 with --smoke)")
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.smoke else REPEATS)
    out = args.out if args.out is not None or args.smoke else Path("bench/results")
    torch.set_num_threads(args.threads)
    sizes = ((200, 20),) if args.smoke else ((1000, 200), (10_000, 200))
    tmp = tempfile.TemporaryDirectory()
    tree = None if args.smoke or args.no_before else before_tree(Path(tmp.name))
    rows = []
    for rollouts, trials in sizes:
        for rule in RULES:
            row: dict[str, object] = {"rule": rule, "rollouts": rollouts, "trials": trials}
            n = args.repeats
            cases = {"engine": lambda: engine(rule, rollouts, trials, n), "naive eager": lambda: reference(rule, rollouts, trials, False, n)}
            if not (args.smoke or args.no_compile):
                cases["compiled"] = lambda: reference(rule, rollouts, trials, True, n)
            if tree is not None:
                cases["before"] = lambda: before(tree, rule, rollouts, trials, args.threads, n)
            for name, fn in cases.items():
                cpu, wall = fn()
                row[f"{name} trials/cpu-s"] = rollouts * trials / cpu
                row[f"{name} trials/wall-s"] = rollouts * trials / wall
            for name in cases:
                if name != "engine":
                    row[f"engine / {name}"] = row["engine trials/cpu-s"] / row[f"{name} trials/cpu-s"]  # type: ignore[operator]
            rows.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    tmp.cleanup()
    table = pd.DataFrame(rows)
    top = table[table["rollouts"] == sizes[-1][0]].set_index("rule")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    for rule in RULES:
        print(f"{rule} at {sizes[-1][0]:,} rollouts: {top.loc[rule, 'engine trials/cpu-s']:,.0f} simulated trials/s per CPU-second", flush=True)
    result = {
        "machine": f"{platform.machine()} {platform.processor()} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)",
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "before_commit": BEFORE_COMMIT if tree is not None else None,
        "rows": table.to_dict(orient="records"),
    }
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "sim_throughput.json").write_text(json.dumps(result, indent=2))
    ratio_cols = [c for c in table.columns if c.startswith("engine / ")]
    cpu_cols = [c for c in table.columns if c.endswith("trials/cpu-s")]
    md = [
        "# Simulation throughput through twins",
        "",
        f"Command: `.venv/bin/python bench/sim_throughput.py --threads {args.threads}` ({result['machine']}, torch {result['torch']}).",
        "One session of `trials` trials for `rollouts` rows, IBL default mechanics; simulated trials per CPU-second "
        f"(`time.process_time`, the fastest of {args.repeats} timed runs after a warm-up); ratios are the engine's over each reference's, all measured in this run. "
        f"`before`: the engine at commit {BEFORE_COMMIT}; `naive eager` / `compiled`: the plain-torch reference loop of "
        "the same per-trial work, eager and under `torch.compile`.",
        "",
        table[["rule", "rollouts", "trials", *ratio_cols]].to_markdown(index=False, floatfmt=".2f"),
        "",
        table[["rule", "rollouts", *cpu_cols]].to_markdown(index=False, floatfmt=",.0f"),
        "",
    ]
    (out / "sim_throughput.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
