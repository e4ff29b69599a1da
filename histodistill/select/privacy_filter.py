"""Privacy-aware selection: take out of the pool, before any graph is built, every image that
looks like a copy of a real train image, so that no selection method can pick one.

The criterion is the privacy audit's calibrated near-copy test, imported from
`histodistill.generate.memorisation` so that the filter and the audit (notebook 07) apply one rule:

- an image's *copy ratio* is its distance to the nearest real train image over its mean
  distance to the `memorisation.NEAR_COPY_NEIGHBOURS` nearest (Carlini et al. 2023's relative
  distance, far below 1 when the image sits much closer to one train image than to the crowd
  around it);
- per class, the threshold is the `memorisation.NEAR_COPY_QUANTILE` quantile of the same ratio
  for real val images (`memorisation.copy_thresholds`); an image under its class's threshold is
  flagged.

It is tested in two spaces: raw pixels (`memorisation.pixel_vectors`) and the judge's features
(the real-trained ConvNet, the same features as the ``convnet`` embedding). A copy can hide
from one space (a shifted or recoloured tile is far in pixels, near in features; a texture
the judge ignores is the reverse), so an image is removed when either flags it.

The thresholds come from val: real images no model trained on, so their ratios say how close
an image of the class comes to the train split by chance alone. The test split stays out of
it: a filter tuned on test would shape the training set that test then scores.

With the filter on, the audit's own near-copy test of the distilled set in pixels flags
nothing by construction (at the audit's default neighbours and quantile); its other tests
still measure what the filter does not remove.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from ..data.dataset import DataBundle
from ..generate import memorisation

TABLE_FILE = "privacy_filter.csv"  # the per-class table inside the selection artifact


class FilterError(ValueError):
    """The filter left a class fewer pool images than the selection keeps."""


def near_copy_flags(vectors: np.ndarray, labels: np.ndarray, train_vectors: np.ndarray, val_vectors: np.ndarray,
                    val_labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, memorisation.CopyThresholds]:
    """Which rows of `vectors` (class `labels`) the calibrated near-copy test flags against
    `train_vectors`, with per-class thresholds from the val rows measured against the same
    train rows; and those thresholds."""
    ratios = memorisation.copy_ratios(vectors, train_vectors)["ratios"]
    thresholds = memorisation.copy_thresholds(memorisation.copy_ratios(val_vectors, train_vectors)["ratios"],
                                              val_labels, n_classes)
    return thresholds.flags(ratios, labels), thresholds


def near_copy_filter(images: np.ndarray, labels: np.ndarray, bundle: DataBundle,
                     embed: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, pd.DataFrame]:
    """The pool images (uint8 `images`, class `labels`) to keep: a boolean mask, False where
    the near-copy test flags the image in pixels or in `embed`'s features (the judge's:
    ``lambda x: convnet.embed(judge, x)``), against `bundle`'s real train split with
    thresholds from its val split. Also one row per class: ``class``, ``class_name``,
    ``pool_images``, ``flagged_pixels``, ``flagged_features``, ``removed`` (flagged in
    either), ``kept``, and each space's threshold (NaN: no val image of the class, nothing
    flagged)."""
    labels = np.asarray(labels, dtype=np.int64)
    train, val = bundle.splits["train"], bundle.splits["val"]
    spaces = {"pixels": memorisation.pixel_vectors, "features": embed}
    flagged, limits = {}, {}
    for space, to_vectors in spaces.items():
        flagged[space], thresholds = near_copy_flags(to_vectors(images), labels, to_vectors(train.images),
                                                     to_vectors(val.images), val.labels, bundle.n_classes)
        limits[space] = thresholds.thresholds
    keep = ~(flagged["pixels"] | flagged["features"])

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(labels[mask], minlength=bundle.n_classes)[:bundle.n_classes]

    table = pd.DataFrame({
        "class": np.arange(bundle.n_classes),
        "class_name": bundle.class_names,
        "pool_images": count(np.ones(len(labels), bool)),
        "flagged_pixels": count(flagged["pixels"]),
        "flagged_features": count(flagged["features"]),
        "removed": count(~keep),
        "kept": count(keep),
        "threshold_pixels": limits["pixels"],
        "threshold_features": limits["features"],
    })
    return keep, table


def check_enough(table: pd.DataFrame, ipc: int) -> None:
    """Raise `FilterError` naming every class the filter (its `near_copy_filter` table) left
    with fewer than `ipc` images."""
    short = table[table["kept"] < ipc]
    if len(short):
        classes = "; ".join(f"class {r['class']} ({r['class_name']}): {r['kept']} of {r['pool_images']} pool images "
                            f"kept ({r['flagged_pixels']} flagged in pixels, {r['flagged_features']} in features)"
                            for _, r in short.iterrows())
        raise FilterError(f"the privacy filter leaves too few pool images for ipc={ipc}: {classes}. Sample more "
                          f"pool images of these classes, lower ipc, or turn privacy_filter off.")
