"""Shared by the A/B benchmarks (`input_layout.py`, `pooling.py`, `pool_backward.py`,
`unfilled_memory.py`, `malloc_settings.py`): the demo work they time (trainings, the pooling
alone, a sweep pool), the command line of those that time trainings, and the loop that times
it under two ways of doing the same thing, alternating.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import pandas as pd
import torch

from histodistill import machine, presets
from histodistill.classifiers import convnet, training
from histodistill.data import dataset
from histodistill.evaluate import training_sets

Task = tuple[str, int]  # (what is timed, the torch threads it runs on)


def demo_trainings(profile: str, steps: int, epochs: int, networks: tuple[str, ...]) -> dict[Task, Callable[[], None]]:
    """A downstream model per network (the profile's recipe, `steps` steps, on a random real
    set at the profile's IPC, one thread as notebook 05's workers train) and the judge
    (`epochs` epochs over the train split, on the machine's threads as notebook 03 trains it)."""
    threads = machine.configure_torch()
    bundle = dataset.prepare_data(presets.stage_config("data", profile))
    train, val = bundle.splits["train"], bundle.splits["val"]
    recipe = presets.stage_config("downstream", profile, steps=steps)
    ipc = presets.stage_config("selection", profile).ipc
    subset = training_sets.random_real(bundle, ipc, 0)
    judge_cfg = dataclasses.replace(presets.stage_config("classifier", profile), epochs=epochs)

    def downstream(network: str) -> Callable[[], None]:
        def run() -> None:
            with machine.threads(1):
                training.train_on_set(subset.images, subset.labels, val.images, val.labels, bundle.n_classes,
                                      dataclasses.replace(recipe, network=network), progress=False)
        return run

    tasks = {(f"downstream {network}, {steps} steps, IPC-{ipc}", 1): downstream(network) for network in networks}
    tasks[(f"judge, {epochs} epochs of {len(train.labels)} images", threads)] = (
        lambda: training.train_judge(train.images, train.labels, val.images, val.labels, bundle.n_classes,
                                     judge_cfg, progress=False))
    return tasks


def pool_alone(side: int, repeats: int = 50) -> Callable[[], None]:
    """Forward and backward of the ConvNet's pooling alone, `repeats` times, on 90 x 16 maps
    of `side` px (the demo ConvNet's batch and width), one thread."""
    x = torch.randn(90, 16, side, side)
    grad = torch.randn(90, 16, side // 2, side // 2)
    layer = convnet.HalvingPool()

    def run() -> None:
        with machine.threads(1):
            for _ in range(repeats):
                leaf = x.detach().requires_grad_()
                layer(leaf).backward(grad)
    return run


def sweep_pool(per_class: int) -> Callable[[], None]:
    """A sweep pool of notebook 03 (`per_class` images per class, the demo sampler), sampled on
    this process's threads into a fresh folder each time."""
    import tempfile

    from histodistill.generate import scale_out, stages

    bundle = dataset.prepare_data(presets.stage_config("data", "demo"))
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", "demo"), bundle)
    pipe = stages.load_pipeline(stages.fit_diffusion(presets.stage_config("diffusion", "demo"), vae, bundle))
    sampling = presets.stage_config("sampling", "demo", per_class=per_class, seed=1)
    labels = np.repeat(np.arange(len(pipe.class_names)), per_class)
    return lambda: scale_out.sample_chunks(pipe, labels, sampling, Path(tempfile.mkdtemp()), progress=False)


def trial_arguments(doc: str, steps: int) -> argparse.Namespace:
    """The command line of a trial that times demo trainings: --profile, --repeats, --steps
    (of each downstream model, default `steps`) and --epochs (of the judge)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=steps, help="steps of each downstream model")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the judge")
    return ap.parse_args()


def alternate(tasks: dict[Task, Callable[[], None]], ways: dict[str, Callable[[], ContextManager]],
              repeats: int, column: str) -> pd.DataFrame:
    """Time each task under each of the two `ways` (a context manager each, the old way first),
    alternating `repeats` times so that a busy spell hits both alike: a row per task and way
    (min, median, max seconds) and, on the second way's row, the speed-up of the medians."""
    before, after = ways
    rows = []
    for (task, threads), run in tasks.items():
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeats):
            for name, way in ways.items():
                with way():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        for name, seconds in times.items():
            rows.append({"task": task, "threads": threads, column: name, "min_s": min(seconds),
                         "median_s": statistics.median(seconds), "max_s": max(seconds)})
        rows[-1]["speedup"] = statistics.median(times[before]) / statistics.median(times[after])
        print(f"{task}: {rows[-1]['speedup']:.2f}x", flush=True)
    return pd.DataFrame(rows)


def write(table: pd.DataFrame, path: Path) -> None:
    """Add the machine, write the CSV, print the table."""
    table["cpu"], table["cores"], table["torch"] = machine.cpu_name(), os.cpu_count(), torch.__version__
    path.parent.mkdir(exist_ok=True)
    table.to_csv(path, index=False, float_format="%.3f")
    print(table.drop(columns=["cpu", "cores", "torch"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {path}")
