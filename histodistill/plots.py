"""What every stage's figures share: one style, image grids and montages, and how figures
and tables are saved (``figures/<run>/``, ``paper_results/<run>/``). Each stage's own
figures live with it (`data.figures`, `generate.figures`, ...)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import paths

# Every figure's colours for real images, synthetic ones, a reference level (the real-vs-real
# floor) and what stands out.
REAL, SYNTH, FLOOR, ACCENT = "#4C72B0", "#C44E52", "#8C8C8C", "#DD8452"


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
