"""Membership inference, the audit's tests 4-5: does a model trained on the audited set (or the
generator) tell the real train images it learnt from from real images it never saw?

    >>> membership.membership_auc(member_scores, holdout_scores)   # AUC, its interval, TPR at 1 % FPR
    >>> membership.loss_scores(probabilities, labels)              # the loss attack's scores
    >>> membership.reference_scores(target, references)            # offline LiRA, per-image calibration

A pass (the AUC's interval holds 0.5 or lies below it) is evidence against this kind of leak
at the power the set sizes allow, not a proof of privacy.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ..classifiers import metrics


BOOT_CHUNK = 100  # bootstrap resamples weighed at once (100 x 20,000 counts: 16 MB)


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
