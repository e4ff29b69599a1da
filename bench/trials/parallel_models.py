"""Speed of training a table's models in worker processes, one thread each, against one
process on all threads (how the CPU trained them before).

Trains `--runs` models of the profile's downstream recipe (ConvNet by default) on random
real subsets at the profile's IPC, through an empty cache each time: first one after
another in this process with torch on every available CPU, then with
`evaluation.train_together` (one worker process per CPU, one thread each: what notebooks 05
and 06 do now). Each figure is the wall time of the whole batch, worker start-up included.

    python bench/trials/parallel_models.py                 # demo profile, 6 ConvNet runs
    python bench/trials/parallel_models.py --runs 4 --network resnet18

Writes bench/trials/results/parallel_models.csv (network, runs, steps, CPUs, seconds each way,
speed-up, machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from histodistill import machine, presets
from histodistill import workers as workers_mod
from histodistill.classifiers import training
from histodistill.data import dataset
from histodistill.evaluate import evaluation
from histodistill.classifiers.config import NETWORKS
from histodistill.evaluate import training_sets

RESULTS = Path(__file__).resolve().parent / "results" / "parallel_models.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--network", default="convnet", choices=NETWORKS)
    args = ap.parse_args()
    threads = machine.configure_torch()
    bundle = dataset.prepare_data(presets.stage_config("data", args.profile))
    recipe = presets.stage_config("downstream", args.profile, network=args.network)
    ipc = presets.stage_config("selection", args.profile).ipc
    jobs = [evaluation.Job("Random real", training_sets.random_real(bundle, ipc, seed), dataclasses.replace(recipe, seed=seed))
            for seed in range(args.runs)]
    val = bundle.splits["val"]

    started = time.perf_counter()
    for job in jobs:  # the former way: this process, all threads
        training.train_on_set(job.train_set.images, job.train_set.labels, val.images, val.labels,
                                bundle.n_classes, job.cfg, progress=False)
    before = time.perf_counter() - started

    workers = workers_mod.available()
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        evaluation.train_together(jobs, bundle, progress=False, cache_root=Path(root), workers=workers)
        after = time.perf_counter() - started

    row = {"network": args.network, "runs": args.runs, "steps": recipe.steps, "ipc": ipc, "threads_before": threads,
           "workers": workers, "one_process_s": round(before, 1), "workers_s": round(after, 1),
           "speedup": round(before / after, 2), "cpu": machine.cpu_name(), "cpus": machine.available_cpus(),
           "torch": torch.__version__}
    print(f"{args.runs} {args.network} runs of {recipe.steps} steps: {before:.1f} s in one process on {threads} "
          f"threads, {after:.1f} s in {workers} single-threaded workers ({before / after:.2f}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
    pd.concat([table, pd.DataFrame([row])], ignore_index=True).to_csv(RESULTS, index=False)


if __name__ == "__main__":
    main()
