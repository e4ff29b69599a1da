"""Is a synthetic pool safe, or does it copy its training images? A nearest-neighbour
copying check, in a feature space and in pixels.

    >>> from histodistill.generate import memorisation
    >>> mem = memorisation.memorisation(pool_f, train_f, val_f, pool_px, train_px, val_px)
    >>> memorisation.memorisation_summary(mem)                 # threshold, flagged, expected
    >>> memorisation.closest_pairs(mem, "pixels", n=8)         # [(pool index, train index, distance), ...]

A pool image closer to some train image than (almost) any unseen val image is to the train
set is a likely copy: the threshold is a low percentile of val's nearest-train distances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .quality import nearest_neighbours


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
        spaces["pixels"] = tuple(_flat_pixels(p) for p in (pool_pixels, train_pixels, val_pixels))
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
            "pixels": nearest_neighbours(_flat_pixels(val_pixels), _flat_pixels(train_pixels))[0]}


def closest_pairs(result: dict, space: str = "features", n: int = 8) -> list[tuple[int, int, float]]:
    """The `n` closest (pool index, train index, distance) pairs of a `memorisation` result,
    smallest distance first (ties by pool index), for a side-by-side figure."""
    if space not in result:
        raise KeyError(f"no {space!r} space in this result; it has {sorted(result)}")
    dist, nearest = result[space]["pool_distances"], result[space]["pool_nearest"]
    order = np.argsort(dist, kind="stable")[:n]
    return [(int(i), int(nearest[i]), float(dist[i])) for i in order]


def _flat_pixels(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"pixel arrays must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
