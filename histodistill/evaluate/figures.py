"""Figures of the downstream evaluation (notebook 05) and the ablations (notebook 06)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..classifiers.metrics import METRIC_LABELS
from ..plots import style
from .evaluation import REAL_ROWS

NETWORK_NAMES = {"convnet": "ConvNet", "resnet18": "ResNet-18"}


def whiskers(summary: pd.DataFrame, key: str) -> tuple[np.ndarray, str]:
    """Error bars of metric `key` around its mean, (2, n) below/above: the 95 % interval
    where the summary has one (`tables.summarise_runs` given the data), else the std; and
    what they are, for a caption."""
    mean = summary[f"{key}_mean"].to_numpy(float)
    if f"{key}_low" in summary:
        low, high = summary[f"{key}_low"].to_numpy(float), summary[f"{key}_high"].to_numpy(float)
        return np.vstack([mean - low, high - mean]), "95 % interval over runs and test images"
    std = np.nan_to_num(summary[f"{key}_std"].to_numpy(float))
    return np.vstack([std, std]), "std over seeds"


def main_results(summary: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per metric, one horizontal bar per row and network (mean over seeds; whiskers: the
    95 % interval of the mean, or the std where the summary has no intervals). Real-data rows
    are hatched: they are references, not data a hospital could share."""
    style()
    rows = list(dict.fromkeys(summary["row"]))
    networks = list(dict.fromkeys(summary["network"]))
    palette = dict(zip(networks, sns.color_palette("deep", len(networks))))
    fig, axes = plt.subplots(1, len(METRIC_LABELS), figsize=(4.2 * len(METRIC_LABELS), 0.55 * len(rows) + 1.6),
                             sharey=True)
    height = 0.8 / len(networks)
    for ax, (key, label) in zip(axes, METRIC_LABELS):
        for j, network in enumerate(networks):
            part = summary[summary["network"] == network].set_index("row").reindex(rows)
            y = np.arange(len(rows)) + (j - (len(networks) - 1) / 2) * height
            error, meaning = whiskers(part, key)
            bars = ax.barh(y, part[f"{key}_mean"], height=height * 0.92, xerr=error,
                           color=palette[network], label=NETWORK_NAMES.get(network, network),
                           error_kw={"elinewidth": 1, "capsize": 2})
            for bar, row in zip(bars, rows):
                if row in REAL_ROWS:
                    bar.set_hatch("//")
                    bar.set_edgecolor("white")
        ax.set_title(label, fontweight="bold")
        ax.set_xlim(0, 1)
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(range(len(rows)), rows)
    axes[0].invert_yaxis()
    axes[-1].legend(loc="lower right", fontsize=8, frameon=True)
    fig.suptitle(title or f"Test metrics per training set (mean over seeds; whiskers: {meaning}; hatched: real data)",
                 fontweight="bold")
    fig.tight_layout()
    return fig


def paired_differences(table: pd.DataFrame, by: str = "row", title: str = "") -> plt.Figure:
    """Per metric, each line's paired difference to its reference (`comparisons.paired_differences`)
    with its 95 % interval, one marker per network; the zero line is "no difference"."""
    style()
    groups = list(dict.fromkeys(table[by]))
    networks = list(dict.fromkeys(table["network"]))
    palette = dict(zip(networks, sns.color_palette("deep", len(networks))))
    metrics_shown = [(k, label) for k, label in METRIC_LABELS if k in set(table["metric"])]
    fig, axes = plt.subplots(1, len(metrics_shown), figsize=(4.4 * len(metrics_shown), 0.5 * len(groups) + 1.8),
                             sharey=True, squeeze=False)
    offset = 0.6 / max(1, len(networks))
    for ax, (key, label) in zip(axes[0], metrics_shown):
        for j, network in enumerate(networks):
            part = table[(table["network"] == network) & (table["metric"] == key)].set_index(by).reindex(groups)
            y = np.arange(len(groups)) + (j - (len(networks) - 1) / 2) * offset
            ax.errorbar(part["diff"], y, xerr=[part["diff"] - part["low"], part["high"] - part["diff"]], fmt="o",
                        color=palette[network], capsize=2, elinewidth=1.2, markersize=4,
                        label=NETWORK_NAMES.get(network, network))
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{label} difference", fontweight="bold")
        ax.grid(axis="y", visible=False)
    axes[0][0].set_yticks(range(len(groups)), groups)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(loc="lower right", fontsize=8, frameon=True)
    references = list(dict.fromkeys(table["reference"]))
    against = references[0] if len(references) == 1 else "its reference"
    fig.suptitle(title or f"Difference to {against} on test (paired runs; whiskers: 95 % bootstrap interval)",
                 fontweight="bold")
    fig.tight_layout()
    return fig


def confusion(matrix: np.ndarray, class_names: list[str], title: str) -> plt.Figure:
    """A test confusion matrix, each true class's row as shares (annotated in %)."""
    style()
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.3))
    sns.heatmap(shares * 100, annot=True, fmt=".0f", cmap="rocket_r", vmin=0, vmax=100, square=True,
                xticklabels=class_names, yticklabels=class_names, cbar_kws={"label": "% of the true class"}, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontweight="bold")
    fig.tight_layout()
    return fig


def per_class_accuracy(table: pd.DataFrame, highlight: str) -> plt.Figure:
    """Test accuracy per class (rows: classes) for every training set, `highlight` drawn large."""
    style()
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(table) + 1.5))
    palette = sns.color_palette("tab10", len(table.columns))
    y = np.arange(len(table))
    for colour, column in zip(palette, table.columns):
        big = column == highlight
        ax.scatter(table[column], y, s=140 if big else 45, color=colour, label=column, zorder=3 if big else 2,
                   edgecolor="black" if big else "none", marker="D" if big else "o")
    ax.set_yticks(y, table.index)
    ax.invert_yaxis()
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("test accuracy of the class (mean over the row's models)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.set_title(f"Per-class accuracy: {highlight} (diamonds) against the other training sets", fontweight="bold")
    fig.tight_layout()
    return fig


def ablation(summary: pd.DataFrame, x: str, title: str, hue: str | None = None, log_x: bool = False,
             reference: pd.Series | None = None) -> plt.Figure:
    """ACC and AUC (mean over seeds; whiskers: `whiskers`, the 95 % interval where the summary
    has one) against `x`: lines when `x` is numeric, bars otherwise; one colour per `hue`
    value. `reference` (a summary row) is drawn as a dashed line, e.g. the main table's
    InfoDist result."""
    style()
    numeric = pd.api.types.is_numeric_dtype(summary[x])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8 if numeric else 0.45 * summary[x].nunique() + 1.8))
    groups = list(summary.groupby(hue, sort=False)) if hue else [("", summary)]
    palette = sns.color_palette("deep", len(groups))
    span = (float(np.ptp(summary[x].to_numpy(float))) or 1.0) if numeric else 0.0  # of x, for the side-by-side shift
    for ax, (key, label) in zip(axes, METRIC_LABELS[:2]):
        for j, (colour, (name, part)) in enumerate(zip(palette, groups)):
            mean, (error, meaning) = part[f"{key}_mean"].to_numpy(), whiskers(part, key)
            if numeric:
                # Groups at one x side by side, so that their whiskers do not hide each other.
                shift = j - (len(groups) - 1) / 2
                at = part[x].to_numpy(float)
                at = at * 1.06**shift if log_x else at + 0.015 * span * shift
                ax.errorbar(at, mean, yerr=error, marker="o", capsize=3, color=colour, label=name or None)
            else:
                positions = np.arange(len(part))
                ax.barh(positions, mean, xerr=error, color=colour, error_kw={"capsize": 2})
                ax.set_yticks(positions, part[x])
                ax.invert_yaxis()
        if reference is not None:
            line = ax.axhline if numeric else ax.axvline
            line(reference[f"{key}_mean"], color="grey", linestyle="--", linewidth=1)
        if numeric:
            ax.set_xlabel(x)
            ax.set_ylabel(f"test {label}")
            if log_x:
                ax.set_xscale("log")
                ax.minorticks_off()
                ax.set_xticks(sorted(summary[x].unique()), [f"{v:g}" for v in sorted(summary[x].unique())])
            # No fixed 0..1 range: the differences are small, and the whiskers show the noise.
        else:
            ax.set_xlabel(f"test {label}")
            ax.set_xlim(0, 1)
            ax.grid(axis="y", visible=False)
        ax.set_title(label, fontweight="bold")
    if hue:
        axes[-1].legend(title=hue, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{title}\n(whiskers: {meaning})", fontweight="bold")
    fig.tight_layout()
    return fig


def loss_curve(losses: pd.DataFrame, title: str) -> plt.Figure:
    """A per-iteration loss (e.g. Distribution Matching's), raw and smoothed."""
    style()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(losses.iloc[:, 0], losses["loss"], alpha=0.3, linewidth=0.8)
    window = max(1, len(losses) // 20)
    ax.plot(losses.iloc[:, 0], losses["loss"].rolling(window, min_periods=1).mean(), linewidth=2)
    ax.set_yscale("log")
    ax.set_xlabel(losses.columns[0])
    ax.set_ylabel("matching loss")
    ax.set_title(title, fontweight="bold")
    fig.tight_layout()
    return fig


def training_budget(curve: pd.DataFrame, history: pd.DataFrame, picks: dict[str, int], steps: int) -> plt.Figure:
    """Left: val accuracy at the end of training against the step budget (mean ± std over
    runs), the rule's pick ringed, the run's budget dotted. Right: within the longest
    budget, val accuracy along the way, one thin line per run."""
    style()
    networks = list(dict.fromkeys(curve["network"]))
    palette = dict(zip(networks, sns.color_palette("deep", len(networks))))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for network in networks:
        part = curve[curve["network"] == network].sort_values("budget")
        name = NETWORK_NAMES.get(network, network)
        left.errorbar(part["budget"], part["val_acc_mean"], yerr=part["val_acc_std"].fillna(0), marker="o",
                      capsize=3, color=palette[network], label=name)
        chosen = part[part["budget"] == picks[network]]
        left.scatter(chosen["budget"], chosen["val_acc_mean"], s=220, facecolors="none",
                     edgecolors=palette[network], linewidths=2)
        longest = history[(history["network"] == network) & (history["budget"] == history["budget"].max())]
        for k, (_, run) in enumerate(longest.groupby("seed")):
            right.plot(run["step"], run["val_acc"], color=palette[network], alpha=0.7, linewidth=1,
                       label=name if k == 0 else None)
    budgets = sorted(curve["budget"].unique())
    left.set_xscale("log")
    left.minorticks_off()
    left.set_xticks(budgets, [f"{b:g}" for b in budgets])
    for ax in (left, right):
        ax.axvline(steps, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("training steps")
        ax.set_ylabel("val accuracy")
    left.set_title("Val accuracy at the end of each budget (ringed: the rule's pick)", fontweight="bold", fontsize=10)
    right.set_title(f"Along the longest budget ({max(budgets)} steps); dotted: this run's", fontweight="bold",
                    fontsize=10)
    left.legend(fontsize=8, frameon=False)
    fig.suptitle("Training budget of every row, checked on val (InfoDist (CE) sets)", fontweight="bold")
    fig.tight_layout()
    return fig
