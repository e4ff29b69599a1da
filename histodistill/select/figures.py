"""Figures of the selection: communities per class, a map of one class's pool, and the
distilled set itself."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.manifold import TSNE

from ..plots import style


def community_sizes(nodes: pd.DataFrame, class_names: list[str]) -> plt.Figure:
    """Per class, its Infomap modules as one stacked bar (largest first), and how many
    images each contributed to the selection (darker part)."""
    style()
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(class_names) + 1.2))
    palette = sns.color_palette("tab10", 10)  # unpaired hues: neighbours never look alike
    for row, name in enumerate(class_names):
        part = nodes[nodes["label"] == row]
        modules = part.groupby("module").agg(size=("node", "size"), chosen=("selected", "sum"))
        modules = modules.sort_values("size", ascending=False)
        left = 0
        for i, (size, chosen) in enumerate(zip(modules["size"], modules["chosen"])):
            colour = palette[i % 10]
            ax.barh(row, size, left=left, color=colour, alpha=0.35, edgecolor="white", linewidth=0.6)
            ax.barh(row, chosen, left=left, color=colour, edgecolor="white", linewidth=0.6)
            left += size
        ax.text(left + 2, row, f"{len(modules)} modules", va="center", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.invert_yaxis()
    ax.set_xlabel("pool images (each colour one Infomap module, largest first; dark: selected)")
    ax.set_title("Infomap communities per class and the selection's share of each", fontweight="bold")
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return fig


def community_map(features: np.ndarray, modules: np.ndarray, selected: np.ndarray, title: str,
                  seed: int = 0) -> plt.Figure:
    """A 2-D t-SNE map of one class's pool: colour = Infomap module, stars = selected."""
    style()
    perplexity = float(min(30, max(2, len(features) // 4)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    ids = pd.factorize(modules)[0]
    palette = np.array(sns.color_palette("tab20", 20))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.scatter(xy[:, 0], xy[:, 1], c=palette[ids % 20], s=18, alpha=0.75, linewidths=0)
    ax.scatter(xy[selected, 0], xy[selected, 1], c=palette[ids[selected] % 20], s=170, marker="*",
               edgecolors="black", linewidths=0.9, label="selected")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE of the ConvNet features (colour: Infomap module)")
    ax.legend(loc="best", frameon=True, fontsize=8)
    ax.set_title(title, fontweight="bold", fontsize=10)
    fig.tight_layout()
    return fig
