"""Tabulate a reduced-size smoke run of the generative check on the new ground-truth families.

Not the issue's done-when experiment (30 fitting animals × 5,000 trials, ≥ 20 held out): a first
look, 8 animals × 3,000 trials per family (4 fitting, 4 held out), a few epochs, 20 rollouts.
Each check is one ``twin check`` run (written by it to ``OUT/<family>_<rule>/``, its printed
output saved as ``check.log`` there):

    twin check --family FAMILY --rule RULE --animals 8 --test 4 --trials 3000 --epochs 15 \\
        --patience 5 --rollouts 20 --cutoff 2 --seed 0 --quiet --out OUT/FAMILY_RULE \\
        > OUT/FAMILY_RULE/check.log

then ``python experiments/new_families_smoke.py OUT`` reads every ``check_summary.json`` and
``check.log`` below ``OUT`` and writes ``experiments/results/new_families_smoke.{md,csv}``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

COLUMNS = (
    ("scored_1a", "n"),
    ("obs_mean_trials_1a", "obs trials→1a"),
    ("pred_mean_trials_1a", "pred"),
    ("obs_frac_trained_1a", "obs trained"),
    ("pred_frac_trained_1a", "pred trained"),
    ("crps_1a", "CRPS 1a"),
    ("cov80_1a", "cov80 1a"),
    ("obs_mean_easy_accuracy", "obs easy acc"),
    ("pred_mean_easy_accuracy", "pred easy acc"),
    ("cov80_easy_accuracy", "cov80 easy acc"),
    ("crps_easy_accuracy", "CRPS easy acc"),
    ("cov80_bias", "cov80 bias"),
)
FIT_LINE = re.compile(r"fitted (\S+) on (\d+) animals \(best epoch (\d+)/(\d+), validation LL (-?[\d.]+)\)")


def read_run(folder: Path) -> tuple[list[dict[str, object]], dict[str, object]]:
    """The check rows of one ``twin check`` output folder, and its fit's line."""
    summary = json.loads((folder / "check_summary.json").read_text())
    log = (folder / "check.log").read_text()
    m = FIT_LINE.search(log)
    warnings = [line[len("warning: ") :] for line in log.splitlines() if line.startswith("warning: ")]
    fit = {"run": folder.name, "rule": m.group(1), "fitting animals": int(m.group(2)), "best epoch": f"{m.group(3)}/{m.group(4)}", "val LL": float(m.group(5)), "warnings": "; ".join(warnings) or "none"} if m else {"run": folder.name}
    rows = [{"check": label, **{name: s.get(key, float("nan")) for key, name in COLUMNS}} for label, s in summary.items()]
    return rows, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="folder holding one <family>_<rule> folder per twin check")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/new_families_smoke"))
    args = ap.parse_args()
    rows, fits = [], []
    for folder in sorted(p.parent for p in args.runs.glob("*/check_summary.json")):
        r, f = read_run(folder)
        rows += r
        fits.append(f)
    table = pd.DataFrame(rows).drop_duplicates("check")  # each family's truth row appears once per rule
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    lines = [
        "# Generative check on the new families: REDUCED-SIZE SMOKE RUN",
        "",
        "**Not the issue-16 done-when experiment** (30 fitting animals × 5,000 trials, ≥ 20 held out, bootstrap",
        "intervals). A first look at 8 animals × 3,000 trials per family (4 fitting, 4 held out), 15 epochs at most,",
        "20 rollouts per animal, cut-off 2 sessions for the `-future` rows; with 4 held-out animals a coverage moves",
        "in steps of 0.25 and nothing here is a measured property of the rules. Families and their parameters:",
        "`twin/sim/agents.py`, `experiments/results/family_parameters.md`.",
        "",
        "Commands (one per family × rule, FAMILY in perseveration plateau forgetting, RULE in reinforce dnn;",
        "1.5–3 min each on the shared 2-core machine, 1 thread):",
        "",
        "    twin check --family FAMILY --rule RULE --animals 8 --test 4 --trials 3000 --epochs 15 \\",
        "        --patience 5 --rollouts 20 --cutoff 2 --seed 0 --quiet --out OUT/FAMILY_RULE > OUT/FAMILY_RULE/check.log",
        "    python experiments/new_families_smoke.py OUT",
        "",
        "## Fits",
        "",
        pd.DataFrame(fits).to_markdown(index=False, floatfmt=".4f"),
        "",
        "## Checks",
        "",
        "Rows as in `generative_check.md`: `<family>/<rule>` the population twin from scratch, `<family>/truth` the",
        "oracle, `-future` from each animal's 3rd session on, `-map-future` with its start inferred from its first 2.",
        "Trials to `trained_1a` of never-trained animals count as their last trial (censored at 3,000).",
        "",
        table.to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
