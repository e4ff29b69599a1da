"""The downstream learning rate, checked on val: notebook 05's training-budget curve at
several peak learning rates.

For each learning rate, trains InfoDist (CE) exactly as notebook 05's budget check does
(`budget.jobs`: runs 0.. of the main table, the same selections and seeds) at each step
budget, through the cache (so the preset's own curve is read back, not retrained), and
reports per learning rate and budget the mean final val accuracy over the runs, with the
budget the rule (`budget.choose`) picks. Val only: the models' test scores, written by the
model stage, are not read here.

    python bench/downstream_lr.py --lrs 0.03 0.05 0.1 --budgets 150 300 600 1200
    python bench/downstream_lr.py --lrs 0.03 --budgets 150 300 600 1200 2400

Needs the profile's notebooks 01-04 run first (`./run_all.sh --profile demo --only 0[1-4]`).
Writes bench/results/downstream_lr.csv (one row per learning rate and budget).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from histodistill import machine, presets, run_record
from histodistill.evaluate import budget, evaluation

RESULTS = Path(__file__).resolve().parent / "results" / "downstream_lr.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--run-name", default=None, help="the run whose notebooks 01-04 to use (default: the profile)")
    ap.add_argument("--lrs", type=float, nargs="+", required=True, help="peak SGD learning rates")
    ap.add_argument("--budgets", type=int, nargs="+", required=True, help="step budgets (ascending)")
    ap.add_argument("--runs", type=int, default=None, help="runs per budget (default: the preset's budget_seeds)")
    args = ap.parse_args()
    machine.configure_torch()
    up = run_record.load(args.run_name or args.profile, args.profile)
    ev = presets.stage_config("evaluation", args.profile, budget_steps=tuple(args.budgets), budget_seeds=args.runs)
    rows = []
    for lr in args.lrs:
        down = presets.stage_config("downstream", args.profile, lr=lr)
        started = time.perf_counter()
        trained = evaluation.run_jobs(budget.jobs(up, down, ev), up.bundle, desc=f"lr {lr}")
        curve = budget.curve(budget.histories(trained))
        picks = budget.choose(curve, ev.budget_tolerance)
        seconds = round(time.perf_counter() - started, 1)
        for rec in curve.to_dict("records"):
            rows.append({"profile": args.profile, "lr": lr, **rec, "rule_picks": picks[rec["network"]],
                         "seconds_for_lr": seconds})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
    pd.concat([old, table], ignore_index=True).to_csv(RESULTS, index=False)


if __name__ == "__main__":
    main()
