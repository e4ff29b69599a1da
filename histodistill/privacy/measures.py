"""Is a shareable set safe to share? The statistics of the privacy audit (notebook 07).

Every test compares the real train split (members: the images the generator learnt from)
with a real holdout that no audited model saw (non-members), and asks whether the audited
set, or a model trained on it, tells them apart:

    >>> measures.dcr_share(synthetic, train, holdout)          # 1. nearest real image: train or holdout?
    >>> memorisation.calibrated_near_copies(ratios, labels, thresholds)  # 2. near-copies, calibrated on unseen images
    >>> measures.copying_test(synthetic, measures.reference(train, holdout))  # 3. Meehan et al. 2020's C_T
    >>> measures.membership_auc(member_scores, holdout_scores) # 4-5. an attack's AUC, its interval, TPR at 1 % FPR

Each returns a dict with its statistic, threshold, interval or p-value and ``passed``. A
pass is evidence against one kind of leak at the power the set sizes allow, not a proof of
privacy: none of these is a differential-privacy guarantee. Distances are Euclidean, on
vectors the caller chooses (`pixel_vectors`, or features of a network that never saw the
real train split: `random_features`). The calibrated near-copy criterion (`copy_ratios`,
`copy_thresholds`, `calibrated_near_copies`, `pixel_vectors`) lives with the generator's
memorisation check (`generate.memorisation`), shared with notebook 04's privacy filter.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score, roc_curve

from ..classifiers import convnet, metrics
from ..generate.memorisation import NEAR_COPY_NEIGHBOURS, copy_ratios
from ..generate.quality import nearest_neighbours

ALPHA = 0.05  # one-sided significance level of every test
BOOT_CHUNK = 100  # bootstrap resamples weighed at once (100 x 20,000 counts: 16 MB)
# Carlini et al. 2023 call an image extracted when its distance to the nearest train image
# is under a third of its mean distance to the 50 nearest: far closer to one image than to
# the crowd around it. Kept as published, so counts compare with theirs.
NEAR_COPY_THRESHOLD = 1 / 3


# --- spaces ------------------------------------------------------------------------------


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


def by_class(labels: np.ndarray, dcr: dict, copies: dict, class_names: list[str],
             carlini: dict | None = None, unseen: dict | None = None) -> list[dict]:
    """Where in the set the distance tests' evidence sits: per class, the set's images, its
    DCR share (with its own binomial test and interval, from `dcr_share`'s distances) and its
    near-copies (``copies["flagged"]``: the calibrated test's, or Carlini's). With `carlini`
    (`near_copies`) also Carlini et al.'s count; with `unseen` (``labels``, ``ratios`` and
    nearest-train ``distances`` of real images no model trained on, and their
    `CopyThresholds` as ``thresholds``) the class's threshold, how many of its unseen real
    images fall under Carlini's fixed 1/3 (a class where they do beyond the calibrated
    quantile is *low-information*: near-uniform tiles such as background have a train image
    of almost the same colour whatever they are, so closeness there says little about
    memorisation), and C_T's comparison within the class: the Mann-Whitney z of the set's
    nearest-train distances against the class's unseen images' (negative: nearer train),
    with its one-sided p-value. Per-class p-values are not corrected for the number of
    classes: read them as a map of the evidence, the set's verdict is the whole-set test."""
    labels = np.asarray(labels)

    def mask(found: dict) -> np.ndarray:
        flagged = np.zeros(len(labels), dtype=bool)
        flagged[found["flagged"]] = True
        return flagged

    flagged = mask(copies)
    fixed = mask(carlini) if carlini is not None else None
    rows = []
    for c, name in enumerate(class_names):
        members = labels == c
        if not members.any():
            continue
        share = _share_test(dcr["to_train"][members], dcr["to_holdout"][members], dcr["threshold"])
        row = {"class": name, "images": int(members.sum()), "dcr_share": share["statistic"],
               "dcr_ci_low": share["ci_low"], "dcr_ci_high": share["ci_high"], "dcr_p_value": share["p_value"],
               "near_copies": int(flagged[members].sum())}
        if fixed is not None:
            row["carlini_near_copies"] = int(fixed[members].sum())
        if unseen is not None:
            mine = np.asarray(unseen["labels"]) == c
            under = float(np.mean(np.asarray(unseen["ratios"])[mine] < NEAR_COPY_THRESHOLD)) if mine.any() else np.nan
            row.update({"near_copy_threshold": float(unseen["thresholds"].thresholds[c]),
                        "unseen_under_carlini": under,
                        "low_information": bool(under > unseen["thresholds"].quantile),
                        **_class_c_t(dcr["to_train"][members], np.asarray(unseen["distances"])[mine])})
        rows.append(row)
    return rows


def _class_c_t(distances: np.ndarray, unseen_distances: np.ndarray) -> dict:
    """C_T's Mann-Whitney z within one class (set vs unseen nearest-train distances) and its
    one-sided p-value (NaN without unseen images)."""
    m, n = len(distances), len(unseen_distances)
    if not m or not n:
        return {"c_t_z": np.nan, "c_t_p_value": np.nan}
    u = stats.mannwhitneyu(distances, unseen_distances, alternative="two-sided").statistic
    z = float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
    return {"c_t_z": z, "c_t_p_value": float(stats.norm.cdf(z))}


# --- 2. near-copies --------------------------------------------------------------------------


def near_copies(synthetic: np.ndarray, train: np.ndarray, neighbours: int = NEAR_COPY_NEIGHBOURS,
                threshold: float = NEAR_COPY_THRESHOLD) -> dict:
    """Carlini et al. 2023's fixed rule: rows whose `copy_ratios` lie under `threshold` are
    near-copies; passes at zero. Uncalibrated: near-uniform images (background tiles) fall
    under 1/3 against a train split they were never part of, so the audit reads
    `calibrated_near_copies` and reports this count beside it, for comparison with the
    literature. Returns the ratios, the flagged rows and their nearest train rows, and
    every row's nearest train distance and index, for showing the pairs."""
    found = copy_ratios(synthetic, train, neighbours)
    flagged = np.flatnonzero(found["ratios"] < threshold)
    return {"statistic": int(len(flagged)), "n": int(len(found["ratios"])), "threshold": threshold,
            "passed": len(flagged) == 0, "flagged": flagged, "flagged_nearest": found["nearest_index"][flagged],
            **found}


# --- 3. the data-copying test C_T -----------------------------------------------------------


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


# --- reading a selected set against the same selection of unseen real images -------------------


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
