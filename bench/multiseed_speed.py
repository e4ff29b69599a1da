"""Speed of training a row's runs together (`training.train_runs`) against one by one.

For each network (ConvNet and ResNet-18 by default), `--runs` models are trained on random real
subsets of the bundled train split at the profile's IPC (a new subset per run, as the
"Random real" row draws them), with the profile's downstream recipe: first one after
another (`training.train_on_set`), then all at once. Each figure is the wall time of
the whole training (val evaluations included, test untouched); the two ways give the same
models up to float summation order (tests/test_downstream.py).

    python bench/multiseed_speed.py --steps 150        # demo profile, 5 runs; prints, writes
    python bench/multiseed_speed.py --runs 10 --steps 50
    python bench/multiseed_speed.py --device cuda        # on a GPU (scripts/gpu_check.sh)

Writes bench/results/multiseed_speed.csv (multiseed_speed-cuda.csv on a GPU): network,
width, runs, sequential s, batched s, speedup, and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import pandas as pd
import torch

from histodistill import config, machine, presets
from histodistill.classifiers import training
from histodistill.classifiers.networks import CONVNET_WIDTH, RESNET18_WIDTHS, scaled
from histodistill.data import dataset
from histodistill.evaluate import evaluation

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: the profile's)")
    ap.add_argument("--networks", nargs="+", default=list(config.NETWORKS),
                    help="networks timed (default: both, whatever the profile's main table trains)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    bundle = dataset.prepare_data(presets.stage_config("data", args.profile))
    recipe = presets.stage_config("downstream", args.profile, steps=args.steps)
    ipc = presets.stage_config("selection", args.profile).ipc
    networks = args.networks
    val = bundle.splits["val"]
    seeds = list(range(args.runs))
    sets = [evaluation.random_real(bundle, ipc, seed) for seed in seeds]
    rows = []
    for network in networks:
        cfg = dataclasses.replace(recipe, network=network)
        start = time.perf_counter()
        for seed, s in zip(seeds, sets):
            training.train_on_set(s.images, s.labels, val.images, val.labels, bundle.n_classes,
                                    dataclasses.replace(cfg, seed=seed), progress=False, device=args.device)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        training.train_runs([(s.images, s.labels) for s in sets], val.images, val.labels, bundle.n_classes,
                              cfg, seeds, progress=False, device=args.device)
        batched = time.perf_counter() - start
        width = scaled(CONVNET_WIDTH if network == "convnet" else RESNET18_WIDTHS[0], cfg.width_scale)
        row = {"profile": args.profile, "network": network, "width": width, "ipc": ipc,
               "images": len(sets[0].labels), "steps": cfg.steps, "batch_size": cfg.batch_size, "runs": args.runs,
               "sequential_s": round(sequential, 2), "batched_s": round(batched, 2),
               "speedup": round(sequential / batched, 2), "threads": torch.get_num_threads(),
               "device": machine.device_name(args.device), "cpu": machine.cpu_name(), "cores": os.cpu_count(),
               "torch": torch.__version__}
        print(f"{network} (width {width}), {args.runs} runs of {cfg.steps} steps on {row['images']} images: "
              f"one by one {sequential:.1f} s, together {batched:.1f} s, speed-up {sequential / batched:.2f}x",
              flush=True)
        rows.append(row)
    out = RESULTS / ("multiseed_speed.csv" if args.device == "cpu" else f"multiseed_speed-{args.device}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
