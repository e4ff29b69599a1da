"""Figures of the generative half: training curves, reconstructions, and how the synthetic
pool compares with the real images (fidelity, class consistency, copying)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..plots import ACCENT, FLOOR, REAL, SYNTH, pick_per_class, show_grid, style, tile


def loss_curves(curves: dict[str, pd.DataFrame], smooth: int = 50) -> plt.Figure:
    """One panel per named loss history (columns: step and one or more losses); the raw
    loss faint, a running mean over `smooth` steps on top, log scale."""
    style()
    panels = {name: df for name, df in curves.items() if len(df)}
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (name, df) in zip(axes[0], panels.items()):
        for column, colour in zip([c for c in df.columns if c not in ("step", "lr", "seconds")], sns.color_palette()):
            window = max(1, min(smooth, len(df) // 10))
            ax.plot(df["step"], df[column], color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(df["step"], df[column].rolling(window, min_periods=1).mean(), color=colour,
                    linewidth=1.8, label=f"{column} (mean of {window})")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(name, fontweight="bold")
        ax.legend(frameon=False, fontsize=8)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no training history (pretrained model)", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    return fig


def reconstructions(real: np.ndarray, recon: np.ndarray, labels: np.ndarray, class_names: list[str],
                    per_class: int = 4, seed: int = 0, title: str = "") -> plt.Figure:
    """Per class, `per_class` real val images (left) next to their reconstructions (right)."""
    size = real.shape[1]
    picks = pick_per_class(labels, len(class_names), per_class, seed)
    rows = [[real[i] for i in idx] + [recon[i] for i in idx] for idx in picks]
    grid = tile(rows, size, 2 * per_class, split_after=per_class)
    fig = show_grid(grid, class_names, size, title=title)
    _group_labels(fig.axes[0], grid, ("real (val)", "reconstruction"))
    return fig


def real_vs_synthetic(real: np.ndarray, real_labels: np.ndarray, synth: np.ndarray, synth_labels: np.ndarray,
                      class_names: list[str], per_class: int = 6, seed: int = 0, title: str = "") -> plt.Figure:
    """Per class, random real train images (left) beside random synthetic ones (right)."""
    size = real.shape[1]
    real_picks = pick_per_class(real_labels, len(class_names), per_class, seed)
    synth_picks = pick_per_class(synth_labels, len(class_names), per_class, seed)
    rows = [[real[i] for i in r] + [None] * (per_class - len(r)) + [synth[i] for i in s]
            for r, s in zip(real_picks, synth_picks)]
    grid = tile([[im if im is not None else np.full((size, size, 3), 255, np.uint8) for im in row] for row in rows],
                size, 2 * per_class, split_after=per_class)
    fig = show_grid(grid, class_names, size, title=title)
    _group_labels(fig.axes[0], grid, ("real (train)", "synthetic (pool)"))
    return fig


def _group_labels(ax: plt.Axes, grid: np.ndarray, names: tuple[str, str]) -> None:
    width = grid.shape[1]
    for x, name in zip((0.25 * width, 0.75 * width), names):
        ax.text(x, -2, name, ha="center", va="bottom", fontsize=9, color="#444444")


def class_consistency(table: pd.DataFrame, confusion: pd.DataFrame) -> plt.Figure:
    """Left: the real-trained ConvNet's accuracy on the pool per class, next to its accuracy
    on real val (the ceiling). Right: which class it assigns to each class's pool images."""
    style()
    per_class = table[table["class"] != "mean over classes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * len(per_class) + 1.8),
                                      gridspec_kw={"width_ratios": [1, 1.15]})
    long = per_class.melt(id_vars="class", value_vars=["pool_accuracy", "val_accuracy"],
                          var_name="set", value_name="accuracy")
    long["set"] = long["set"].map({"pool_accuracy": "synthetic pool", "val_accuracy": "real val (ceiling)"})
    sns.barplot(long, y="class", x="accuracy", hue="set", palette=[SYNTH, REAL], ax=left, orient="h")
    mean = table.set_index("class").loc["mean over classes"]
    left.axvline(mean["pool_accuracy"], color=SYNTH, linestyle="--", linewidth=1)
    left.axvline(mean["val_accuracy"], color=REAL, linestyle="--", linewidth=1)
    left.set_xlim(0, 1.02)
    left.set_ylabel("")
    left.set_title(f"Class consistency: pool {mean['pool_accuracy']:.2f}, real val {mean['val_accuracy']:.2f} "
                   f"(dashed: means)", fontsize=10, fontweight="bold")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False, fontsize=8)
    shares = confusion.div(confusion.sum(axis=1).replace(0, 1), axis=0)
    sns.heatmap(shares, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=1, cbar=False, ax=right,
                annot_kws={"fontsize": 7}, yticklabels=False)
    right.set_xticklabels([str(i) for i in range(len(shares.columns))], rotation=0)
    right.set_xlabel("class predicted by the real-trained ConvNet (ids in the order on the left)")
    right.set_ylabel("")
    right.set_title("Where each class's pool images land", fontsize=10, fontweight="bold")
    fig.tight_layout()
    return fig


def pool_quality(table: pd.DataFrame) -> plt.Figure:
    """Fréchet distance, precision and recall per class: the pool against real val, and real
    train against real val (the floor two real samples reach)."""
    style()
    metrics = (("fd", "Fréchet distance (lower is better)"), ("precision", "precision"), ("recall", "recall"))
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.42 * len(table) + 1.6), sharey=True)
    for ax, (metric, label) in zip(axes, metrics):
        pool_col, floor_col = (("fd_pool_vs_val", "fd_train_vs_val") if metric == "fd"
                               else (f"{metric}_pool", f"{metric}_train"))
        long = table.melt(id_vars="class", value_vars=[pool_col, floor_col], var_name="set", value_name=label)
        long["set"] = long["set"].map({pool_col: "synthetic pool vs val", floor_col: "real train vs val (floor)"})
        sns.barplot(long, y="class", x=label, hue="set", palette=[SYNTH, FLOOR], ax=ax, orient="h")
        ax.set_ylabel("")
        ax.set_title(label, fontsize=10, fontweight="bold")
        if metric != "fd":
            ax.set_xlim(0, 1.02)
        if ax is not axes[0]:
            ax.legend_.remove()
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def memorisation(result: dict) -> plt.Figure:
    """Per space: each pool image's distance to its nearest real train image, against the
    same for real val images. Mass left of the dashed line (val's 1st percentile) would be
    pool images closer to the training data than unseen real images come."""
    style()
    spaces = list(result)
    fig, axes = plt.subplots(1, len(spaces), figsize=(6 * len(spaces), 3.4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        r = result[space]
        bins = np.histogram_bin_edges(np.concatenate([r["pool_distances"], r["val_distances"]]), 40)
        ax.hist(r["val_distances"], bins=bins, density=True, color=REAL, alpha=0.5, label="real val → train")
        ax.hist(r["pool_distances"], bins=bins, density=True, color=SYNTH, alpha=0.5, label="pool → train")
        ax.axvline(r["threshold"], color="black", linestyle="--", linewidth=1,
                   label=f"val {r['percentile']:g}st percentile")
        ax.set_title(f"{space}: {r['n_below']} of {len(r['pool_distances'])} pool images below the line",
                     fontsize=10, fontweight="bold")
        ax.set_xlabel("distance to the nearest real train image")
        ax.set_yticks([])
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def closest_pairs(pairs: list[tuple[int, int, float]], pool: np.ndarray, train: np.ndarray,
                  title: str = "") -> plt.Figure:
    """The closest synthetic/real pairs side by side, with their distance."""
    style()
    fig, axes = plt.subplots(2, len(pairs), figsize=(1.25 * len(pairs) + 0.8, 3.0), squeeze=False)
    for col, (p, t, dist) in enumerate(pairs):
        for row, image in enumerate((pool[p], train[t])):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(f"d = {dist:.3g}", fontsize=8)
    axes[0, 0].set_ylabel("synthetic", fontsize=9)
    axes[1, 0].set_ylabel("nearest\nreal train", fontsize=9)
    if title:
        fig.suptitle(title, fontweight="bold", fontsize=10)
    fig.tight_layout()
    return fig


def texture(table: pd.DataFrame, band: tuple[float, float] = (0.8, 1.25)) -> plt.Figure:
    """Per class, the pool's texture energy and pixel std as a share of real train's (1 is
    real-like; the shaded band is the tolerance the demo aims for)."""
    style()
    rows = table[table["class"] != "all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(rows) + 1.6), sharey=True)
    for ax, (column, label) in zip(axes, (("texture_ratio", "texture energy, pool / real"),
                                          ("pixel_std_ratio", "pixel std, pool / real"))):
        ax.axvspan(*band, color=REAL, alpha=0.12, linewidth=0)
        ax.axvline(1.0, color=REAL, linewidth=1)
        sns.barplot(rows, y="class", x=column, color=SYNTH, ax=ax, orient="h")
        ax.set_xlim(0, max(2.0, float(rows[column].max()) * 1.05))
        ax.set_xlabel(label)
        ax.set_ylabel("")
        ax.set_title(label, fontsize=10, fontweight="bold")
    fig.suptitle(f"Texture of the pool against real train (shaded: {band[0]:g}-{band[1]:g})", fontweight="bold")
    fig.tight_layout()
    return fig


def guidance_sweep(sweep: pd.DataFrame, chosen: tuple[str, float]) -> plt.Figure:
    """What each guidance scale and solver gives on real val and the pool: class consistency
    (against the judge's own val accuracy), Fréchet distance (against the real-train floor),
    precision/recall and texture range; one line style per solver, the chosen setting ringed."""
    style()
    solvers = list(dict.fromkeys(sweep["solver"]))
    dashes = {solver: ls for solver, ls in zip(solvers, ["-", "--", ":", "-."])}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    first = sweep.sort_values("guidance_scale")
    for solver in solvers:
        s = sweep[sweep["solver"] == solver].sort_values("guidance_scale")
        x, ls, tag = s["guidance_scale"], dashes[solver], f" ({solver})"
        axes[0].plot(x, s["consistency_mean"], "o" + ls, color=SYNTH, label="mean over classes" + tag)
        axes[0].plot(x, s["consistency_min"], "v" + ls, color=SYNTH, alpha=0.45, label="worst class" + tag)
        axes[1].plot(x, s["fd_pool_vs_val"], "o" + ls, color=SYNTH, label="pool vs val" + tag)
        axes[2].plot(x, s["precision"], "o" + ls, color=SYNTH, label="precision" + tag)
        axes[2].plot(x, s["recall"], "s" + ls, color=ACCENT, label="recall" + tag)
        axes[3].plot(x, s["texture_ratio_min"], "o" + ls, color=SYNTH, label="lowest class" + tag)
        axes[3].plot(x, s["texture_ratio_max"], "^" + ls, color=SYNTH, alpha=0.45, label="highest class" + tag)
    axes[0].axhline(float(first["judge_val_accuracy"].iloc[0]), color=REAL, linewidth=1, label="judge on real val")
    axes[1].axhline(float(first["fd_train_vs_val"].iloc[0]), color=FLOOR, linewidth=1, label="real train vs val (floor)")
    axes[2].axhline(float(first["precision_train"].iloc[0]), color=FLOOR, linewidth=1, label="precision, real train")
    axes[2].axhline(float(first["recall_train"].iloc[0]), color=FLOOR, linewidth=1, linestyle="--",
                    label="recall, real train")
    axes[3].axhspan(0.8, 1.25, color=REAL, alpha=0.12, linewidth=0)
    axes[3].axhline(1.0, color=REAL, linewidth=1)
    titles = ["class consistency", "Fréchet distance to val (lower is better)", "precision / recall vs val",
              "texture ratio, pool / real"]
    row = sweep[(sweep["solver"] == chosen[0]) & (sweep["guidance_scale"] == chosen[1])]
    marks = ["consistency_mean", "fd_pool_vs_val", "recall", "texture_ratio_min"]
    for ax, title, mark in zip(axes, titles, marks):
        ax.set_title(title, fontweight="bold", fontsize=10)
        ax.set_xlabel("guidance scale")
        if len(row):
            ax.plot(row["guidance_scale"], row[mark], "o", markersize=13, markerfacecolor="none",
                    markeredgecolor="black", markeredgewidth=1.5)
        ax.legend(frameon=False, fontsize=7)
    axes[0].set_ylim(0, 1.02)
    axes[2].set_ylim(0, 1.02)
    fig.suptitle(f"Choosing the sampler on real val and the pool (chosen: {chosen[0]}, guidance {chosen[1]:g}; ringed)",
                 fontweight="bold")
    fig.tight_layout()
    return fig
