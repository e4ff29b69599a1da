"""Which differences between training sets are real: paired comparisons with intervals.

    >>> table = comparisons.paired_differences(model_runs, bundle, reference="InfoDist (CE)")
    >>> comparisons.write_paired(table, "paired_differences", run_name)   # csv + md
    >>> intervals = comparisons.row_intervals(model_runs, bundle)  # each row's mean with its interval

Run i of every row trains at the same seed, so two rows are compared run by run: the mean
difference on test and a 95 % interval from `metrics.paired_bootstrap`, which resamples the
runs and the test images. The main table (notebook 05) compares every row with InfoDist
(CE); each ablation (notebook 06) compares its variants with a reference variant. Each row's
own mean gets an interval the same way (`row_intervals`, `metrics.bootstrap_mean`): that is
what the tables and bar charts show beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..classifiers import metrics
from ..classifiers.metrics import METRIC_LABELS
from ..data.dataset import DataBundle
from .evaluation import model_artifact, test_probabilities


def _probabilities(keys, cache_root: Path | None) -> np.ndarray:
    """(runs, test images, classes): the stored test probabilities of these models."""
    return np.stack([test_probabilities(model_artifact(k, cache_root)) for k in keys])


PAIRED_COLUMNS = ["network", "metric", "reference", "n_runs", "n_test", "diff", "low", "high", "excludes_zero"]


def paired_differences(runs: pd.DataFrame, bundle: DataBundle, reference: str | dict[str, str], by: str = "row",
                       n_boot: int = 2000, level: float = 0.95, cache_root: Path | None = None) -> pd.DataFrame:
    """Groups of `runs` (by `by`: a row or an ablation variant) against a reference group,
    per network and metric: the mean paired difference (group - reference) on test and its
    confidence interval from `metrics.paired_bootstrap` (runs paired by seed; the method is
    `metrics.BOOTSTRAP_METHOD`). `reference` names one group that every other is compared
    with, or maps each compared group to its own reference. Runs whose seed the reference
    lacks are left out. ``excludes_zero``: the interval does not hold 0."""
    labels = bundle.splits["test"].labels
    groups = list(dict.fromkeys(runs[by]))
    pairs = reference if isinstance(reference, dict) else {g: reference for g in groups if g != reference}
    rows = []
    for network, part in runs.groupby("network", sort=False):
        for group, ref_name in pairs.items():
            ref = part[part[by] == ref_name].set_index("seed")
            other = part[part[by] == group].set_index("seed")
            if ref.empty or other.empty:
                continue
            seeds = [s for s in other.index if s in ref.index]
            if not seeds:
                continue
            result = metrics.paired_bootstrap(_probabilities(other.loc[seeds, "model_key"], cache_root),
                                              _probabilities(ref.loc[seeds, "model_key"], cache_root),
                                              labels, n_boot=n_boot, level=level)
            for metric, r in result.items():
                rows.append({by: group, "network": network, "metric": metric, "reference": ref_name, **r,
                             "excludes_zero": bool(r["low"] > 0 or r["high"] < 0)})
    return pd.DataFrame(rows, columns=[by] + PAIRED_COLUMNS)


INTERVAL_COLUMNS = ["network", "metric", "n_runs", "n_test", "mean", "low", "high"]


def row_intervals(runs: pd.DataFrame, bundle: DataBundle, by: str = "row", n_boot: int = 2000, level: float = 0.95,
                  cache_root: Path | None = None) -> pd.DataFrame:
    """Each group of `runs` (a row or an ablation variant) per network and metric: the mean
    over its runs on test and a confidence interval from `metrics.bootstrap_mean`, which
    resamples the runs and the test images (`metrics.ROW_BOOTSTRAP_METHOD`). A group of one
    run gets the test set's noise only."""
    labels = bundle.splits["test"].labels
    rows = []
    for (group, network), part in runs.groupby([by, "network"], sort=False):
        result = metrics.bootstrap_mean(_probabilities(part["model_key"], cache_root), labels, n_boot=n_boot,
                                        level=level)
        rows += [{by: group, "network": network, "metric": metric, **r} for metric, r in result.items()]
    return pd.DataFrame(rows, columns=[by] + INTERVAL_COLUMNS)


def format_difference(diff: float, low: float, high: float, digits: int = 3) -> str:
    """'+0.029 [-0.012, +0.070]': a difference and its interval."""
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def paired_markdown(table: pd.DataFrame, by: str = "row") -> str:
    """`paired_differences` as markdown: one column per network and metric, "difference
    [interval]", with the method stated under the table."""
    shown = table.assign(value=[format_difference(d, lo, hi) for d, lo, hi in zip(table["diff"], table["low"], table["high"])])
    labels = dict(METRIC_LABELS)
    shown["column"] = [f"{network} {labels.get(metric, metric)}" for network, metric in zip(shown["network"], shown["metric"])]
    wide = shown.pivot(index=by, columns="column", values="value")
    wide = wide.reindex(index=list(dict.fromkeys(shown[by])), columns=list(dict.fromkeys(shown["column"])))
    references = list(dict.fromkeys(table["reference"]))
    against = references[0] if len(references) == 1 else "each line's reference (the csv's `reference` column)"
    note = (f"Difference to {against} (line minus reference) on test, mean over paired runs, with a 95 % "
            f"interval: {metrics.BOOTSTRAP_METHOD}.")
    return wide.to_markdown() + "\n\n" + note + "\n"


def write_paired(table: pd.DataFrame, name: str, run_name: str, by: str = "row") -> list[Path]:
    """``paper_results/<run>/<name>.csv`` (every number) and ``.md`` (`paired_markdown`)."""
    folder = paths.results_dir(run_name)
    table.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.md").write_text(paired_markdown(table, by))
    return [folder / f"{name}.{ext}" for ext in ("csv", "md")]
