"""Batch-1 rollout benchmark: one animal's 1,000-trial teacher-forced rollout through each
registered rule, three ways in one run (1 torch thread):

* ``torch``: the rule's own loop (:meth:`twin.models.rules.base.LearningRule.rollout`), the
  reference: the path a gradient needs;
* ``torch.compile``: the same loop with the rule's per-trial step compiled by ``torch.compile``
  (dnn and rnn only: compiling takes a while; ``--no-compile`` skips it);
* ``fused``: the numba kernel of :mod:`twin.models.batch1`, the path taken without a gradient.

Reports the median time per rollout and the speed-up over the torch loop, and checks the fused
weights against the torch loop's (max |Δw|).

Then the batch sweep: a no-grad rollout of ``--batch-trials`` trials for batches of animals
(``--batches``) through each kernel and through the torch loop, interleaved, CPU seconds (best of
3 each): the kernel's time grows with the batch and the torch loop's hardly does, and the table
shows where each rule's shipped limit (``twin.models.batch1.FUSED_BATCH_LIMITS``) sits against the
measured crossover. Writes ``bench/results/batch1_rollout.{json,md}``.

    python bench/batch1_rollout.py            # ~1-2 min
    python bench/batch1_rollout.py --smoke    # a few seconds, no torch.compile, nothing written
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.data.features import FeatureSpec  # noqa: E402
from twin.models import batch1  # noqa: E402
from twin.models.learner import LearnerModel, ModelSpec  # noqa: E402
from twin.models.rules import UpdateInputs, rule_names  # noqa: E402

COMPILED_RULES = ("dnn", "rnn")


def _median_ms(f: Callable[[], object], repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _compiled_rollout(rule, w, h, pre):  # type: ignore[no-untyped-def]
    """The torch loop with ``torch.compile``'d steps."""
    step = torch.compile(rule.step, dynamic=False, fullgraph=True)
    ctx = rule.context()

    def run() -> torch.Tensor:
        ww, hh, out = w, h, []
        for pre_t in pre.unbind(0):
            ww, hh = step(ww, hh, pre_t, ctx)
            out.append(ww)
        return torch.stack(out)

    return run


def _random_trials(b: int, trials: int, k: int, seed: int, sessions: int) -> UpdateInputs:
    """``b`` animals' random trials (features, choices, rewarded sides) in ``sessions`` sessions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, trials, k, generator=g)
    y = (torch.rand(b, trials, generator=g) < 0.5).float()
    ans = (torch.rand(b, trials, generator=g) < 0.5).float()
    ss = torch.zeros(b, trials)
    ss[:, :: max(trials // sessions, 1)] = 1.0
    return UpdateInputs.from_trials(x, y, (y == ans).float(), ans, ss)


def batch_sweep(batches: list[int], trials: int) -> list[dict[str, object]]:
    """Kernel vs torch loop for no-grad rollouts of ``trials`` trials at each batch size, every
    rule with a kernel that learns: CPU seconds, best of 3 interleaved runs of each."""
    rows: list[dict[str, object]] = []
    for name in rule_names():
        torch.manual_seed(0)
        m = LearnerModel(ModelSpec(name)).eval().requires_grad_(False)
        if not batch1.supports(m.rule) or not m.rule.learns:
            continue
        k = m.n_weights
        for b in batches:
            with torch.no_grad():
                pre = m.rule.precompute(_random_trials(b, trials, k, seed=b, sessions=4))
                w, h = m.initial(b)
                rate = torch.full((b, k), 1.1)
                times: dict[str, list[float]] = {"torch": [], "kernel": []}
                outs = {}
                for _ in range(3):
                    for path in ("torch", "kernel"):
                        c0 = time.process_time()
                        outs[path] = (m.rule.rollout(w, h, pre, rate) if path == "torch" else batch1.rollout(m.rule, w, h, pre, rate))[0]
                        times[path].append(time.process_time() - c0)
            row = {
                "rule": name, "batch": b, "torch_s": min(times["torch"]), "kernel_s": min(times["kernel"]),
                "limit": batch1.max_fused_batch(m.rule), "max_abs_dw": float((outs["torch"] - outs["kernel"]).abs().max()),
            }
            row["speedup"] = row["torch_s"] / max(row["kernel_s"], 1e-9)  # type: ignore[operator]
            rows.append(row)
            print(f"batch sweep: rule={name} batch={b} torch_s={row['torch_s']:.4f} kernel_s={row['kernel_s']:.4f} speedup={row['speedup']:.2f} limit={row['limit']}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 50 trials, 2 repeats, no torch.compile")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32, 64, 128, 256, 512], help="batch sizes of the batch sweep")
    ap.add_argument("--batch-trials", type=int, default=2000, help="trials per rollout in the batch sweep")
    args = ap.parse_args()
    out = args.out if args.out is not None or args.smoke else ROOT / "bench" / "results"
    if args.smoke:
        args.trials, args.repeats, args.no_compile = 50, 2, True
        args.batches, args.batch_trials = [1, 4], 50
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    warm = batch1.warm_up()
    print(f"fused kernels ready in {warm.seconds:.1f} s")
    k = FeatureSpec().n_features
    inp = _random_trials(1, args.trials, k, seed=0, sessions=3)
    rows = []
    for name in rule_names():
        torch.manual_seed(0)
        m = LearnerModel(ModelSpec(name)).eval()
        if not batch1.supports(m.rule):
            print(f"rule={name}: no fused kernel (the torch loop serves it)")
            continue
        with torch.no_grad():
            pre = m.rule.precompute(inp)
            w, h = m.initial(1)
            ref, _ = m.rule.rollout(w, h, pre)
            got, _ = batch1.rollout(m.rule, w, h, pre)
            row = {
                "rule": name,
                "torch_ms": _median_ms(lambda: m.rule.rollout(w, h, pre), args.repeats),
                "fused_ms": _median_ms(lambda: batch1.rollout(m.rule, w, h, pre), args.repeats),
                "max_abs_dw_vs_torch": float((got - ref).abs().max()) if ref.numel() else 0.0,
            }
            if not args.no_compile and name in COMPILED_RULES:
                t0 = time.perf_counter()
                run = _compiled_rollout(m.rule, w, h, pre)
                run()
                row["compile_s"] = time.perf_counter() - t0
                row["torch_compile_ms"] = _median_ms(run, args.repeats)
        row["fused_speedup"] = row["torch_ms"] / row["fused_ms"]
        if "torch_compile_ms" in row:
            row["torch_compile_speedup"] = row["torch_ms"] / row["torch_compile_ms"]
        rows.append(row)
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    sweep = batch_sweep(args.batches, args.batch_trials)
    if out is None:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "trials": args.trials, "repeats": args.repeats, "torch_threads": 1, "load_average_1min_at_start": load,
        "load_average_1min_at_end": os.getloadavg()[0], "rows": rows, "batch_trials": args.batch_trials, "batch_sweep": sweep,
    }
    (out / "batch1_rollout.json").write_text(json.dumps(result, indent=1) + "\n")

    def cell(r: dict, key: str, fmt: str = ".3f") -> str:  # type: ignore[type-arg]
        return format(r[key], fmt) if key in r else "-"

    md = [
        f"# Batch-1 rollout: {args.trials} trials, one animal",
        "",
        f"`python bench/batch1_rollout.py` (1 torch thread, {os.cpu_count()} CPUs shared, load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); "
        "median of the repeats, ratios against the torch loop in the same run.",
        "",
        "| rule | torch loop ms | torch.compile ms | fused (numba) ms | fused speed-up | torch.compile speed-up | max abs Δw fused vs torch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {r['rule']} | {r['torch_ms']:.2f} | {cell(r, 'torch_compile_ms', '.2f')} | {r['fused_ms']:.3f} | {r['fused_speedup']:.1f}x | {cell(r, 'torch_compile_speedup', '.1f')} | {r['max_abs_dw_vs_torch']:.1e} |"
            for r in rows
        ],
        "",
        f"## Batches: no-grad rollouts of {args.batch_trials} trials, kernel vs torch loop",
        "",
        "CPU seconds per rollout (best of 3, interleaved); `kernel / torch` > 1 means the kernel is faster. "
        "`limit`: the largest batch the shipped `FUSED_BATCH_LIMITS` sends to the kernel.",
        "",
        "| rule | batch | torch s | kernel s | torch / kernel | limit | path shipped | max abs Δw |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        *[
            f"| {r['rule']} | {r['batch']} | {r['torch_s']:.4f} | {r['kernel_s']:.4f} | {r['speedup']:.2f}x | {r['limit']} | {'kernel' if r['batch'] <= r['limit'] else 'torch'} | {r['max_abs_dw']:.1e} |"
            for r in sweep
        ],
        "",
    ]
    (out / "batch1_rollout.md").write_text("\n".join(md))
    print(f"wrote {out / 'batch1_rollout.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
