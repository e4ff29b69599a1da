"""Is a synthetic pool safe, or does it copy its training images? A nearest-neighbour
copying check, in a feature space and in pixels.

    >>> from histodistill.generate import memorisation
    >>> mem = memorisation.memorisation(pool_f, train_f, val_f, pool_px, train_px, val_px)
    >>> memorisation.memorisation_summary(mem)                 # threshold, flagged, expected
    >>> memorisation.closest_pairs(mem, "pixels", n=8)         # [(pool index, train index, distance), ...]

A pool image closer to some train image than (almost) any unseen val image is to the train
set is a likely copy: the threshold is a low percentile of val's nearest-train distances.

The per-class near-copy criterion, the same idea on Carlini et al.'s relative distance, is
here too: the privacy audit (notebook 07) tests with it and notebook 04's privacy filter
removes what it flags.

    >>> ratios = memorisation.copy_ratios(pool_px, train_px)["ratios"]
    >>> thresholds = memorisation.copy_thresholds(val_ratios, val_labels, n_classes)
    >>> memorisation.calibrated_near_copies(ratios, pool_labels, thresholds)  # flagged, expected, p-value
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.neighbors import NearestNeighbors

from .quality import nearest_neighbours

NEAR_COPY_NEIGHBOURS = 50  # Carlini et al. 2023: the 50 nearest train images scale a copy's distance
# The calibrated test flags an image closer to one train image than 99 % of unseen real
# images of its class get (at least the closest one, in a small class).
NEAR_COPY_QUANTILE = 0.01


def memorisation_summary(result: dict, labels: np.ndarray | None = None,
                         class_names: list[str] | None = None) -> pd.DataFrame:
    """One row per space of a `memorisation` result: threshold, count and share below it,
    the count expected below it of images as new to the model as val's (the percentile's
    share of the pool: a pool indistinguishable from unseen real images has about that
    many, so a count far above it points at copying), and the median nearest-train
    distance of pool and val images. With the pool's `labels` and `class_names`, also
    which classes the flagged images belong to ("background: 5"), since near-uniform
    images (background) sit close to each other without being copies."""
    rows = []
    for space, r in result.items():
        row = {"space": space, "percentile": r["percentile"], "threshold": r["threshold"],
               "n_pool": len(r["pool_distances"]), "n_below": r["n_below"], "share_below": r["share_below"],
               "expected_below_if_unseen": r["percentile"] / 100 * len(r["pool_distances"]),
               "median_pool_distance": float(np.median(r["pool_distances"])),
               "median_val_distance": float(np.median(r["val_distances"]))}
        if labels is not None and class_names is not None:
            flagged = np.asarray(labels).ravel()[r["pool_distances"] <= r["threshold"]]
            counts = np.bincount(flagged.astype(np.int64), minlength=len(class_names))
            row["flagged_by_class"] = "; ".join(f"{class_names[c]}: {n}" for c, n in enumerate(counts) if n) or "none"
        rows.append(row)
    return pd.DataFrame(rows)


def memorisation(
    pool_feats: np.ndarray,
    train_feats: np.ndarray,
    val_feats: np.ndarray,
    pool_pixels: np.ndarray | None = None,
    train_pixels: np.ndarray | None = None,
    val_pixels: np.ndarray | None = None,
    percentile: float = 1.0,
    val_distances: dict[str, np.ndarray] | None = None,
) -> dict:
    """Copying check: each pool image's distance to its nearest train image, against the
    same distance for real val images (never trained on: "close but not copied").

    Returns ``{space: {...}}`` for "features" and, when all three pixel arrays are given
    (uint8 (N, H, W, 3), compared as float32 / 255), "pixels". Each holds
    ``pool_distances``, ``pool_nearest`` (indices into train), ``val_distances``,
    ``threshold`` (the `percentile`-th percentile of ``val_distances``), ``n_below`` and
    ``share_below``: pool images at or below the threshold ("at" so exact copies count even
    when the real data holds train/val duplicates and the threshold is 0), and ``percentile``.
    `val_distances` ({space: distances}, from `val_to_train` on the same train and val)
    skips recomputing them: at full size they are most of the cost (10,004 val images
    against 89,996 train images in 2,352 pixel dimensions), and a sweep scores many pools.
    """
    spaces = {"features": (pool_feats, train_feats, val_feats)}
    given = [p is not None for p in (pool_pixels, train_pixels, val_pixels)]
    if any(given) and not all(given):
        raise ValueError("give pool_pixels, train_pixels and val_pixels together, or none")
    if all(given):
        spaces["pixels"] = tuple(pixel_vectors(p) for p in (pool_pixels, train_pixels, val_pixels))
        for which, feats, pixels in zip(("pool", "train", "val"), spaces["features"], spaces["pixels"]):
            if len(feats) != len(pixels):
                raise ValueError(f"{which}: {len(feats)} feature rows but {len(pixels)} images")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    result = {}
    for space, (pool, train, val) in spaces.items():
        pool_d, pool_idx = nearest_neighbours(pool, train)
        if val_distances is not None and space in val_distances:
            val_d = np.asarray(val_distances[space])
            if len(val_d) != len(val):
                raise ValueError(f"{space}: {len(val_d)} given val distances for {len(val)} val images")
        else:
            val_d, _ = nearest_neighbours(val, train)
        if len(val_d) == 0:
            raise ValueError("val set is empty: no reference distribution for the threshold")
        threshold = float(np.percentile(val_d, percentile))
        n_below = int(np.count_nonzero(pool_d <= threshold))
        result[space] = {
            "pool_distances": pool_d,
            "pool_nearest": pool_idx,
            "val_distances": val_d,
            "threshold": threshold,
            "n_below": n_below,
            "share_below": n_below / len(pool_d) if len(pool_d) else float("nan"),
            "percentile": float(percentile),
        }
    return result


def val_to_train(train_feats: np.ndarray, val_feats: np.ndarray, train_pixels: np.ndarray,
                 val_pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Each val image's distance to its nearest train image, in features and in pixels:
    the copy check's reference (`memorisation`'s ``val_distances``), computed once."""
    return {"features": nearest_neighbours(val_feats, train_feats)[0],
            "pixels": nearest_neighbours(pixel_vectors(val_pixels), pixel_vectors(train_pixels))[0]}


def closest_pairs(result: dict, space: str = "features", n: int = 8) -> list[tuple[int, int, float]]:
    """The `n` closest (pool index, train index, distance) pairs of a `memorisation` result,
    smallest distance first (ties by pool index), for a side-by-side figure."""
    if space not in result:
        raise KeyError(f"no {space!r} space in this result; it has {sorted(result)}")
    dist, nearest = result[space]["pool_distances"], result[space]["pool_nearest"]
    order = np.argsort(dist, kind="stable")[:n]
    return [(int(i), int(nearest[i]), float(dist[i])) for i in order]


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, S, S, C) as float32 rows in 0..1."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"pixel arrays must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


# --- calibrated near-copies ------------------------------------------------------------------


def copy_ratios(synthetic: np.ndarray, train: np.ndarray, neighbours: int = NEAR_COPY_NEIGHBOURS) -> dict:
    """Each row's distance to its nearest train row over its mean distance to its
    `neighbours` nearest train rows (Carlini et al. 2023's relative distance: far below 1
    when a row is much closer to one train row than to the crowd around it). Returns the
    ``ratios`` and every row's ``nearest`` train distance and ``nearest_index``."""
    synthetic, train = np.asarray(synthetic, dtype=np.float32), np.asarray(train, dtype=np.float32)
    k = min(neighbours, len(train))
    distances = NearestNeighbors(n_neighbors=k).fit(train).kneighbors(synthetic)[0]
    nearest, nearest_index = nearest_neighbours(synthetic, train)  # exact (an exact copy is 0, not ~1e-4)
    distances[:, 0] = nearest
    crowd = distances.mean(axis=1)
    ratios = np.divide(nearest, crowd, out=np.zeros_like(nearest), where=crowd > 0)
    return {"ratios": ratios, "nearest": nearest, "nearest_index": nearest_index, "neighbours": k}


@dataclass(frozen=True)
class CopyThresholds:
    """Per class, the copy ratio under which an image counts as a near-copy: the `order`-th
    smallest ratio of the class's unseen real images (real images no model trained on,
    measured against the same train rows), the order being the `quantile` of `unseen`
    images, at least the first. An image drawn like the unseen ones falls under it with
    probability ``order / (unseen + 1)`` (`null_rate`). A class without unseen images has
    no threshold (NaN) and flags nothing."""

    thresholds: np.ndarray  # (classes,) ratio; NaN where the class has no unseen image
    order: np.ndarray  # (classes,) which smallest unseen ratio is the threshold (0: none)
    unseen: np.ndarray  # (classes,) unseen real images of the class
    quantile: float

    def null_rate(self) -> np.ndarray:
        return self.order / (self.unseen + 1)

    def flags(self, ratios: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Which rows (ratios, class labels) fall under their class's threshold."""
        limit = self.thresholds[np.asarray(labels)]
        return np.where(np.isnan(limit), False, np.asarray(ratios) < np.nan_to_num(limit, nan=-np.inf))


def copy_thresholds(unseen_ratios: np.ndarray, unseen_labels: np.ndarray, n_classes: int,
                    quantile: float = NEAR_COPY_QUANTILE) -> CopyThresholds:
    """`CopyThresholds` from the copy ratios of real images no model trained on, per class."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), not {quantile}")
    unseen_ratios, unseen_labels = np.asarray(unseen_ratios, np.float64), np.asarray(unseen_labels)
    thresholds, order = np.full(n_classes, np.nan), np.zeros(n_classes, dtype=np.int64)
    unseen = np.bincount(unseen_labels, minlength=n_classes)[:n_classes]
    for c in range(n_classes):
        if unseen[c]:
            order[c] = max(1, int(np.floor(quantile * (unseen[c] + 1))))
            thresholds[c] = np.sort(unseen_ratios[unseen_labels == c])[order[c] - 1]
    return CopyThresholds(thresholds, order, unseen, quantile)


def calibrated_near_copies(ratios: np.ndarray, labels: np.ndarray, thresholds: CopyThresholds,
                           alpha: float = 0.05) -> dict:
    """The near-copy test calibrated on unseen real images: an image is flagged when its
    copy ratio lies under its class's threshold (`copy_thresholds`), i.e. it is closer to
    one train image than all but the closest unseen real images of its class get. Unseen
    real images are flagged too, at the null rate, so the test is on the count: if the set's
    images were as exchangeable with the unseen ones as two unseen samples are, the number
    of them under the `order`-th smallest unseen ratio of a class would follow the negative
    hypergeometric distribution (draws of the merged, ordered ratios until `order` unseen
    ones), independently per class. The p-value is the chance of at least the observed total
    under that null (one-sided at `alpha`); ``expected`` is its mean. Ties with the threshold
    are not flagged."""
    ratios, labels = np.asarray(ratios, np.float64), np.asarray(labels)
    flagged = thresholds.flags(ratios, labels)
    null = np.ones(1)
    for c in range(len(thresholds.thresholds)):
        m, n, j = int(np.sum(labels == c)), int(thresholds.unseen[c]), int(thresholds.order[c])
        if m and j:
            null = np.convolve(null, stats.nhypergeom(n + m, m, j).pmf(np.arange(m + 1)))
    count = int(flagged.sum())
    p_value = float(min(1.0, null[count:].sum()))
    expected = float(np.dot(np.arange(len(null)), null))
    return {"statistic": count, "n": int(len(ratios)), "threshold": expected, "expected": expected,
            "p_value": p_value, "passed": bool(p_value >= alpha), "flagged": np.flatnonzero(flagged)}
