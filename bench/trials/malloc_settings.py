"""Does keeping freed memory in the process (glibc `mallopt`) speed up the demo's work on a CPU?

glibc hands large blocks (over its mmap threshold) back to the kernel when they are freed,
and trims the heap's top; each new block of a training step then arrives as fresh pages that
the kernel must map and zero on first touch (hundreds of thousands of page faults per demo
model). `machine.keep_freed_memory` raises the mmap threshold and the trim threshold, so the
blocks a step frees are reused by the next. The arithmetic is untouched: results are the same
bit for bit.

Each measurement runs in a fresh process (the setting must precede the allocations it
governs), alternating the two ways `--repeats` times:

- a demo downstream ConvNet and ResNet-18 (the profile's recipe, `--steps` steps, on a random
  real IPC-10 set, one thread, as notebook 05's workers train);
- a sweep pool of notebook 03 (`--per-class` images per class, the demo sampler, SDE solver,
  on the machine's threads as notebook 03 samples).

    python bench/trials/malloc_settings.py                  # 3 repeats, 600 steps
    python bench/trials/malloc_settings.py --repeats 5

Writes bench/trials/results/malloc_settings.csv (task, way, min/median/max seconds, minor page
faults (median), speed-up of the medians, the CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import write  # noqa: E402  (a sibling module)

RESULTS = Path(__file__).resolve().parent / "results" / "malloc_settings.csv"
WAYS = ("glibc defaults", "keep freed memory")


def task_runner(task: str, steps: int, per_class: int):
    """The function that does `task` once (data and models loaded before it)."""
    if task.startswith("downstream"):
        from ab_timing import demo_trainings

        network = task.split()[1]
        tasks = demo_trainings("demo", steps, 1, (network,))
        return next(run for (name, _), run in tasks.items() if name.startswith("downstream"))

    from ab_timing import sweep_pool

    from histodistill import machine

    machine.configure_torch()
    return sweep_pool(per_class)


def child(task: str, way: str, steps: int, per_class: int) -> None:
    """One measurement, in this fresh process: print seconds and page faults as JSON."""
    from histodistill import machine

    if way == WAYS[1]:
        machine.keep_freed_memory()
    run = task_runner(task, steps, per_class)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"seconds": seconds, "faults": faults}))


def measure(task: str, way: str, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", task, way, "--steps", str(args.steps),
                          "--per-class", str(args.per_class)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600, help="steps of each downstream model")
    ap.add_argument("--per-class", type=int, default=40, help="images per class of the sweep pool")
    ap.add_argument("--child", nargs=2, metavar=("TASK", "WAY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.steps, args.per_class)
        return

    tasks = {f"downstream convnet, {args.steps} steps, IPC-10, 1 thread": "downstream convnet",
             f"downstream resnet18, {args.steps} steps, IPC-10, 1 thread": "downstream resnet18",
             f"sweep pool, {args.per_class} per class, all threads": "pool"}
    rows = []
    for name, task in tasks.items():
        runs: dict[str, list[dict]] = {way: [] for way in WAYS}
        for _ in range(args.repeats):
            for way in WAYS:
                runs[way].append(measure(task, way, args))
        for way in WAYS:
            seconds = [r["seconds"] for r in runs[way]]
            rows.append({"task": name, "way": way, "min_s": min(seconds), "median_s": statistics.median(seconds),
                         "max_s": max(seconds), "page_faults": statistics.median(r["faults"] for r in runs[way])})
        rows[-1]["speedup"] = rows[-2]["median_s"] / rows[-1]["median_s"]
        print(f"{name}: {rows[-1]['speedup']:.2f}x", flush=True)
    write(pd.DataFrame(rows), RESULTS)


if __name__ == "__main__":
    main()
