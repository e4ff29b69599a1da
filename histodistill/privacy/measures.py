"""Is a shareable set safe to share? The statistics of the privacy audit (notebook 07).

Every test compares the real train split (members: the images the generator learnt from)
with a real holdout that no audited model saw (non-members), and asks whether the audited
set, or a model trained on it, tells them apart:

    >>> measures.dcr_share(synthetic, train, holdout)          # 1. nearest real image: train or holdout?
    >>> measures.near_copies(synthetic, train)                 # 2. Carlini et al. 2023's relative distance
    >>> measures.copying_test(synthetic, measures.reference(train, holdout))  # 3. Meehan et al. 2020's C_T
    >>> measures.membership_auc(member_scores, holdout_scores) # 4-5. an attack's AUC, its interval, TPR at 1 % FPR

Each returns a dict with its statistic, threshold, interval or p-value and ``passed``. A
pass is evidence against one kind of leak at the power the set sizes allow, not a proof of
privacy: none of these is a differential-privacy guarantee. Distances are Euclidean, on
vectors the caller chooses (`pixel_vectors`, or features of a network that never saw the
real train split: `random_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import NearestNeighbors

from ..classifiers import convnet, metrics
from ..generate.quality import nearest_neighbours

ALPHA = 0.05  # one-sided significance level of every test
BOOT_CHUNK = 100  # bootstrap resamples weighed at once (100 x 20,000 counts: 16 MB)
NEAR_COPY_NEIGHBOURS = 50  # Carlini et al. 2023: the 50 nearest train images
# Carlini et al. 2023 call an image extracted when its distance to the nearest train image
# is under a third of its mean distance to the 50 nearest: far closer to one image than to
# the crowd around it. Kept as published, so counts compare with theirs.
NEAR_COPY_THRESHOLD = 1 / 3


# --- spaces ------------------------------------------------------------------------------


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, S, S, C) as float32 rows in 0..1."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, S, S, C), not {images.shape}")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def random_features(images: np.ndarray, reference: np.ndarray, seed: int = 0, width: int = 128) -> np.ndarray:
    """Embeddings by a randomly initialised ConvNet (seeded), normalised with `reference`'s
    channel statistics. A network trained on the real train split (the judge) would place
    train images closer to each other than holdout images and so bias every train-vs-holdout
    distance; a random network saw nothing, and its features still capture colour and
    texture statistics (Distribution Matching relies on the same property)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = convnet.ConvNet(n_classes=2, image_size=images.shape[1], width=width)
    mean, std = convnet.channel_stats(reference)
    model.mean.copy_(torch.from_numpy(mean))
    model.std.copy_(torch.from_numpy(std))
    return convnet.embed(model.eval(), images)


# --- 1. distance to closest record ---------------------------------------------------------


def dcr_share(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray) -> dict:
    """Share of synthetic rows whose nearest real row is a train row rather than a holdout
    row. A row drawn from the data distribution without regard to train is as likely to land
    next to any real row, so under no leak the share is n_train / (n_train + n_holdout)
    (0.5 at equal sizes; ``threshold``). All of train is used rather than a subset of the
    holdout's size: a subset would hide most copies of the train rows it leaves out (a set of
    pure copies would score about 0.62 instead of 1 against a quarter of train). Ties (equal
    distances) are left out, as in a sign test. Passes unless the share is significantly
    above the null share (one-sided exact binomial test at `ALPHA`); the interval is the
    Clopper-Pearson 95 % interval of the share."""
    synthetic, train, holdout = (np.asarray(a, dtype=np.float32) for a in (synthetic, train, holdout))
    if len(holdout) == 0 or len(train) == 0:
        raise ValueError("need train and holdout rows")
    to_train, _ = nearest_neighbours(synthetic, train)
    to_holdout, _ = nearest_neighbours(synthetic, holdout)
    null = len(train) / (len(train) + len(holdout))
    result = _share_test(to_train, to_holdout, null)
    if result["n"] == 0:
        raise ValueError("every synthetic row is as close to train as to holdout: no decision possible")
    return {**result, "to_train": to_train, "to_holdout": to_holdout}


def _share_test(to_train: np.ndarray, to_holdout: np.ndarray, null: float) -> dict:
    """The DCR share of rows with these nearest distances, its exact binomial test against
    `null` and Clopper-Pearson interval (ties left out; NaN statistic when nothing is decided)."""
    decided = to_train != to_holdout
    k, n = int(np.count_nonzero(to_train[decided] < to_holdout[decided])), int(decided.sum())
    if n == 0:
        return {"statistic": np.nan, "n": 0, "ties": int(len(to_train)), "p_value": np.nan, "ci_low": np.nan,
                "ci_high": np.nan, "threshold": null, "passed": True}
    test = stats.binomtest(k, n, null, alternative="greater")
    interval = test.proportion_ci(confidence_level=0.95, method="exact")
    return {"statistic": k / n, "n": n, "ties": int(len(to_train) - n), "p_value": float(test.pvalue),
            "ci_low": float(interval.low), "ci_high": float(interval.high), "threshold": null,
            "passed": bool(test.pvalue >= ALPHA)}


def by_class(labels: np.ndarray, dcr: dict, copies: dict, class_names: list[str]) -> list[dict]:
    """Where in the set the distance tests' evidence sits: per class, the set's images, its
    DCR share (with its own binomial test and interval, from `dcr_share`'s distances) and its
    near-copies (from `near_copies`). A failure carried by one class reads differently from
    one spread over all: near-uniform images (background squares) have close neighbours in
    any sample. Per-class p-values are not corrected for the number of classes: read them as
    a map of the evidence, the set's verdict is the whole-set test."""
    labels = np.asarray(labels)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[copies["flagged"]] = True
    rows = []
    for c, name in enumerate(class_names):
        members = labels == c
        if not members.any():
            continue
        share = _share_test(dcr["to_train"][members], dcr["to_holdout"][members], dcr["threshold"])
        rows.append({"class": name, "images": int(members.sum()), "dcr_share": share["statistic"],
                     "dcr_ci_low": share["ci_low"], "dcr_ci_high": share["ci_high"], "dcr_p_value": share["p_value"],
                     "near_copies": int(flagged[members].sum())})
    return rows


# --- 2. near-copies --------------------------------------------------------------------------


def near_copies(synthetic: np.ndarray, train: np.ndarray, neighbours: int = NEAR_COPY_NEIGHBOURS,
                threshold: float = NEAR_COPY_THRESHOLD) -> dict:
    """Carlini et al. 2023's test: each synthetic row's distance to its nearest train row
    over its mean distance to its `neighbours` nearest train rows (the nearest among them);
    rows under `threshold` are near-copies. Passes at zero. Returns the ratios, the flagged
    rows and their nearest train rows, and every row's nearest train distance and index,
    for showing the pairs."""
    synthetic, train = np.asarray(synthetic, dtype=np.float32), np.asarray(train, dtype=np.float32)
    k = min(neighbours, len(train))
    distances = NearestNeighbors(n_neighbors=k).fit(train).kneighbors(synthetic)[0]
    nearest, nearest_index = nearest_neighbours(synthetic, train)  # exact (an exact copy is 0, not ~1e-4)
    distances[:, 0] = nearest
    crowd = distances.mean(axis=1)
    ratios = np.divide(nearest, crowd, out=np.zeros_like(nearest), where=crowd > 0)
    flagged = np.flatnonzero(ratios < threshold)
    return {"statistic": int(len(flagged)), "n": int(len(synthetic)), "threshold": threshold, "neighbours": k,
            "passed": len(flagged) == 0, "ratios": ratios, "flagged": flagged,
            "flagged_nearest": nearest_index[flagged], "nearest": nearest, "nearest_index": nearest_index}


# --- 3. the data-copying test C_T -----------------------------------------------------------


def cut_into_cells(train: np.ndarray, cells: int = 5, seed: int = 0) -> KMeans:
    """The k-means cells of train that C_T compares distances in (`copying_test`)."""
    train = np.asarray(train, dtype=np.float32)
    return KMeans(n_clusters=min(cells, len(train)), n_init=10, random_state=seed).fit(train)


@dataclass(frozen=True)
class Reference:
    """The real rows C_T compares every audited set with, in one space, and what it needs of
    them: each holdout row's distance to its nearest train row and train's k-means cells.
    Made once per space (`reference`) and shared by every audited set: at full size the
    holdout's distances are 10,004 rows against 89,996 in 2,352 pixel dimensions, and the
    k-means fit is of all 89,996 train rows."""

    train: np.ndarray
    holdout: np.ndarray
    holdout_distances: np.ndarray
    cells: KMeans


def reference(train: np.ndarray, holdout: np.ndarray, cells: int = 5, seed: int = 0) -> Reference:
    """`Reference` of these train and holdout rows, with train cut into `cells` (seeded)."""
    train, holdout = np.asarray(train, dtype=np.float32), np.asarray(holdout, dtype=np.float32)
    return Reference(train, holdout, nearest_neighbours(holdout, train)[0], cut_into_cells(train, cells, seed))


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
    synthetic, holdout = np.asarray(synthetic, dtype=np.float32), ref.holdout
    cells = ref.cells.n_clusters
    synth_cell, hold_cell = ref.cells.predict(synthetic), ref.cells.predict(holdout)
    synth_dist = (nearest_neighbours(synthetic, ref.train)[0] if synthetic_distances is None
                  else np.asarray(synthetic_distances))
    hold_dist = ref.holdout_distances
    if len(synth_dist) != len(synthetic):
        raise ValueError("need one given distance per synthetic row")
    z_scores, weights = [], []
    for cell in range(cells):
        q, p = synth_dist[synth_cell == cell], hold_dist[hold_cell == cell]
        if len(q) < max(1, min_share * len(synthetic)) or len(p) == 0:
            continue
        m, n = len(q), len(p)
        u = stats.mannwhitneyu(q, p, alternative="two-sided").statistic  # pairs with q > p (ties 1/2)
        z_scores.append((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
        weights.append(n / len(holdout))
    if not z_scores:
        raise ValueError("no cell holds enough synthetic and holdout rows; lower `cells` or `min_share`")
    w = np.asarray(weights) / np.sum(weights)
    c_t = float(np.dot(w, z_scores))
    z = c_t / float(np.sqrt(np.sum(w**2)))
    p_value = float(stats.norm.cdf(z))
    return {"statistic": c_t, "z": z, "p_value": p_value, "threshold": 0.0, "cells_used": len(z_scores),
            "cells": cells, "passed": bool(p_value >= ALPHA)}


# --- 4-5. membership inference ---------------------------------------------------------------


def membership_auc(member_scores: np.ndarray, holdout_scores: np.ndarray, n_boot: int = 2000,
                   seed: int = 0) -> dict:
    """An attack's success at telling members from holdout images by its scores (higher:
    "member"): ROC AUC with a percentile bootstrap 95 % interval (members and holdout
    resampled separately), and the true-positive rate at a false-positive rate of at most
    1 % (Carlini et al. 2022's measure of confident attacks; with N holdout images the
    smallest non-zero FPR is 1/N, so for N < 100 it is the TPR at zero FPR). Passes when the
    interval holds 0.5 or lies below it (no detectable advantage)."""
    members, holdout = np.asarray(member_scores, float), np.asarray(holdout_scores, float)
    if len(members) == 0 or len(holdout) == 0:
        raise ValueError("need member and holdout scores")
    labels = np.r_[np.ones(len(members)), np.zeros(len(holdout))]
    scores = np.r_[members, holdout]
    auc = float(roc_auc_score(labels, scores))
    rng = np.random.default_rng(seed)
    n_members, n_holdout = len(members), len(holdout)
    boots = []
    for start in range(0, n_boot, BOOT_CHUNK):  # resamples as counts, a chunk at a time (memory)
        counts = []
        for _ in range(min(BOOT_CHUNK, n_boot - start)):
            m = np.bincount(rng.integers(0, n_members, n_members), minlength=n_members)
            h = np.bincount(rng.integers(0, n_holdout, n_holdout), minlength=n_holdout)
            counts.append(np.r_[m, h])
        boots.append(metrics.weighted_auc(scores, labels == 1, np.stack(counts)))
    low, high = np.percentile(np.concatenate(boots), [2.5, 97.5])
    fpr, tpr, _ = roc_curve(labels, scores)
    return {"statistic": auc, "ci_low": float(low), "ci_high": float(high), "threshold": 0.5,
            "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()), "passed": bool(low <= 0.5),
            "n_members": int(len(members)), "n_holdout": int(len(holdout)), "fpr": fpr, "tpr": tpr}


def loss_scores(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The loss attack's score (Yeom et al. 2018): minus the cross-entropy of each image's
    true class, so images the model fits better score higher."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.log(np.clip(p[np.arange(len(p)), np.asarray(labels)], 1e-12, 1.0))


def logit_confidence(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of the true class: the scaled confidence LiRA models as Gaussian."""
    p = np.clip(np.asarray(probabilities, np.float64)[np.arange(len(labels)), np.asarray(labels)], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def reference_scores(target: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The offline LiRA score (Carlini et al. 2022): how far above the reference ("out")
    models' confidences in the same image the target model's lies, in standard deviations of
    a Gaussian fitted per image. `target` (N,), `references` (K, N) logit confidences; K >= 2.
    Calibrating per image removes what makes an image easy for any model, leaving what the
    target model learnt from that very image."""
    references = np.asarray(references, np.float64)
    if references.ndim != 2 or len(references) < 2:
        raise ValueError("need the confidences of at least two reference models, (K, N)")
    mean, std = references.mean(axis=0), references.std(axis=0, ddof=1)
    return (np.asarray(target, np.float64) - mean) / np.maximum(std, 1e-6)
