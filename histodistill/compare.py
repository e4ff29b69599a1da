"""Check a run's numbers against a reference run's: are the differences noise?

Two machines running the same pipeline do not produce the same digits: another CPU model
(or thread count) sums floats in another order, and training amplifies the last bits. So a
fresh run (``paper_results/<fresh>/``) is judged against a reference run
(``paper_results/<reference>/``, e.g. the committed ``demo``) number by number: a table
mean is `inside` when it lies in the reference's 95 % interval for it (the Student t
interval of the mean over the reference's runs for ``main_table.csv``, the reference's own
bootstrap interval for the paired differences) and `outside` otherwise; a number without an
interval (pool quality, autoencoder reconstruction, the generator's training loss, the
guidance sweep, the training budget's val curve) gets `no interval` and its relative
difference. Rows are matched by name, so a row present in one run only is reported as
missing, not misaligned.

    python -m histodistill.compare FRESH REFERENCE    # or: ./run_all.sh --compare-to REFERENCE
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import paths
from .classifiers.metrics import SUMMARY_METRICS as METRICS

LEVEL = 0.95
COLUMNS = ["table", "row", "column", "reference", "reference_low", "reference_high", "fresh", "difference",
           "relative_difference", "verdict"]
INSIDE, OUTSIDE, NO_INTERVAL = "inside", "outside", "no interval"
MISSING_IN_FRESH, MISSING_IN_REFERENCE = "missing in fresh", "missing in reference"
PAIRED_KEYS = ("network", "metric", "reference")  # after the file's first column (row or variant)
# Tables without an interval, and the columns naming a row; their other numeric columns are
# compared.
PLAIN_TABLES = {
    "pool_quality.csv": ("class",),
    "pool_class_consistency.csv": ("class",),
    "autoencoder_reconstruction.csv": ("autoencoder",),
    "ldm_training.csv": ("stage",),
    "guidance_sweep.csv": ("solver", "guidance_scale"),
    "training_budget.csv": ("network", "budget"),
}


def _text(value) -> str:
    """A key as text; 2 and 2.0 name the same guidance scale."""
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    return f"{value:g}" if number else str(value)


def _long(frame: pd.DataFrame, keys, columns, name: str) -> pd.DataFrame:
    """(row, column, `name`) per number, the row being the key columns joined readably
    ("InfoDist (CE) | convnet"); an empty cell is no number to compare."""
    rows = [" | ".join(_text(v) for v in key) for key in frame[list(keys)].itertuples(index=False)]
    out = frame[list(columns)].assign(row=pd.Series(rows, index=frame.index, dtype=object))
    return out.melt("row", var_name="column", value_name=name).dropna(subset=[name])


def _with_interval(values: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame) -> pd.DataFrame:
    """Reference values with the bounds of their interval (NaN where there is none)."""
    bounds = low.merge(high, on=["row", "column"])
    return values.merge(bounds, on=["row", "column"], how="left")


def _main_table(fresh: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From the two ``main_runs.csv``: per (row, network) and metric, the reference's mean
    over runs with its Student t interval, and the fresh mean."""
    keys, columns = ["row", "network"], [f"{m}_mean" for m in METRICS]

    def long(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return _long(frame.add_suffix("_mean").reset_index(), keys, columns, name)

    grouped = reference.groupby(keys, sort=False)[list(METRICS)]
    mean, std, count = grouped.mean(), grouped.std(), grouped.count()
    # One run has no interval (std NaN); runs that agree exactly have a zero-wide one.
    half = std * stats.t.ppf(0.5 + LEVEL / 2, np.maximum(count - 1, 1)) / np.sqrt(count)
    ref = _with_interval(long(mean, "reference"), long(mean - half, "reference_low"),
                         long(mean + half, "reference_high"))
    return ref, long(fresh.groupby(keys, sort=False)[list(METRICS)].mean(), "fresh")


def _paired(fresh: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Paired differences (``diff``) with the reference's own interval (``low``, ``high``);
    None when a file lacks these columns (then it is not a paired table)."""
    needed = set(PAIRED_KEYS) | {"diff", "low", "high"}
    if not (needed <= set(fresh.columns) and needed <= set(reference.columns)):
        return None
    keys = [reference.columns[0], *PAIRED_KEYS]

    def long(frame: pd.DataFrame, column: str, name: str) -> pd.DataFrame:
        return _long(frame.assign(diff=frame[column]), keys, ["diff"], name)

    ref = _with_interval(long(reference, "diff", "reference"), long(reference, "low", "reference_low"),
                         long(reference, "high", "reference_high"))
    return ref, long(fresh, "diff", "fresh")


def _plain(fresh: pd.DataFrame, reference: pd.DataFrame, keys) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Every numeric column but the keys, without an interval; None when a file lacks a key.
    Wall times are left out: they measure the machine, not the result."""
    if not (set(keys) <= set(fresh.columns) and set(keys) <= set(reference.columns)):
        return None

    def values(frame: pd.DataFrame) -> list[str]:
        return [c for c in frame.columns if c not in keys and "seconds" not in c
                and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]

    return _long(reference, keys, values(reference), "reference"), _long(fresh, keys, values(fresh), "fresh")


def _verdicts(table: str, ref: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """One row per number of either run, matched on (row, column), with its verdict."""
    keys = ["row", "column"]
    out = ref.merge(fresh, on=keys, how="outer", indicator=True)
    # An outer merge sorts; show the reference's order, then what only the fresh run has.
    out = pd.concat([ref[keys], fresh[keys]]).drop_duplicates().merge(out, on=keys, how="left")
    for bound in ("reference_low", "reference_high"):
        if bound not in out:
            out[bound] = np.nan
    out["difference"] = out["fresh"] - out["reference"]
    relative = out["difference"] / out["reference"].abs()
    out["relative_difference"] = relative.where(out["difference"] != 0, 0.0).replace([np.inf, -np.inf], np.nan)
    has_interval = out["reference_low"].notna() & out["reference_high"].notna()
    inside = (out["fresh"] >= out["reference_low"]) & (out["fresh"] <= out["reference_high"])
    out["verdict"] = np.select(
        [out["_merge"] == "left_only", out["_merge"] == "right_only", has_interval & inside, has_interval],
        [MISSING_IN_FRESH, MISSING_IN_REFERENCE, INSIDE, OUTSIDE], NO_INTERVAL)
    return out.assign(table=table)[COLUMNS]


def _read(name: str, fresh_dir: Path, reference_dir: Path, notes: list[dict]):
    """Both runs' copies of table `name`, or None (noted once) when a run lacks it."""
    present = [(d / name).is_file() for d in (fresh_dir, reference_dir)]
    if all(present):
        return pd.read_csv(fresh_dir / name), pd.read_csv(reference_dir / name)
    if any(present):
        notes.append({"table": name, "row": "", "column": "",
                      "verdict": f"file {MISSING_IN_FRESH if present[1] else MISSING_IN_REFERENCE}"})
    return None


def compare_folders(fresh_dir: Path, reference_dir: Path) -> pd.DataFrame:
    """Every compared number of the tables in `fresh_dir` against `reference_dir` (both
    ``paper_results/<run>/`` folders): one row each, with the columns `COLUMNS`. A table
    one run lacks gives one row whose verdict is ``file missing in fresh`` (or reference);
    an ``ablation_*_paired.csv`` without the paired columns is skipped."""
    fresh_dir, reference_dir = Path(fresh_dir), Path(reference_dir)
    notes: list[dict] = []
    parts = []
    both = _read("main_runs.csv", fresh_dir, reference_dir, notes)  # main_table.csv's runs, one line each
    if both:
        parts.append(_verdicts("main_table.csv", *_main_table(*both)))
    paired = {"paired_differences.csv"} | {p.name for d in (fresh_dir, reference_dir)
                                           for p in d.glob("ablation_*_paired.csv")}
    for name in sorted(paired):
        both = _read(name, fresh_dir, reference_dir, notes)
        long = _paired(*both) if both else None
        if long:
            parts.append(_verdicts(name, *long))
    for name, keys in PLAIN_TABLES.items():
        both = _read(name, fresh_dir, reference_dir, notes)
        long = _plain(*both, keys) if both else None
        if long:
            parts.append(_verdicts(name, *long))
    if notes:
        parts.append(pd.DataFrame(notes, columns=COLUMNS))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def summarise(comparison: pd.DataFrame, shown: int = 10) -> tuple[pd.DataFrame, str]:
    """Counts per table and verdict, and a short text: the totals, that table, the numbers
    outside their interval (up to `shown`) and the largest relative difference without one."""
    counts = pd.crosstab(comparison["table"], comparison["verdict"])
    totals = comparison["verdict"].value_counts()
    lines = [f"{len(comparison)} numbers compared: "
             + ", ".join(f"{totals[v]} {v}" for v in totals.index) + ".", counts.to_string(), ""]
    outside = comparison[comparison["verdict"] == OUTSIDE]
    for _, r in outside.head(shown).iterrows():
        lines.append(f"outside: {r['table']} {r['row']} {r['column']}: {r['fresh']:.6g} not in "
                     f"[{r['reference_low']:.6g}, {r['reference_high']:.6g}] (reference {r['reference']:.6g})")
    if len(outside) > shown:
        lines.append(f"... and {len(outside) - shown} more outside")
    plain = comparison[comparison["verdict"] == NO_INTERVAL]["relative_difference"].abs()
    if plain.notna().any():
        r = comparison.loc[plain.idxmax()]
        lines.append(f"largest relative difference without an interval: {plain.max():.3g} "
                     f"({r['table']} {r['row']} {r['column']}: {r['fresh']:.6g} vs {r['reference']:.6g})")
    return counts, "\n".join(lines).rstrip()


def run_folder(name: str) -> Path:
    """``paper_results/<name>/`` of an existing run; exits with a one-line error otherwise.
    (Not `paths.results_dir`, which would create it.)"""
    folder = paths.output_root() / "paper_results" / name
    if not folder.is_dir():
        raise SystemExit(f"no run to compare: {folder} does not exist")
    return folder


def compare_runs(fresh: str, reference: str) -> Path:
    """Compare run `fresh` with run `reference`, write
    ``paper_results/<fresh>/comparison_to_<reference>.csv``, print the summary; returns the path."""
    fresh_dir = run_folder(fresh)
    comparison = compare_folders(fresh_dir, run_folder(reference))
    path = fresh_dir / f"comparison_to_{reference}.csv"
    comparison.to_csv(path, index=False)
    print(f"\n=== {fresh} compared with {reference} (95 % intervals of {reference})\n{summarise(comparison)[1]}\n"
          f"Every number: {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fresh", help="the run to check (a folder name under paper_results/)")
    parser.add_argument("reference", help="the run to check it against, e.g. demo")
    args = parser.parse_args(argv)
    compare_runs(args.fresh, args.reference)


if __name__ == "__main__":
    main()
