"""Where a run's time went: every code cell of its executed notebooks, and every cached stage
it built, longest first.

Reads what a run leaves behind, so it costs nothing to run: the executed notebooks in
``outputs/<run>/`` (papermill records each cell's wall time) and the cache, whose every result
records how long its build took (``config.json``: ``build_seconds``). Only results built during
the run are counted (from its start, ``run_times.csv``'s finish time minus its total, to its
end), so run it after ``./run_all.sh`` on a fresh cache (move ``.cache`` aside first) to see
the whole of a cold run; on a warm cache the stages it read back cost nothing and show no build.
Stages built side by side in worker processes (the downstream models, DM's runs) add up to
more than the wall time they took.

    ./run_all.sh && python bench/profile_demo.py            # the demo
    python bench/profile_demo.py --run my-demo --top 40

Prints the cells and the stages and writes ``bench/results/profile_<run>_cells.csv`` (notebook,
cell, first code line, seconds, share of the run) and ``profile_<run>_stages.csv`` (stage,
results built, seconds in all, mean, longest).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pandas as pd

from histodistill import machine, paths

RESULTS = Path(__file__).resolve().parent / "results"


def first_code_line(source: str) -> str:
    """The cell's first line that is code, not a comment or blank, cut to 90 characters."""
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()[:90]
    return "(comments only)"


def cell_times(run: str) -> pd.DataFrame:
    """One row per executed code cell of the run's notebooks."""
    folder = paths.executed_notebooks_dir(run)
    rows = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        number = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            number += 1
            duration = cell.metadata.get("papermill", {}).get("duration")
            if duration is None:
                continue
            rows.append({"notebook": path.stem, "cell": number, "code": first_code_line(cell.source),
                         "seconds": round(float(duration), 1)})
    if not rows:
        raise SystemExit(f"no executed notebooks in {folder}: run ./run_all.sh --run-name {run} first")
    return pd.DataFrame(rows)


def run_window(run: str) -> tuple[datetime, datetime]:
    """When the run started and finished, from its ``run_times.csv``."""
    times = pd.read_csv(paths.results_dir(run) / "run_times.csv")
    total = times.loc[times["notebook"] == "total"].iloc[0]
    end = datetime.strptime(total["finished"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return end - timedelta(seconds=float(total["seconds"]) + 60), end + timedelta(seconds=60)


def stage_times(cache: Path, start: datetime, end: datetime) -> pd.DataFrame:
    """Per cache stage: the results built between `start` and `end` and their build seconds."""
    rows = []
    for record in cache.glob("*/*/config.json"):
        try:
            entry = json.loads(record.read_text())
            created = datetime.strptime(entry["created"], "%Y-%m-%dT%H:%M:%S%z")
        except (OSError, ValueError, KeyError):
            continue
        if start <= created <= end:
            rows.append({"stage": entry["stage"], "build_seconds": float(entry["build_seconds"])})
    if not rows:
        return pd.DataFrame(columns=["stage", "results", "seconds", "mean_seconds", "longest_seconds"])
    frame = pd.DataFrame(rows)
    table = frame.groupby("stage")["build_seconds"].agg(results="count", seconds="sum", mean_seconds="mean",
                                                        longest_seconds="max")
    return table.round(1).sort_values("seconds", ascending=False).reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="demo", help="run name (folder under outputs/ and paper_results/)")
    ap.add_argument("--top", type=int, default=25, help="cells shown (all are written)")
    args = ap.parse_args()

    cells = cell_times(args.run)
    total = cells["seconds"].sum()
    cells["share"] = (cells["seconds"] / total).round(3)
    cells = cells.sort_values("seconds", ascending=False, ignore_index=True)
    start, end = run_window(args.run)
    stages = stage_times(paths.cache_dir(), start, end)

    print(f"run {args.run!r} on {machine.cpu_name()} ({machine.available_cpus()} cores): "
          f"{total:.0f} s in code cells")
    print("\nper notebook:")
    print(cells.groupby("notebook")["seconds"].sum().round(1).to_string())
    print(f"\nthe {args.top} longest cells:")
    print(cells.head(args.top).to_string(index=False))
    print(f"\ncached stages built during the run ({start:%H:%M:%S} to {end:%H:%M:%S} UTC):")
    print(stages.to_string(index=False) if len(stages) else "  none: every stage came from the cache")

    RESULTS.mkdir(exist_ok=True)
    cells.to_csv(RESULTS / f"profile_{args.run}_cells.csv", index=False)
    stages.to_csv(RESULTS / f"profile_{args.run}_stages.csv", index=False)
    print(f"\nwritten to {RESULTS / f'profile_{args.run}_cells.csv'} and {RESULTS / f'profile_{args.run}_stages.csv'}")


if __name__ == "__main__":
    main()
