"""The evaluation's tables: runs summarised per row and network (mean, std over seeds and,
given the data, a 95 % interval of the mean from a bootstrap over runs and test images),
written as CSV, markdown and LaTeX, and the test confusion and per-class accuracy of a row's
models.

    >>> summary = tables.summarise_runs(runs, bundle=bundle)   # one line per (row, network)
    >>> tables.write_tables(summary, "main_table", run_name)   # paper_results/<run>/main_table.*
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..classifiers import metrics
from ..data.dataset import DataBundle
from .comparisons import row_intervals
from .evaluation import model_artifact, test_probabilities


def summarise_runs(runs: pd.DataFrame, by: tuple[str, ...] = ("row", "network"), bundle: DataBundle | None = None,
                   cache_root: Path | None = None) -> pd.DataFrame:
    """Mean and sample std over seeds of acc/auc/macro_f1 per group, in the order groups
    first appear; with the number of runs and the images per class. Given the `bundle` the
    runs were tested on, also `<metric>_low` and `<metric>_high`: the 95 % interval of the
    mean (`comparisons.row_intervals`, over runs and test images, from the stored test
    probabilities); groups are then `by[0]` and network."""
    rows = []
    for group, part in runs.groupby(list(by), sort=False):
        stats = metrics.summarise(part.to_dict("records"))
        group = group if isinstance(group, tuple) else (group,)
        rows.append({**dict(zip(by, group)), "ipc": int(part["ipc"].iloc[0]), **stats})
    summary = pd.DataFrame(rows)
    if bundle is None:
        return summary
    if tuple(by[1:]) != ("network",):
        raise ValueError(f"intervals are computed per group and network; group by (name, 'network'), not {by}")
    intervals = row_intervals(runs, bundle, by=by[0], cache_root=cache_root)
    wide = intervals.pivot(index=[by[0], "network"], columns="metric", values=["low", "high"])
    wide.columns = [f"{metric}_{bound}" for bound, metric in wide.columns]
    ordered = [f"{k}_{bound}" for k in metrics.SUMMARY_METRICS for bound in ("low", "high")]
    return summary.merge(wide[ordered].reset_index(), on=[by[0], "network"], how="left")


def display_table(summary: pd.DataFrame, index: str = "row", digits: int = 3) -> pd.DataFrame:
    """One line per `index` value: the IPC, any descriptive columns (an ablation's
    parameters), then a column per (network, metric) reading "mean [low, high]" (the 95 %
    interval) where the summary has intervals, "mean ± std" where it has not."""
    first = summary.drop_duplicates(index).set_index(index)
    standard = {"network", "ipc", "n_runs"} | {f"{k}_{s}" for k, _ in metrics.METRIC_LABELS
                                              for s in ("mean", "std", "low", "high")}
    extra = [c for c in first.columns if c not in standard]
    table = pd.DataFrame({("", "IPC"): first["ipc"]})
    for column in extra:
        values = first[column]
        table[("", column)] = values.round(digits) if pd.api.types.is_float_dtype(values) else values
    for network, part in summary.groupby("network", sort=False):
        part = part.set_index(index)
        for key, label in metrics.METRIC_LABELS:
            if f"{key}_low" in part:
                cells = [metrics.format_interval(m, lo, hi, digits)
                         for m, lo, hi in zip(part[f"{key}_mean"], part[f"{key}_low"], part[f"{key}_high"])]
            else:
                cells = [metrics.format_mean_std(m, s, digits) for m, s in zip(part[f"{key}_mean"], part[f"{key}_std"])]
            table[(network, label)] = pd.Series(cells, index=part.index)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def table_note(summary: pd.DataFrame) -> str:
    """What the cells of `display_table` are, to print under it."""
    if "acc_low" in summary:
        return (f"Mean over runs on test [95 % interval: {metrics.ROW_BOOTSTRAP_METHOD}]; "
                f"runs per line: {_runs_per_line(summary)}.")
    return f"Mean ± sample std over runs on test; runs per line: {_runs_per_line(summary)}."


def _runs_per_line(summary: pd.DataFrame) -> str:
    counts = sorted(set(int(n) for n in summary["n_runs"]))
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]} (the csv's n_runs)"


def write_tables(summary: pd.DataFrame, name: str, run_name: str, index: str = "row") -> list[Path]:
    """``paper_results/<run>/<name>.csv`` (every number, long form), ``.md`` and ``.tex``
    (`display_table`: mean and 95 % interval, or mean ± std, per network and metric; the
    markdown says which under the table)."""
    folder = paths.results_dir(run_name)
    summary.to_csv(folder / f"{name}.csv", index=False)
    shown = display_table(summary, index)
    flat = shown.copy()
    flat.columns = [" ".join(c for c in col if c) for col in shown.columns]
    (folder / f"{name}.md").write_text(flat.to_markdown() + "\n\n" + table_note(summary) + "\n")
    latex = flat.rename(columns=lambda c: c.replace("±", "$\\pm$"))
    latex = latex.map(lambda v: str(v).replace("±", "$\\pm$"))
    (folder / f"{name}.tex").write_text(latex.to_latex(escape=False) + "\n")
    return [folder / f"{name}.{ext}" for ext in ("csv", "md", "tex")]


def pooled_confusion(runs: pd.DataFrame, bundle: DataBundle, cache_root: Path | None = None) -> np.ndarray:
    """Test confusion matrix (true x predicted), summed over the models in `runs`."""
    from sklearn.metrics import confusion_matrix

    labels = bundle.splits["test"].labels
    total = np.zeros((bundle.n_classes, bundle.n_classes), np.int64)
    for key in runs["model_key"]:
        predicted = test_probabilities(model_artifact(key, cache_root)).argmax(1)
        total += confusion_matrix(labels, predicted, labels=np.arange(bundle.n_classes))
    return total


def per_class_accuracy(runs: pd.DataFrame, bundle: DataBundle, cache_root: Path | None = None) -> pd.DataFrame:
    """Per row and class, the test accuracy (recall) averaged over the row's models."""
    out = {}
    for row, part in runs.groupby("row", sort=False):
        confusion = pooled_confusion(part, bundle, cache_root)
        out[row] = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
    return pd.DataFrame(out, index=pd.Index(bundle.class_names, name="class"))
