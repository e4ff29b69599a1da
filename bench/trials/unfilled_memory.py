"""Does torch's filling of new tensors under deterministic mode cost the demo time on a CPU?

With `torch.use_deterministic_algorithms(True)` torch also fills the memory of every new
tensor with NaN before an operation writes it (`torch.utils.deterministic.
fill_uninitialized_memory`), a guard against reading memory never written. Every
activation and gradient of a training step is such a tensor. `machine.configure_torch`
turns the filling off; no result changes (tests/runner/test_determinism.py trains with and
without it and compares the weights). This times, alternating the two ways `--repeats`
times in one process:

- a demo downstream ConvNet (the profile's recipe, `--steps` steps) on a random real IPC-10
  set and on an IPC-50 set (batches of 256), one thread as notebook 05's workers train;
- the judge (notebook 03's ConvNet at width 128) for `--epochs` epochs, on the machine's threads;
- a sweep pool of notebook 03 (`--per-class` images per class, the demo sampler), on the
  machine's threads.

    python bench/trials/unfilled_memory.py              # 3 repeats; prints, writes
    python bench/trials/unfilled_memory.py --repeats 5

Writes bench/trials/results/unfilled_memory.csv (task, threads, new memory, min/median/max
seconds, speed-up of the medians, the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import alternate, demo_trainings, sweep_pool, write  # noqa: E402  (a sibling module)

from histodistill import machine, presets  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "unfilled_memory.csv"


def filling(fill: bool):
    @contextlib.contextmanager
    def way():
        before = torch.utils.deterministic.fill_uninitialized_memory
        torch.utils.deterministic.fill_uninitialized_memory = fill
        try:
            yield
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = before
    return way


def larger_set(steps: int):
    """The demo downstream ConvNet on a random real IPC-50 set (450 images, batches of 256)."""
    from histodistill.classifiers import training
    from histodistill.data import dataset
    from histodistill.evaluate import training_sets

    bundle = dataset.prepare_data(presets.stage_config("data", "demo"))
    val = bundle.splits["val"]
    recipe = presets.stage_config("downstream", "demo", steps=steps)
    subset = training_sets.random_real(bundle, 50, 0)

    def run() -> None:
        with machine.threads(1):
            training.train_on_set(subset.images, subset.labels, val.images, val.labels, bundle.n_classes, recipe,
                                  progress=False)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600, help="steps of each downstream model")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the judge")
    ap.add_argument("--per-class", type=int, default=30, help="images per class of the sweep pool")
    args = ap.parse_args()
    threads = machine.configure_torch()
    tasks = demo_trainings("demo", args.steps, args.epochs, ("convnet",))
    tasks[(f"downstream convnet, {args.steps} steps, IPC-50", 1)] = larger_set(args.steps)
    tasks[(f"sweep pool, {args.per_class} per class", threads)] = sweep_pool(args.per_class)
    ways = {"filled with NaN": filling(True), "left unfilled": filling(False)}
    write(alternate(tasks, ways, args.repeats, "new memory"), RESULTS)


if __name__ == "__main__":
    main()
