"""How good is a synthetic pool? Judged offline in a feature space (how safe: `memorisation`).

    >>> from histodistill.generate import quality
    >>> table = quality.quality_table(train_f, train_y, val_f, val_y, pool_f, pool_y, class_names)
    >>> quality.texture_table(pool_images, pool_labels, real_images, real_labels, class_names)

Features are (N, D) float arrays from a ConvNet trained on real data; nothing here trains
or runs a network. Fidelity is the Fréchet distance (the FID formula) and the k-NN
precision/recall of Kynkäänniemi et al. (NeurIPS 2019), always shown next to what two
real samples (train vs val) score, since the absolute numbers mean little on their own.
`nearest_neighbours` here is the exact search every copy check of the project uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.ndimage
from sklearn.metrics import confusion_matrix
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.neighbors import NearestNeighbors

TABLE_COLUMNS = ["class", "n_pool", "n_train", "fd_pool_vs_val", "precision_pool", "recall_pool",
                 "fd_train_vs_val", "precision_train", "recall_train"]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets `a` (N_a, D) and `b` (N_b, D):
    ``||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr(sqrt(S_a S_b))``.

    The trace of the matrix square root is computed from a spectrum, exactly, instead of
    with ``scipy.linalg.sqrtm`` (slow, about a second at D = 2048, and inaccurate or complex
    when ``S_a S_b`` is singular, which it always is when a set has no more samples than
    dimensions). With centred, scaled data ``A`` and ``B`` (``S_a = A^T A``, ``S_b = B^T B``), the
    non-zero eigenvalues of ``S_a S_b`` are the squared singular values of ``A B^T``, so
    ``Tr sqrt(S_a S_b)`` is the sum of those singular values (an N_a x N_b problem); with
    more samples than dimensions it is the sum of the square roots of the eigenvalues of
    the symmetric ``S_a^(1/2) S_b S_a^(1/2)`` (a D x D problem). Both need no regularising
    offset; tests check them against ``sqrtm`` where that is well conditioned."""
    a, b = _pair(a, b, "a", "b")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    centred_a = (a - mu_a) / np.sqrt(len(a) - 1)
    centred_b = (b - mu_b) / np.sqrt(len(b) - 1)
    trace_a, trace_b = float(np.sum(centred_a**2)), float(np.sum(centred_b**2))
    if min(len(a), len(b)) <= a.shape[1]:
        trace_root = float(np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum())
    else:
        w, v = np.linalg.eigh(centred_a.T @ centred_a)
        root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        inner = root_a @ (centred_b.T @ centred_b) @ root_a
        trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0, None)).sum())
    diff = mu_a - mu_b
    fd = diff @ diff + trace_a + trace_b - 2.0 * trace_root
    return float(max(fd, 0.0))  # round-off can leave a tiny negative for identical sets


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk_size: int = 2048) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) by k-NN manifolds.

    Each sample's manifold ball has the radius of its k-th nearest neighbour in its own set
    (itself excluded). Precision is the share of `fake` inside at least one `real` ball,
    recall the share of `real` inside at least one `fake` ball. With a set of n <= k samples
    k is clamped to n - 1 for that set (its farthest other sample), so tiny per-class sets
    still give a number; a set needs at least 2 samples. Memory is O(N k) for the radii plus
    one ``chunk_size x chunk_size`` distance block at a time.
    """
    real, fake = _pair(real, fake, "real", "fake")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    precision = _inside_share(fake, real, real_radii, chunk_size).mean()
    recall = _inside_share(real, fake, fake_radii, chunk_size).mean()
    return float(precision), float(recall)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    if len(x) < 2:
        raise ValueError(f"a k-NN manifold needs at least 2 samples, got {len(x)}")
    k = min(k, len(x) - 1)
    # kneighbors() without a query leaves each point out of its own neighbour list.
    dist, _ = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()
    return dist[:, -1]


def _inside_share(query: np.ndarray, ref: np.ndarray, radii: np.ndarray, chunk_size: int) -> np.ndarray:
    """Boolean per query row: within ``radii[j]`` of some ``ref[j]``. Blocks of both sets
    keep memory bounded; a row stops being checked once it is inside."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    ref_sq, radii_sq = np.einsum("ij,ij->i", ref, ref), radii**2
    query_sq = np.einsum("ij,ij->i", query, query)
    inside = np.zeros(len(query), dtype=bool)
    for q0 in range(0, len(query), chunk_size):
        q = slice(q0, q0 + chunk_size)
        for r0 in range(0, len(ref), chunk_size):
            todo = np.flatnonzero(~inside[q]) + q0
            if len(todo) == 0:
                break
            r = slice(r0, r0 + chunk_size)
            d2 = euclidean_distances(
                query[todo], ref[r], X_norm_squared=query_sq[todo, None],
                Y_norm_squared=ref_sq[None, r], squared=True,
            )
            inside[todo] = (d2 <= radii_sq[None, r]).any(axis=1)
    return inside


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance (N,) float64 and index (N,) int64 of each query row's nearest
    reference row. The distance is recomputed directly from the pair found, so exact
    copies come out at exactly 0 (sklearn's fast ``|x|^2 + |y|^2 - 2xy`` form does not)."""
    query, reference = _pair(query, reference, "query", "reference", float_ok=True)
    if len(reference) == 0:
        raise ValueError("the reference set is empty")
    index = NearestNeighbors(n_neighbors=1).fit(reference)
    distances = np.empty(len(query), dtype=np.float64)
    nearest = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), batch_size):
        batch = query[start : start + batch_size]
        idx = index.kneighbors(batch, return_distance=False)[:, 0]
        diff = batch.astype(np.float64) - reference[idx]
        nearest[start : start + len(batch)] = idx
        distances[start : start + len(batch)] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return distances, nearest


def quality_table(
    real_train_feats: np.ndarray,
    real_train_labels: np.ndarray,
    real_val_feats: np.ndarray,
    real_val_labels: np.ndarray,
    pool_feats: np.ndarray,
    pool_labels: np.ndarray,
    class_names: list[str],
    k: int = 3,
    match_sizes: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per class plus "all": the pool against real val, and real train against real
    val as the floor (what two real samples score). Val is the reference in both.

    FD and k-NN precision/recall depend on the sample size, so with `match_sizes` the larger
    of pool and train is subsampled (seeded) per class to the smaller's size (at least 2),
    and both are measured at the same n; ``n_pool``/``n_train`` say how many were used. A
    comparison with fewer than 2 samples on either side is NaN."""
    sets = {
        "train": (_features(real_train_feats, "real_train_feats"), np.asarray(real_train_labels).ravel()),
        "val": (_features(real_val_feats, "real_val_feats"), np.asarray(real_val_labels).ravel()),
        "pool": (_features(pool_feats, "pool_feats"), np.asarray(pool_labels).ravel()),
    }
    for name, (x, y) in sets.items():
        if len(x) != len(y):
            raise ValueError(f"{name}: {len(x)} feature rows but {len(y)} labels")
    if match_sizes:
        sets = _size_matched(sets, len(class_names), seed)
    rows = []
    for name, c in [*((name, c) for c, name in enumerate(class_names)), ("all", None)]:
        part = {s: x if c is None else x[y == c] for s, (x, y) in sets.items()}
        row = {"class": name, "n_pool": len(part["pool"]), "n_train": len(part["train"])}
        for s in ("pool", "train"):
            enough = len(part[s]) >= 2 and len(part["val"]) >= 2
            row[f"fd_{s}_vs_val"] = frechet_distance(part[s], part["val"]) if enough else np.nan
            p, r = precision_recall(part["val"], part[s], k=k) if enough else (np.nan, np.nan)
            row[f"precision_{s}"], row[f"recall_{s}"] = p, r
        rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _size_matched(sets: dict, n_classes: int, seed: int) -> dict:
    """Pool and train cut per class to n = max(2, min(pool count, train count))."""
    rng = np.random.default_rng(seed)
    keep = {"pool": [], "train": []}
    for c in range(n_classes):
        members = {s: np.flatnonzero(sets[s][1] == c) for s in keep}
        n = max(2, min(len(m) for m in members.values()))
        for s, idx in members.items():
            keep[s].append(np.sort(rng.choice(idx, n, replace=False)) if len(idx) > n else idx)
    out = dict(sets)
    for s, parts in keep.items():
        idx = np.concatenate(parts).astype(np.int64)
        out[s] = (sets[s][0][idx], sets[s][1][idx])
    return out


# ITU-R 601 luma, as PIL's convert("L"): the grey image texture is measured on.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
TEXTURE_COLUMNS = ["class", "n_pool", "n_real", "texture_pool", "texture_real", "texture_ratio",
                   "pixel_std_pool", "pixel_std_real", "pixel_std_ratio"]


def texture_energy(images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Per image, the mean absolute Laplacian of its grey image on a 0..1 scale: how much
    fine structure (nuclei, fibres, edges) it holds. A flat square scores 0; blur lowers it,
    speckle raises it."""
    images = _images(images, "images")
    out = np.empty(len(images), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        grey = images[start : start + batch_size].astype(np.float32) @ _LUMA / np.float32(255)
        lap = scipy.ndimage.laplace(grey, mode="mirror", axes=(1, 2))  # as autoencoder.laplacian
        out[start : start + len(grey)] = np.abs(lap).mean(axis=(1, 2))
    return out


def pixel_std(images: np.ndarray) -> np.ndarray:
    """Per image, the standard deviation of all its pixel values on a 0..1 scale (contrast)."""
    images = _images(images, "images")
    return images.reshape(len(images), -1).astype(np.float32).std(axis=1).astype(np.float64) / 255.0


def texture_table(pool_images: np.ndarray, pool_labels: np.ndarray, real_images: np.ndarray,
                  real_labels: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per class plus "all": the mean texture energy and per-image pixel std of the
    pool and of real images, and their ratios (pool / real; 1 is real-like, below 1 flatter,
    above 1 noisier). The "all" row pools every image of every class."""
    pool_labels, real_labels = np.asarray(pool_labels).ravel(), np.asarray(real_labels).ravel()
    measures = {
        "pool": (texture_energy(pool_images), pixel_std(pool_images), pool_labels),
        "real": (texture_energy(real_images), pixel_std(real_images), real_labels),
    }
    rows = []
    for name, c in [*((name, c) for c, name in enumerate(class_names)), ("all", None)]:
        row = {"class": name}
        for which, (tex, std, y) in measures.items():
            mask = np.ones(len(y), bool) if c is None else y == c
            row[f"n_{which}"] = int(mask.sum())
            row[f"texture_{which}"] = float(tex[mask].mean()) if mask.any() else np.nan
            row[f"pixel_std_{which}"] = float(std[mask].mean()) if mask.any() else np.nan
        row["texture_ratio"] = row["texture_pool"] / row["texture_real"] if row["texture_real"] else np.nan
        row["pixel_std_ratio"] = row["pixel_std_pool"] / row["pixel_std_real"] if row["pixel_std_real"] else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=TEXTURE_COLUMNS)


def class_consistency(
    pool_predictions: np.ndarray,
    pool_labels: np.ndarray,
    val_predictions: np.ndarray,
    val_labels: np.ndarray,
    class_names: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How often a classifier trained on real data recognises each class's pool images,
    next to its accuracy on real val images of that class (the ceiling a pool can hope
    for). Returns the table (one row per class and a "mean over classes" row, the
    unweighted mean) and the pool's confusion matrix (intended class x predicted class)."""
    ids = np.arange(len(class_names))
    rows = []
    for c, name in enumerate(class_names):
        in_pool, in_val = np.asarray(pool_labels) == c, np.asarray(val_labels) == c
        rows.append({
            "class": name,
            "n_pool": int(in_pool.sum()),
            "pool_accuracy": float((pool_predictions[in_pool] == c).mean()) if in_pool.any() else np.nan,
            "n_val": int(in_val.sum()),
            "val_accuracy": float((val_predictions[in_val] == c).mean()) if in_val.any() else np.nan,
        })
    table = pd.DataFrame(rows)
    mean = {"class": "mean over classes", "n_pool": int(table["n_pool"].sum()), "n_val": int(table["n_val"].sum()),
            "pool_accuracy": table["pool_accuracy"].mean(), "val_accuracy": table["val_accuracy"].mean()}
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    confusion = pd.DataFrame(confusion_matrix(pool_labels, pool_predictions, labels=ids),
                             index=pd.Index(class_names, name="intended"),
                             columns=pd.Index(class_names, name="predicted"))
    return table, confusion


def _pair(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, float_ok: bool = False):
    a, b = _features(a, name_a, float_ok), _features(b, name_b, float_ok)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def _features(x: np.ndarray, name: str, float_ok: bool = False) -> np.ndarray:
    """`x` as a 2-D float array: float64, or (with `float_ok`) any float dtype kept as is,
    so large pixel arrays are not doubled in memory."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    if float_ok and np.issubdtype(x.dtype, np.floating):
        return x
    return x.astype(np.float64, copy=False)


def _images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images
