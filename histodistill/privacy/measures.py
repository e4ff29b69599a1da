"""Is a shareable set safe to share? The distance statistics of the privacy audit (notebook 07);
the data-copying test's in `copying`, the membership attacks' in `membership`.

Every test compares the real train split (members: the images the generator learnt from)
with a real holdout that no audited model saw (non-members), and asks whether the audited
set, or a model trained on it, tells them apart:

    >>> measures.dcr_share(synthetic, train, holdout)          # 1. nearest real image: train or holdout?
    >>> memorisation.calibrated_near_copies(ratios, labels, thresholds)  # 2. near-copies, calibrated on unseen images

Each returns a dict with its statistic, threshold, interval or p-value and ``passed``. A
pass is evidence against one kind of leak at the power the set sizes allow, not a proof of
privacy: none of these is a differential-privacy guarantee. Distances are Euclidean, on
vectors the caller chooses (`pixel_vectors`, or features of a network that never saw the
real train split: `random_features`). The calibrated near-copy criterion (`copy_ratios`,
`copy_thresholds`, `calibrated_near_copies`, `pixel_vectors`) lives with the generator's
memorisation check (`generate.memorisation`), shared with notebook 04's privacy filter.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ..classifiers import convnet
from ..generate.memorisation import NEAR_COPY_NEIGHBOURS, copy_ratios
from ..generate.quality import nearest_neighbours

ALPHA = 0.05  # one-sided significance level of every test
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


