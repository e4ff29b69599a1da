"""Figures of the data (notebook 01): images per class and split, and each class's colour.

    >>> fig = figures.class_distribution(dataset.class_counts(bundle))
    >>> fig = figures.colour_profile(train.images, train.labels, bundle.class_names)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..plots import style
from .sources import SPLITS

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def class_distribution(counts: pd.DataFrame) -> plt.Figure:
    """Images per class and split (left) and each class's share of its split (right):
    a stratified split shows the same shares in every split."""
    style()
    long = counts[list(SPLITS)].reset_index().melt(id_vars="class", var_name="split", value_name="images")
    long["share (%)"] = long["images"] / long.groupby("split")["images"].transform("sum") * 100
    height = 0.45 * len(counts) + 1.2
    fig, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    for ax, value in zip(axes, ("images", "share (%)")):
        sns.barplot(long, y="class", x=value, hue="split", palette=SPLIT_COLOURS, ax=ax, orient="h")
        ax.set_ylabel("")
        ax.legend_.remove()
    for container in axes[0].containers:
        axes[0].bar_label(container, fontsize=7, padding=2)
    handles, labels = axes[0].get_legend_handles_labels()
    totals = counts[list(SPLITS)].sum()
    labels = [f"{s} ({totals[s]})" for s in labels]
    fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.55, 1.03))
    fig.suptitle("Class distribution per split", y=1.08, fontweight="bold")
    fig.tight_layout()
    return fig


def colour_profile(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> plt.Figure:
    """Per class: the mean image, and the distribution of each image's mean R, G and B.
    Stain colour is what separates many tissue classes, and what a generator must keep."""
    style()
    rows = len(class_names)
    fig, axes = plt.subplots(
        rows, 2, figsize=(8, 0.75 * rows + 0.8), gridspec_kw={"width_ratios": [1, 7], "wspace": 0.04}
    )
    image_means = images.reshape(len(images), -1, 3).mean(axis=1)
    bins = np.linspace(0, 255, 65)
    channels = (("R", "#d62728"), ("G", "#2ca02c"), ("B", "#1f77b4"))
    for row, name in enumerate(class_names):
        members = labels == row
        mean_ax, hist_ax = axes[row]
        if members.any():
            mean_ax.imshow(images[members].mean(axis=0).astype(np.uint8), interpolation="nearest")
            for channel, (letter, colour) in enumerate(channels):
                values = image_means[members, channel]
                hist_ax.hist(values, bins=bins, color=colour, alpha=0.25, label=letter)
                hist_ax.hist(values, bins=bins, color=colour, histtype="step", linewidth=1.2)
        mean_ax.set_xticks([])
        mean_ax.set_yticks([])
        mean_ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        hist_ax.set_yticks([])
        hist_ax.set_xlim(0, 255)
        if row < rows - 1:
            hist_ax.set_xticklabels([])
    axes[0, 0].set_title("mean\nimage", fontsize=8)
    axes[0, 1].set_title("each image's mean intensity per channel", fontsize=9)
    axes[0, 1].legend(loc="upper left", ncol=3, fontsize=8, frameon=False)
    axes[-1, 1].set_xlabel("intensity (0-255)")
    fig.subplots_adjust(hspace=0.12)
    return fig
