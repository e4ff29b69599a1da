"""The data-copying test C_T (Meehan et al. 2020), the audit's test 3: in each k-means cell of
the real train split, are the set's images closer to train than real images no model saw?
And a selected set read against the same selection made from unseen real images, which
separates what the set adds from the selection's own bias towards dense regions.

    >>> ref = copying.reference(train, holdout)              # train cut into cells, holdout's distances
    >>> copying.copying_test(synthetic, ref)                  # C_T: z-score, p-value, passed
    >>> copying.versus_selected_unseen(distilled, labels, control, control_labels, ref)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans

from ..generate.quality import nearest_neighbours
from .measures import ALPHA
from .membership import BOOT_CHUNK


def cut_into_cells(train: np.ndarray, cells: int = 5, seed: int = 0) -> KMeans:
    """The k-means cells of train that C_T compares distances in (`copying_test`)."""
    train = np.asarray(train, dtype=np.float32)
    return KMeans(n_clusters=min(cells, len(train)), n_init=10, random_state=seed).fit(train)


@dataclass(frozen=True)
class Reference:
    """The real rows C_T compares every audited set with, in one space, and what it needs of
    them: each holdout row's distance to its nearest train row and its cell among train's
    k-means cells. Made once per space (`reference`) and shared by every audited set: at
    full size the holdout's distances are 10,004 rows against 89,996 in 2,352 pixel
    dimensions, and the k-means fit is of all 89,996 train rows."""

    train: np.ndarray
    holdout: np.ndarray
    holdout_distances: np.ndarray
    cells: KMeans
    holdout_cells: np.ndarray

    def without(self, rows: np.ndarray) -> "Reference":
        """The same reference less the holdout `rows`: the holdout of a set made of holdout
        images (a negative control) cannot contain those images themselves."""
        keep = np.setdiff1d(np.arange(len(self.holdout)), rows)
        return Reference(self.train, self.holdout[keep], self.holdout_distances[keep], self.cells,
                         self.holdout_cells[keep])


def reference(train: np.ndarray, holdout: np.ndarray, cells: int = 5, seed: int = 0) -> Reference:
    """`Reference` of these train and holdout rows, with train cut into `cells` (seeded)."""
    train, holdout = np.asarray(train, dtype=np.float32), np.asarray(holdout, dtype=np.float32)
    kmeans = cut_into_cells(train, cells, seed)
    return Reference(train, holdout, nearest_neighbours(holdout, train)[0], kmeans, kmeans.predict(holdout))


def _copying_parts(synthetic: np.ndarray, ref: Reference, synthetic_distances: np.ndarray | None) -> tuple:
    """Each synthetic row's cell and its part of its cell's Mann-Whitney U: the holdout rows
    of its cell that lie nearer to train than it does (ties count 1/2)."""
    synthetic = np.asarray(synthetic, dtype=np.float32)
    distances = (nearest_neighbours(synthetic, ref.train)[0] if synthetic_distances is None
                 else np.asarray(synthetic_distances, dtype=np.float64))
    if len(distances) != len(synthetic):
        raise ValueError("need one given distance per synthetic row")
    cell = ref.cells.predict(synthetic)
    part = np.zeros(len(synthetic))
    for c in range(ref.cells.n_clusters):
        held = np.sort(ref.holdout_distances[ref.holdout_cells == c])
        mine = cell == c
        below = np.searchsorted(held, distances[mine], side="left")
        part[mine] = below + 0.5 * (np.searchsorted(held, distances[mine], side="right") - below)
    return cell, part


def _c_t(cell: np.ndarray, part: np.ndarray, ref: Reference, weights: np.ndarray, min_share: float) -> tuple:
    """C_T and its z for each row of `weights` (B, N): how often each synthetic row counts
    (ones: the set itself; bootstrap counts: its resamples). NaN where no cell qualifies."""
    cells = ref.cells.n_clusters
    onehot = np.eye(cells)[cell]  # (N, cells)
    m = weights @ onehot  # synthetic rows per cell, per resample
    u = weights @ (onehot * part[:, None])
    n = np.bincount(ref.holdout_cells, minlength=cells).astype(np.float64)
    used = (m >= np.maximum(1, min_share * len(cell))) & (n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12)
    w = np.where(used, n / len(ref.holdout), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    c_t = np.where(total[:, 0] > 0, np.sum(w * np.nan_to_num(z), axis=1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_all = c_t / np.sqrt(np.sum(w**2, axis=1))
    return c_t, z_all, used.sum(axis=1)


def copying_test(synthetic: np.ndarray, ref: Reference, min_share: float = 0.05,
                 synthetic_distances: np.ndarray | None = None) -> dict:
    """Meehan, Chaudhuri & Dasgupta 2020's C_T. Train is cut into cells by k-means; in each
    cell the distances of synthetic rows to their nearest train row are compared with those
    of holdout rows by a Mann-Whitney U test, turned into a z-score (negative: synthetic rows
    sit closer to train than unseen real rows do, i.e. copying). C_T averages the cells'
    z-scores weighted by their share of holdout rows, over cells holding at least
    `min_share` of the synthetic rows (and a holdout row). Under no copying each z is about
    standard normal, so C_T / sqrt(sum of squared weights) is too: the test passes unless
    that is significantly below 0 (one-sided at `ALPHA`). DiffInfinite (Aversa et al. 2023)
    reports the same statistic for histology. Train, holdout and the cells come from `ref`;
    `synthetic_distances` (each synthetic row's distance to its nearest train row, as
    `dcr_share` gives them) skips recomputing what an audit already has."""
    cell, part = _copying_parts(synthetic, ref, synthetic_distances)
    c_t, z, used = _c_t(cell, part, ref, np.ones((1, len(cell))), min_share)
    if np.isnan(c_t[0]):
        raise ValueError("no cell holds enough synthetic and holdout rows; lower `cells` or `min_share`")
    p_value = float(stats.norm.cdf(z[0]))
    return {"statistic": float(c_t[0]), "z": float(z[0]), "p_value": p_value, "threshold": 0.0,
            "cells_used": int(used[0]), "cells": ref.cells.n_clusters, "passed": bool(p_value >= ALPHA)}


def versus_selected_unseen(synthetic: np.ndarray, labels: np.ndarray, control: np.ndarray,
                           control_labels: np.ndarray, ref: Reference, n_boot: int = 2000, seed: int = 0,
                           min_share: float = 0.05) -> dict[str, dict]:
    """A selected set's DCR share and C_T read against the same selection made from real
    images no model saw (`control`, with `ref`'s holdout disjoint from it). Keeping the most
    central images of each class keeps images in the densest regions, nearer to any real
    image than a random sample: that bias alone can fail DCR share and C_T. The difference
    (set minus control, each against the same train and holdout) is what the set adds to
    the selection's own bias; its 95 % interval is a percentile bootstrap over each set's
    images, resampled within class (train and holdout fixed). DCR share passes unless the
    interval lies above 0, C_T unless it lies below 0."""
    sides = []
    for rows, y in ((synthetic, labels), (control, control_labels)):
        rows = np.asarray(rows, dtype=np.float32)
        to_train = nearest_neighbours(rows, ref.train)[0]
        to_holdout = nearest_neighbours(rows, ref.holdout)[0]
        cell, part = _copying_parts(rows, ref, to_train)
        sides.append({"y": np.asarray(y), "closer": (to_train < to_holdout).astype(float),
                      "decided": (to_train != to_holdout).astype(float), "cell": cell, "part": part})
    rng = np.random.default_rng(seed)

    def statistics(weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        shares, c_ts = [], []
        for side, w in zip(sides, weights):
            decided = w @ side["decided"]
            shares.append(np.divide(w @ (side["closer"] * side["decided"]), decided,
                                    out=np.full(len(w), np.nan), where=decided > 0))
            c_ts.append(_c_t(side["cell"], side["part"], ref, w, min_share)[0])
        return shares[0] - shares[1], c_ts[0] - c_ts[1]

    share_diff, c_t_diff = statistics([np.ones((1, len(side["y"]))) for side in sides])
    boot_share, boot_c_t = [], []
    for start in range(0, n_boot, BOOT_CHUNK):
        size = min(BOOT_CHUNK, n_boot - start)
        weights = [_stratified_counts(side["y"], size, rng) for side in sides]
        s, c = statistics(weights)
        boot_share.append(s)
        boot_c_t.append(c)
    results = {}
    for test, observed, boots, safe in (("DCR share", share_diff, boot_share, "low"),
                                        ("data-copying C_T", c_t_diff, boot_c_t, "high")):
        low, high = np.nanpercentile(np.concatenate(boots), [2.5, 97.5])
        passed = low <= 0 if safe == "low" else high >= 0
        results[test] = {"statistic": float(observed[0]), "ci_low": float(low), "ci_high": float(high),
                         "threshold": 0.0, "passed": bool(passed), "n": int(len(sides[0]["y"]))}
    return results


def _stratified_counts(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` bootstrap resamples of rows with these labels, drawn within each label, as
    counts (size, N)."""
    counts = np.zeros((size, len(labels)))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        picks = rng.integers(0, len(rows), (size, len(rows)))
        for b in range(size):
            counts[b, rows] += np.bincount(picks[b], minlength=len(rows))
    return counts
