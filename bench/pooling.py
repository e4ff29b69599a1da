"""Speed of the ConvNet's 2x2 average pooling as torch's `avg_pool2d` (what the ConvNet used
before) against `convnet.HalvingPool` (four strided slices, what it uses now on the CPU).

Torch's CPU `avg_pool2d` kernel is slow on contiguous (N, C, H, W) maps: in a profile of one
demo downstream model its forward and backward were a quarter of the training time. This
times, alternating the two ways `--repeats` times each:

- the pooling alone, forward and backward, at the demo ConvNet's three map sizes (a batch of
  90 images at width 16, one thread);
- a demo downstream ConvNet (the profile's recipe, `--steps` steps) on a random real IPC-10
  set, on one thread as notebook 05's workers train;
- the judge (notebook 03's ConvNet at width 128) for `--epochs` epochs, on the machine's threads.

    python bench/pooling.py                  # demo, 3 repeats; prints, writes
    python bench/pooling.py --repeats 5 --steps 300

Writes bench/results/pooling.csv (task, threads, pooling, min/median/max seconds, speed-up
of the medians, the CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from histodistill import machine, presets
from histodistill.classifiers import convnet, training
from histodistill.data import dataset
from histodistill.evaluate import evaluation

RESULTS = Path(__file__).resolve().parent / "results" / "pooling.csv"
slices_forward = convnet.HalvingPool.forward  # what the package does now


@contextmanager
def pooling(name: str):
    """Run the block with the ConvNet pooling as `name` ("avg_pool2d" or "slices")."""
    if name == "avg_pool2d":
        convnet.HalvingPool.forward = lambda self, x: F.avg_pool2d(x, 2, 2)
    try:
        yield
    finally:
        convnet.HalvingPool.forward = slices_forward


def pool_alone(shape: tuple[int, ...], repeats: int = 50):
    x = torch.randn(shape)
    grad = torch.randn(*shape[:2], shape[2] // 2, shape[3] // 2)
    layer = convnet.HalvingPool()

    def run():
        with machine.threads(1):
            for _ in range(repeats):
                leaf = x.detach().requires_grad_()
                layer(leaf).backward(grad)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="steps of the downstream model")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the judge")
    args = ap.parse_args()

    threads = machine.configure_torch()
    bundle = dataset.prepare_data(presets.stage_config("data", args.profile))
    train, val = bundle.splits["train"], bundle.splits["val"]
    recipe = presets.stage_config("downstream", args.profile, steps=args.steps)
    subset = evaluation.random_real(bundle, presets.stage_config("selection", args.profile).ipc, 0)
    judge_cfg = dataclasses.replace(presets.stage_config("classifier", args.profile), epochs=args.epochs)

    def downstream():
        with machine.threads(1):
            training.train_on_set(subset.images, subset.labels, val.images, val.labels, bundle.n_classes,
                                  dataclasses.replace(recipe, network="convnet"), progress=False)

    tasks = {(f"pooling fwd+bwd x50, {side}x{side} maps of 90x16", 1): pool_alone((90, 16, side, side))
             for side in (28, 14, 7)}
    tasks[(f"downstream convnet, {args.steps} steps, IPC-10", 1)] = downstream
    tasks[(f"judge, {args.epochs} epochs of {len(train.labels)} images", threads)] = (
        lambda: training.train_judge(train.images, train.labels, val.images, val.labels, bundle.n_classes,
                                     judge_cfg, progress=False))
    rows = []
    for (task, task_threads), run in tasks.items():
        times = {"avg_pool2d": [], "slices": []}
        for _ in range(args.repeats):  # alternate, so a busy spell hits both alike
            for name in times:
                with pooling(name):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        for name, seconds in times.items():
            rows.append({"task": task, "threads": task_threads, "pooling": name, "min_s": min(seconds),
                         "median_s": statistics.median(seconds), "max_s": max(seconds)})
        rows[-1]["speedup"] = statistics.median(times["avg_pool2d"]) / statistics.median(times["slices"])
        print(f"{task}: {rows[-1]['speedup']:.2f}x", flush=True)
    table = pd.DataFrame(rows)
    table["cpu"], table["cores"], table["torch"] = machine.cpu_name(), os.cpu_count(), torch.__version__
    RESULTS.parent.mkdir(exist_ok=True)
    table.to_csv(RESULTS, index=False, float_format="%.3f")
    print(table.drop(columns=["cpu", "cores", "torch"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
