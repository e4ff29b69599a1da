"""Figures shared by the notebooks, and how they are saved."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import paths
from .data.sources import SPLITS

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)


def save(fig: plt.Figure, name: str, run_name: str) -> None:
    """Write `fig` to ``figures/<run_name>/<name>.png`` (and say where)."""
    path = paths.figures_dir(run_name) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white")
    print(f"saved {_shown(path)}")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(paths.output_root()))
    except ValueError:
        return str(path)


def save_table(table: pd.DataFrame, name: str, run_name: str) -> Path:
    """Write `table` to ``paper_results/<run_name>/<name>.csv`` and return the path."""
    path = paths.results_dir(run_name) / f"{name}.csv"
    table.to_csv(path)
    return path


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


def tile(rows: list[list[np.ndarray]], size: int, columns: int, gap: int | None = None,
         split_after: int | None = None) -> np.ndarray:
    """One white-separated uint8 grid from rows of (size, size, 3) images; a wider gap
    after column `split_after` separates two groups (e.g. real | synthetic)."""
    gap = max(1, size // 14) if gap is None else gap
    wide = 3 * gap if split_after else 0
    width = columns * (size + gap) - gap + wide
    grid = np.full((len(rows) * (size + gap) - gap, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row[:columns]):
            y = r * (size + gap)
            x = c * (size + gap) + (wide if split_after and c >= split_after else 0)
            grid[y : y + size, x : x + size] = image
    return grid


def show_grid(grid: np.ndarray, row_names: list[str], size: int, gap: int | None = None,
              title: str = "", cell_inches: float = 0.62) -> plt.Figure:
    """A tiled grid with one label per row and no axes clutter."""
    style()
    gap = max(1, size // 14) if gap is None else gap
    rows = len(row_names)
    columns = grid.shape[1] / (size + gap)
    fig, ax = plt.subplots(figsize=(cell_inches * columns + 2.6, cell_inches * rows + 0.6))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([r * (size + gap) + size / 2 for r in range(rows)], row_names)
    ax.set_xticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontweight="bold", pad=22)
    fig.tight_layout()
    return fig


def pick_per_class(labels: np.ndarray, n_classes: int, per_class: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded random indices, up to `per_class` of each class (fewer when it has fewer)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        out.append(np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)) if len(idx) else idx)
    return out


def class_montage(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    per_class: int = 10,
    seed: int = 0,
    title: str = "",
) -> plt.Figure:
    """A grid with one row of randomly drawn (seeded) examples per class."""
    size = images.shape[1]
    picks = pick_per_class(labels, len(class_names), per_class, seed)
    grid = tile([[images[i] for i in idx] for idx in picks], size, per_class)
    return show_grid(grid, class_names, size, title=title)


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
