"""Speed of the classifiers with channels-last inputs (as `convnet.to_tensor` gave them before)
against contiguous ones (as it gives them now).

A permute of uint8 (N, H, W, C) images to (N, C, H, W) is a channels-last view. Convolutions
keep the layout of their input, so every layer of a network then ran channels-last, and on the
CPU group norm's channels-last kernel is several times slower than its contiguous one. This
times the same trainings both ways, alternating, each `--repeats` times:

- a demo downstream model (the profile's recipe, `--steps` steps) on a random real IPC-10 set,
  ConvNet and ResNet-18;
- the judge (notebook 03's ConvNet at width 128) for `--epochs` epochs on the train split.

    python bench/input_layout.py                 # demo, 3 repeats; prints, writes
    python bench/input_layout.py --repeats 5 --steps 300

Writes bench/results/input_layout.csv (task, threads, layout, min/median/max seconds,
speed-up of the medians, the CPU). The downstream models train on one thread, as notebook
05's workers do; the judge on the machine's threads, as notebook 03 does.
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

from histodistill import machine, presets
from histodistill.classifiers import convnet, training
from histodistill.data import dataset
from histodistill.evaluate import evaluation

RESULTS = Path(__file__).resolve().parent / "results" / "input_layout.csv"
contiguous_inputs = convnet.to_tensor  # what the package does now


def channels_last_inputs(images, mean, std) -> torch.Tensor:
    """The former `convnet.to_tensor`: the same values, laid out channels-last (the strides
    a permute of (N, H, W, C) gives)."""
    return contiguous_inputs(images, mean, std).contiguous(memory_format=torch.channels_last)


@contextmanager
def layout(name: str):
    current = convnet.to_tensor
    if name == "channels_last":
        convnet.to_tensor = channels_last_inputs
    try:
        yield
    finally:
        convnet.to_tensor = current


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="steps of each downstream model")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the judge")
    args = ap.parse_args()

    threads = machine.configure_torch()
    bundle = dataset.prepare_data(presets.stage_config("data", args.profile))
    train, val = bundle.splits["train"], bundle.splits["val"]
    recipe = presets.stage_config("downstream", args.profile, steps=args.steps)
    subset = evaluation.random_real(bundle, presets.stage_config("selection", args.profile).ipc, 0)
    judge_cfg = dataclasses.replace(presets.stage_config("classifier", args.profile), epochs=args.epochs)

    def downstream(network: str):
        with machine.threads(1):
            training.train_on_set(subset.images, subset.labels, val.images, val.labels, bundle.n_classes,
                                  dataclasses.replace(recipe, network=network), progress=False)

    tasks = {
        (f"downstream convnet, {args.steps} steps, IPC-10", 1): lambda: downstream("convnet"),
        (f"downstream resnet18, {args.steps} steps, IPC-10", 1): lambda: downstream("resnet18"),
        (f"judge, {args.epochs} epochs of {len(train.labels)} images", threads):
            lambda: training.train_judge(train.images, train.labels, val.images, val.labels, bundle.n_classes,
                                         judge_cfg, progress=False),
    }
    rows = []
    for (task, task_threads), run in tasks.items():
        times = {"channels_last": [], "contiguous": []}
        for _ in range(args.repeats):  # alternate, so a busy spell hits both alike
            for name in times:
                with layout(name):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        for name, seconds in times.items():
            rows.append({"task": task, "threads": task_threads, "layout": name, "min_s": min(seconds),
                         "median_s": statistics.median(seconds), "max_s": max(seconds)})
        rows[-1]["speedup"] = statistics.median(times["channels_last"]) / statistics.median(times["contiguous"])
    table = pd.DataFrame(rows)
    table["cpu"], table["cores"], table["torch"] = machine.cpu_name(), os.cpu_count(), torch.__version__
    RESULTS.parent.mkdir(exist_ok=True)
    table.to_csv(RESULTS, index=False, float_format="%.3f")
    print(table.drop(columns=["cpu", "cores", "torch"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
