"""The distilled set as a product a hospital can hand over: ``distilled.npz`` in MedMNIST's
layout (any MedMNIST reader, and `data.own_data.read_npz`, loads it), one PNG grid per class
to look at, and ``data_card.json`` (source, method, parameters, configuration hash, counts;
notebook 07 adds the audit's verdict).

    >>> export.export_distilled(sel, pool_px, class_names, "out/distilled", source, cfg_hash)
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.own_data import write_npz
from ..plots import tile
from .selection import Selection


def export_distilled(selection: Selection, images: np.ndarray, class_names: list[str], folder,
                     source: dict, config_hash: str) -> dict[str, Path]:
    """Write the distilled set as a product: ``distilled.npz`` (MedMNIST layout, readable by
    ``sources.read_npz``), one PNG grid per class and ``data_card.json``. Returns the paths."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if len(selection.indices) and not 0 <= selection.indices.min() <= selection.indices.max() < len(images):
        raise ValueError(f"selection indices must lie in 0..{len(images) - 1}")
    if len(class_names) > 256:
        raise ValueError("MedMNIST layout stores labels as uint8: at most 256 classes")
    chosen, labels = images[selection.indices], np.asarray(selection.labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names)) if len(labels) else np.zeros(len(class_names), int)
    if len(counts) > len(class_names) or (counts == 0).any():
        raise ValueError(f"every class needs at least one image and no label may exceed "
                         f"{len(class_names) - 1} (the reader checks both); counts {counts.tolist()}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"npz": folder / "distilled.npz", "card": folder / "data_card.json"}
    write_npz(paths["npz"], chosen, labels, class_names)
    for c, name in enumerate(class_names):
        safe = re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-").lower() or "class"
        paths[f"grid_{c}"] = folder / f"grid_{c}_{safe}.png"
        Image.fromarray(image_grid(chosen[labels == c])).save(paths[f"grid_{c}"])
    card = {
        "source": source, "method": selection.method, "params": selection.params,
        "config_hash": config_hash, "n_images": int(len(labels)), "image_size": list(chosen.shape[1:3]),
        "counts_per_class": {str(n): int(k) for n, k in zip(class_names, counts)},
        "files": sorted(p.name for p in paths.values()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    paths["card"].write_text(json.dumps(card, indent=2, default=_plain))
    return paths


def image_grid(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile uint8 images (N, S, S, 3) into a near-square grid with a white `gap` between."""
    n, s = len(images), images.shape[1]
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = [list(images[r : r + cols]) for r in range(0, max(n, 1), cols)]
    return tile(rows, s, cols, gap)


def _plain(value):
    """JSON fallback for numpy scalars and arrays in parameters; anything else as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
