"""Batch-1 rollout benchmark: one animal's 1,000-trial teacher-forced rollout through each
registered rule, three ways in one run (1 torch thread):

* ``torch``: the rule's own loop (:meth:`twin.models.rules.base.LearningRule.rollout`), the
  reference: the path a gradient needs;
* ``torch.compile``: the same loop with the rule's per-trial step compiled by ``torch.compile``
  (dnn and rnn only: compiling takes a while; ``--no-compile`` skips it);
* ``fused``: the numba kernel of :mod:`twin.models.batch1`, the path taken without a gradient.

Reports the median time per rollout and the speed-up over the torch loop, and checks the fused
weights against the torch loop's (max |Δw|). Writes ``bench/results/batch1_rollout.{json,md}``.

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; with --smoke, none unless given)")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 50 trials, 2 repeats, no torch.compile")
    args = ap.parse_args()
    out = args.out if args.out is not None or args.smoke else ROOT / "bench" / "results"
    if args.smoke:
        args.trials, args.repeats, args.no_compile = 50, 2, True
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    warm = batch1.warm_up()
    print(f"fused kernels ready in {warm.seconds:.1f} s")
    k = FeatureSpec().n_features
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, args.trials, k, generator=g)
    y = (torch.rand(1, args.trials, generator=g) < 0.5).float()
    ans = (torch.rand(1, args.trials, generator=g) < 0.5).float()
    ss = torch.zeros(1, args.trials)
    ss[0, :: max(args.trials // 3, 1)] = 1.0
    inp = UpdateInputs.from_trials(x, y, (y == ans).float(), ans, ss)
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
    if out is None:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    result = {"trials": args.trials, "repeats": args.repeats, "torch_threads": 1, "load_average_1min_at_start": load, "load_average_1min_at_end": os.getloadavg()[0], "rows": rows}
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
    ]
    (out / "batch1_rollout.md").write_text("\n".join(md))
    print(f"wrote {out / 'batch1_rollout.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
