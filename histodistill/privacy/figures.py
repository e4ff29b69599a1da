"""Figures of the privacy audit (notebook 07): distances to the nearest train image, the
copy ratios per class against unseen real images, the membership attacks' ROC curves with
their controls, and the closest pairs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..plots import ACCENT, FLOOR, REAL, SYNTH, style
from .controls import DISTILLED, RANDOM_UNSEEN

ROLE_COLOURS = {"audited": SYNTH, "reference": ACCENT, "control": "#55A868", "negative control": "#64B5CD"}
AUDITED_SHADES = [SYNTH, "#8172B3", "#937860", "#DA8BC3"]  # one per audited set in a panel


def distances(curves: dict[str, np.ndarray], roles: dict[str, str], space: str = "pixels") -> plt.Figure:
    """One panel per set (`roles`: name -> audited | reference | control): its images'
    distance to the nearest train image (bars, coloured by role) over the same distance for
    the real val images (outline), which no model trained on."""
    style()
    set_names = list(roles)
    holdout = curves[f"holdout__{space}"]
    cols = min(4, len(set_names))
    rows = int(np.ceil(len(set_names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), sharex=True, squeeze=False)
    top = max(float(holdout.max()), *(float(curves[f"nearest__{n}__{space}"].max()) for n in set_names))
    bins = np.linspace(0, top * 1.02 if top > 0 else 1.0, 30)
    for ax in axes.ravel()[len(set_names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), set_names):
        ax.hist(curves[f"nearest__{name}__{space}"], bins=bins, density=True, color=ROLE_COLOURS[roles[name]],
                alpha=0.75, label=f"this set ({roles[name]})")
        ax.hist(holdout, bins=bins, density=True, histtype="step", color=REAL, linewidth=1.8, label="real val")
        ax.set_title(name, fontweight="bold", fontsize=9)
        ax.set_xlabel(f"nearest-train distance ({space})", fontsize=8)
        ax.legend(frameon=False, fontsize=7)
    for row in axes:
        row[0].set_ylabel("density")
    fig.suptitle("How close each set lies to the train images, against unseen real images", fontweight="bold")
    fig.tight_layout()
    return fig


def copy_ratios(curves: dict[str, np.ndarray], labels: dict[str, np.ndarray], val_labels: np.ndarray,
                by_class: pd.DataFrame, class_names: list[str], space: str = "pixels",
                carlini: float = 1 / 3) -> plt.Figure:
    """Per class (rows), each image's copy ratio (nearest train distance over the mean of the
    nearest 50; near 0: a copy) for unseen real val images (grey) and for each named set in
    `labels` (name -> class labels, coloured by order), with the calibrated threshold of the
    class (black bar: the first named set's) and Carlini et al.'s fixed 1/3 (dashed). Where
    unseen real images themselves fall under 1/3, the fixed rule measures uniformity, not
    copying; the calibrated threshold moves with them."""
    style()
    unseen = curves[f"holdout_ratio__{space}"]
    names = list(labels)
    first = by_class[(by_class["set"] == names[0]) & (by_class["space"] == space)].set_index("class")
    fig, ax = plt.subplots(figsize=(8.0, 0.55 * len(class_names) + 1.4))
    rng = np.random.default_rng(0)
    shades = [SYNTH, "#64B5CD", "#55A868", ACCENT]
    offsets = np.linspace(-0.2, 0.2, len(names) + 1)
    for c, cls in enumerate(class_names):
        mine = unseen[val_labels == c]
        ax.scatter(mine, c + offsets[0] + rng.uniform(-0.05, 0.05, len(mine)), s=9, color=FLOOR, alpha=0.7,
                   label="unseen real (val)" if c == 0 else None)
        for k, name in enumerate(names):
            ratios = curves[f"copy_ratio__{name}__{space}"][labels[name] == c]
            ax.scatter(ratios, c + offsets[k + 1] + rng.uniform(-0.05, 0.05, len(ratios)), s=11,
                       color=shades[k % len(shades)], alpha=0.85, label=name if c == 0 else None)
        if cls in first.index and pd.notna(first.loc[cls, "near_copy_threshold"]):
            ax.plot([first.loc[cls, "near_copy_threshold"]] * 2, [c - 0.3, c + 0.3], color="black", linewidth=2,
                    label="calibrated threshold" if c == 0 else None)
    ax.axvline(carlini, color=ACCENT, linestyle="--", linewidth=1.2, label="Carlini et al.'s fixed 1/3")
    ax.set_yticks(range(len(class_names)))
    labels_y = [f"{cls} (low-information)" if cls in first.index and bool(first.loc[cls, "low_information"]) else cls
                for cls in class_names]
    ax.set_yticklabels(labels_y, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel(f"copy ratio ({space}): nearest train distance / mean of the nearest 50")
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Near-copies are judged against unseen real images of the same class", fontweight="bold")
    fig.tight_layout()
    return fig


def attacks(table: pd.DataFrame, curves: dict[str, np.ndarray]) -> plt.Figure:
    """ROC curves per attack (one panel each), every set attacked, the control among them;
    the legend gives each AUC with its 95 % interval."""
    style()
    tests = [t for t in dict.fromkeys(table["test"]) if t.startswith("MIA")]
    cols = min(3, len(tests))
    rows = int(np.ceil(len(tests) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, test in zip(axes.ravel(), tests):
        shades = iter(AUDITED_SHADES * 4)
        for _, row in table[table["test"] == test].iterrows():
            fpr, tpr = curves[f"roc__{test}__{row['set']}__fpr"], curves[f"roc__{test}__{row['set']}__tpr"]
            colour = next(shades) if row["role"] == "audited" else ROLE_COLOURS.get(row["role"], FLOOR)
            ax.plot(fpr, tpr, color=colour, linewidth=1.6,
                    label=f"{row['set']}: AUC {row['statistic']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]")
        ax.plot([0, 1], [0, 1], color=FLOOR, linewidth=1, linestyle="--")
        ax.set_title(test.replace("MIA ", ""), fontweight="bold", fontsize=9)
        ax.set_xlabel("false-positive rate (val called member)")
        ax.set_ylabel("true-positive rate")
        ax.legend(frameon=False, fontsize=6.5, loc="lower right")
    for ax in axes.ravel()[len(tests):]:
        ax.axis("off")
    fig.suptitle("Membership attacks: audited (red, purple) against positive (green) and negative (blue) controls", fontweight="bold")
    fig.tight_layout()
    return fig


def closest_pairs(sets: dict, train_images: np.ndarray, curves: dict[str, np.ndarray], n: int = 8,
                  names: tuple[str, ...] = (DISTILLED, RANDOM_UNSEEN, "planted train copies (control)")) -> plt.Figure:
    """For each named set, its `n` images nearest a train image (pixels, top) above that train
    image (bottom), with the distance."""
    style()
    names = [name for name in names if name in sets]
    fig, axes = plt.subplots(2 * len(names), n, figsize=(1.25 * n, 2.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        d, nearest = curves[f"nearest__{name}__pixels"], curves[f"copy_nearest__{name}__pixels"].astype(int)
        order = np.argsort(d)[:n]
        for c in range(n):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            for ax in (top, bottom):
                ax.axis("off")
            if c >= len(order):
                continue
            i = order[c]
            top.imshow(sets[name].images[i])
            bottom.imshow(train_images[nearest[i]])
            top.set_title(f"{d[i]:.2f}", fontsize=7)
        axes[2 * r, 0].text(-0.15, 0.5, name, transform=axes[2 * r, 0].transAxes, rotation=90, ha="right",
                            va="center", fontsize=7)
        axes[2 * r + 1, 0].text(-0.15, 0.5, "nearest train", transform=axes[2 * r + 1, 0].transAxes, rotation=90,
                                ha="right", va="center", fontsize=7)
    fig.suptitle("Closest pairs in pixels (distance above each pair)", fontweight="bold")
    fig.tight_layout()
    return fig
