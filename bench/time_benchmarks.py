"""How long each benchmark takes to run: the wall time of its usual command, on this machine.

Each benchmark runs from a copy of `bench/` in a temporary folder, so its figures go to that
copy's `results/` and the committed results (measured on the machine their docs name) are left
as they are. Benchmarks that read a trained generator or judge read them from the project's
cache, as they do when run by hand; run the demo first (`./run_all.sh`) so that they do not
train them here. Run alone: two heavy jobs on 2 cores slow each other down several times.

    python bench/time_benchmarks.py                      # every benchmark below
    python bench/time_benchmarks.py --only ldm_speed selection_scale

Prints and writes bench/results/bench_runtimes.csv (benchmark, command, seconds, exit code, CPU).
A benchmark left out with --only keeps its earlier row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from histodistill import machine, paths

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "bench_runtimes.csv"

# The command each benchmark's docstring gives first, on this machine's CPU. Benchmarks that
# train a generator for hours (generator_trials.py) or a grid of classifiers
# (downstream_lr.py) record their own minutes in their results file and are not timed here.
COMMANDS = {
    "ldm_speed": ["ldm_speed.py", "--profile", "demo"],
    "ddp_speed": ["ddp_speed.py", "--profile", "demo"],
    "paper_time_model": ["paper_time_model.py"],
    "selection_scale": ["selection_scale.py"],
    "near_copy_calibration": ["near_copy_calibration.py"],
    "sampler_trials": ["sampler_trials.py", "--scales", "3"],
    "profile_demo": ["profile_demo.py"],
}


def time_one(name: str, copy: Path) -> dict:
    script, *args = COMMANDS[name]
    env = {**os.environ, "PYTHONPATH": str(paths.project_root()), "HISTODISTILL_CACHE": str(paths.cache_dir())}
    print(f"{name}: python bench/{script} {' '.join(args)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(copy / script), *args], cwd=paths.project_root(), env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    print(f"  {seconds:.0f} s (exit {done.returncode})", flush=True)
    return {"benchmark": name, "command": " ".join(["python", f"bench/{script}", *args]),
            "seconds": round(seconds, 1), "exit_code": done.returncode, "cpu": machine.cpu_name(),
            "cores": machine.available_cpus()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(COMMANDS), default=sorted(COMMANDS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bench"
        shutil.copytree(BENCH, copy, ignore=shutil.ignore_patterns("results", "trials", "__pycache__"))
        rows = [time_one(name, copy) for name in args.only]
    table = pd.DataFrame(rows)
    if RESULTS.exists():
        earlier = pd.read_csv(RESULTS)
        table = pd.concat([earlier[~earlier.benchmark.isin(args.only)], table], ignore_index=True)
    table = table.sort_values("benchmark", ignore_index=True)
    print(table.to_string(index=False))
    table.to_csv(RESULTS, index=False)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
