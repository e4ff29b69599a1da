"""Test-set metrics of a classifier, and their mean ± std over training runs (METHOD step 8).

    >>> from histodistill import metrics
    >>> m = metrics.evaluate(test_labels, probs)   # {"acc", "auc", "macro_f1", ...}
    >>> s = metrics.summarise([m_seed0, m_seed1, m_seed2])
    >>> metrics.format_mean_std(s["acc_mean"], s["acc_std"])
    '0.812 ± 0.013'

`acc` and `auc` are computed exactly as medmnist's `Evaluator` computes them for a
multi-class task (`medmnist.evaluator.getACC` / `getAUC`): accuracy of the argmax, and the
one-vs-rest ROC AUC of every class column averaged with equal weight over all columns.

A class absent from `labels` has no one-vs-rest ROC AUC (there is no positive example).
medmnist sums `roc_auc_score` over every column regardless, so its result depends on the
scikit-learn version: older versions raise a ValueError, recent ones (1.6+) warn and return
NaN, which makes the mean NaN. We match the recent behaviour on every version: that class's
AUC is NaN, so `auc` is NaN, and a warning names the absent classes. `per_class_auc` keeps
the defined values for a caller who wants `np.nanmean` instead; say so if you report it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

SUMMARY_METRICS = ("acc", "auc", "macro_f1")


def _check(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:  # medmnist's (N, 1) layout
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"labels must be (N,) or (N, 1), not {y.shape}")
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, n_classes) with n_classes >= 2, not {p.shape}")
    if len(y) == 0 or len(y) != len(p):
        raise ValueError(f"need one label per row of probabilities and at least one ({len(y)} vs {len(p)})")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be whole class ids")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1} (one column per class)")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    return y.astype(np.int64), p


def evaluate(labels, probabilities) -> dict:
    """Metrics of class scores `probabilities` (N, C) against integer `labels` (N,) or (N, 1).

    Returns a dict:
      acc           share of rows whose argmax is the label (medmnist's ACC)
      auc           mean over the C classes of the one-vs-rest ROC AUC (medmnist's AUC);
                    NaN if some class is absent from `labels` (see the module docstring)
      macro_f1      scikit-learn's f1_score(average="macro") of the argmax predictions:
                    unweighted mean over the classes present in labels or predictions
      per_class_acc list of C recalls (share of class c predicted as c); NaN for an absent class
      per_class_auc list of C one-vs-rest AUCs; NaN for an absent class
      n             number of rows
    Scores need not sum to one: only their order matters, as in medmnist."""
    y, p = _check(labels, probabilities)
    n_classes = p.shape[1]
    pred = p.argmax(1)
    counts = np.bincount(y, minlength=n_classes)
    absent = [c for c in range(n_classes) if counts[c] == 0]
    per_class_auc, per_class_acc = [], []
    for c in range(n_classes):
        positive = y == c
        if counts[c] == 0 or counts[c] == len(y):  # one-vs-rest AUC needs both sides
            per_class_auc.append(float("nan"))
        else:
            per_class_auc.append(float(roc_auc_score(positive.astype(float), p[:, c])))
        per_class_acc.append(float((pred[positive] == c).mean()) if counts[c] else float("nan"))
    if absent:  # (a class holding every row implies the others are absent)
        warnings.warn(
            f"classes {absent} are absent from labels and have no one-vs-rest ROC AUC: "
            "auc is NaN, as medmnist's getAUC gives with recent scikit-learn",
            stacklevel=2,
        )
    auc = float(sum(per_class_auc) / n_classes)  # a NaN term makes the mean NaN, like medmnist
    return dict(
        acc=float((pred == y).mean()),
        auc=auc,
        macro_f1=float(f1_score(y, pred, average="macro", zero_division=0.0)),
        per_class_acc=per_class_acc,
        per_class_auc=per_class_auc,
        n=int(len(y)),
    )


def summarise(runs: list[dict], keys=SUMMARY_METRICS) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single run) of each metric in
    `keys` over `runs` (one `evaluate` dict per training seed).

    Returns a flat dict: n_runs, then `<key>_mean` and `<key>_std` for each key. A NaN in
    any run makes that metric's mean and std NaN (nothing is silently dropped)."""
    runs = list(runs)
    if not runs:
        raise ValueError("summarise needs at least one run")
    out: dict = {"n_runs": len(runs)}
    for key in keys:
        missing = [i for i, run in enumerate(runs) if key not in run]
        if missing:
            raise ValueError(f"run(s) {missing} have no {key!r} (keys: {sorted(runs[missing[0]])})")
        values = np.array([float(run[key]) for run in runs], dtype=np.float64)
        out[f"{key}_mean"] = float(values.mean())
        if len(values) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
        else:
            out[f"{key}_std"] = float("nan") if math.isnan(values[0]) else 0.0
    return out


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """'0.812 ± 0.013': mean and std rounded to `digits` decimals."""
    if digits < 0:
        raise ValueError(f"digits must be >= 0, not {digits}")
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
