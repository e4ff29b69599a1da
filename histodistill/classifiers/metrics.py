"""Test-set metrics of a classifier, their mean ± std over training runs, and
confidence intervals from a bootstrap over runs and test images.

    >>> from histodistill.classifiers import metrics
    >>> m = metrics.evaluate(test_labels, probs)   # {"acc", "auc", "macro_f1", ...}
    >>> s = metrics.summarise([m_seed0, m_seed1, m_seed2])
    >>> metrics.format_mean_std(s["acc_mean"], s["acc_std"])
    '0.812 ± 0.013'
    >>> metrics.bootstrap_mean(probs, test_labels)                 # a row's mean with a 95 % interval
    >>> metrics.paired_bootstrap(probs_a, probs_b, test_labels)   # a - b with a 95 % interval

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
from scipy.stats import rankdata
from sklearn.metrics import f1_score

SUMMARY_METRICS = ("acc", "auc", "macro_f1")
METRIC_LABELS = (("acc", "ACC"), ("auc", "AUC"), ("macro_f1", "macro F1"))  # how tables and figures name them


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


def one_vs_rest_auc(ranks: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC from the scores' ranks (ties sharing their mean rank): the Mann-Whitney U of
    the positives over n_pos * n_neg, the share of (positive, negative) pairs ordered right,
    a tie counting one half. Equal to scikit-learn's `roc_auc_score`, which a table of many
    models called hundreds of times for a second of argument checking (tested against it)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


_ABSENT_SAID: set[tuple] = set()  # (absent classes, C, N) already warned about


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
    ranks = rankdata(p, axis=0)  # per column, ties sharing their mean rank
    for c in range(n_classes):
        positive = y == c
        if counts[c] == 0 or counts[c] == len(y):  # one-vs-rest AUC needs both sides
            per_class_auc.append(float("nan"))
        else:
            per_class_auc.append(one_vs_rest_auc(ranks[:, c], positive))
        per_class_acc.append(float((pred[positive] == c).mean()) if counts[c] else float("nan"))
    # (a class holding every row implies the others are absent.) Said once per evaluation
    # set: a table of many models evaluates the same split over and over, and Python's own
    # once-per-place rule does not hold when libraries touch the warning filters in between.
    said = (tuple(absent), n_classes, len(y))
    if absent and said not in _ABSENT_SAID:
        _ABSENT_SAID.add(said)
        warnings.warn(
            f"classes {absent} are absent from labels and have no one-vs-rest ROC AUC: "
            f"auc is NaN, as medmnist's getAUC gives with recent scikit-learn (said once for these "
            f"{len(y)} labels)",
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


def format_interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    """'0.812 [0.790, 0.833]': a mean and its interval rounded to `digits` decimals."""
    if digits < 0:
        raise ValueError(f"digits must be >= 0, not {digits}")
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of `scores` for the `positive` rows (bool, (N,)) with row i counted
    `weights[b, i]` times, for every weighting b at once (`weights` (B, N)); a bootstrap
    resample is a weighting by counts. The Mann-Whitney form, sum over positive i and
    negative j of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_pos W_neg), from one sort of
    the scores: what scikit-learn's `roc_auc_score` gives each resample (tested), without its
    milliseconds of argument checking per call. NaN where one side has no weight."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    neg_cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w[:, order] * ~positive[order], axis=1)], axis=1)
    below = neg_cum[:, np.searchsorted(ranked, scores[positive], "left")]
    at_or_below = neg_cum[:, np.searchsorted(ranked, scores[positive], "right")]
    wins = (w[:, positive] * (below + 0.5 * (at_or_below - below))).sum(1)
    n_pos, n_neg = w[:, positive].sum(1), w[:, ~positive].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)


def weighted_scores(labels, probabilities, weights: np.ndarray) -> dict[str, np.ndarray]:
    """`evaluate`'s acc, auc and macro_f1 with every test image counted `weights[b, i]` times,
    for many weightings b at once (the rows of `weights`, shape (B, N)): a bootstrap
    resample is a weighting by counts. Unit weights give `evaluate`'s values (tested).

    AUC per class is `weighted_auc`'s; a class with no weight on one side is NaN, and so is
    the mean, as in `evaluate`."""
    y, p = _check(labels, probabilities)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != len(y):
        raise ValueError(f"weights must be (B, {len(y)}), not {w.shape}")
    n_classes = p.shape[1]
    pred = p.argmax(1)
    total = w.sum(1)
    acc = w @ (pred == y) / total
    aucs, f1s, present = [], [], []
    for c in range(n_classes):
        pos, hit, called = (y == c), (pred == c) & (y == c), pred == c
        tp, n_pos, n_called = w @ hit, w @ pos, w @ called
        f1s.append(np.where(n_pos + n_called > 0, 2 * tp / np.maximum(n_pos + n_called, 1e-300), 0.0))
        present.append((n_pos + n_called) > 0)
        aucs.append(weighted_auc(p[:, c], pos, w))
    present = np.array(present)
    # scikit-learn's macro F1: the mean over classes present in labels or predictions.
    macro_f1 = (np.array(f1s) * present).sum(0) / np.maximum(present.sum(0), 1)
    return {"acc": acc, "auc": np.mean(aucs, axis=0), "macro_f1": macro_f1}


BOOTSTRAP_METHOD = ("paired bootstrap over runs (paired by seed) and test images (the same resample "
                    "for both rows), percentile interval")
ROW_BOOTSTRAP_METHOD = "bootstrap over runs and test images, percentile interval"


def _bootstrap(score, runs: int, n: int, n_boot: int, level: float, seed: int, keys) -> dict[str, dict]:
    """The mean over runs of a per-run statistic on the whole test set, and its percentile
    interval over `n_boot` resamples of the runs and the test images.

    `score(r, weights)` gives run r's statistic per metric for each row of `weights` (B, N),
    a bootstrap resample being a weighting of the test images by counts."""
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError("need 0 < level < 1 and n_boot >= 1")
    rng = np.random.default_rng(seed)
    image_weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    run_picks = rng.integers(0, runs, size=(n_boot, runs))
    full = np.ones((1, n))
    resampled = {k: np.empty((runs, n_boot)) for k in keys}
    point = {k: np.empty(runs) for k in keys}
    for r in range(runs):
        boot, whole = score(r, image_weights), score(r, full)
        for k in keys:
            resampled[k][r] = boot[k]
            point[k][r] = whole[k][0]
    out = {}
    for k in keys:
        means = resampled[k][run_picks, np.arange(n_boot)[:, None]].mean(1)  # (n_boot,)
        low, high = np.nanpercentile(means, [50 * (1 - level), 50 * (1 + level)])
        out[k] = {"mean": float(point[k].mean()), "low": float(low), "high": float(high), "n_runs": runs, "n_test": n}
    return out


def _runs_of(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or len(probs) == 0:
        raise ValueError(f"need probabilities as a (runs, images, classes) array, not shape {probs.shape}")
    return probs


def paired_bootstrap(probs_a: np.ndarray, probs_b: np.ndarray, labels, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0, keys=SUMMARY_METRICS) -> dict[str, dict]:
    """The difference a - b of each metric between two rows, with a confidence interval.

    `probs_a` and `probs_b` are (R, N, C): the test probabilities of R runs of each row,
    run r of one paired with run r of the other (same seed: same initialisation and
    batch order where the sets have equal size). The estimate is the mean over runs of
    metric(a_r) - metric(b_r) on the whole test set. Each of `n_boot` resamples draws R
    runs and N test images with replacement, the same for both rows, and recomputes that
    mean; the interval is the resamples' (1 - level)/2 and (1 + level)/2 percentiles. So
    it holds both sources of noise, the training runs and the finite test set.

    Returns {metric: {"diff", "low", "high", "n_runs", "n_test"}}."""
    a, b = _runs_of(probs_a), _runs_of(probs_b)
    if a.shape != b.shape:
        raise ValueError(f"need two (runs, images, classes) arrays of one shape, not {a.shape} and {b.shape}")

    def difference(r, weights):
        score_a, score_b = weighted_scores(labels, a[r], weights), weighted_scores(labels, b[r], weights)
        return {k: score_a[k] - score_b[k] for k in keys}

    out = _bootstrap(difference, a.shape[0], a.shape[1], n_boot, level, seed, keys)
    return {k: {"diff": v.pop("mean"), **v} for k, v in out.items()}


def bootstrap_mean(probs: np.ndarray, labels, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                   keys=SUMMARY_METRICS) -> dict[str, dict]:
    """One row's metrics with a confidence interval: the mean over its R runs (`probs`,
    (R, N, C) test probabilities) of each metric on the whole test set, and the percentile
    interval of that mean over `n_boot` resamples of the runs and the test images, as
    `paired_bootstrap` draws them. With one run, the interval holds the test set's noise only.

    Returns {metric: {"mean", "low", "high", "n_runs", "n_test"}}."""
    p = _runs_of(probs)
    return _bootstrap(lambda r, weights: weighted_scores(labels, p[r], weights), p.shape[0], p.shape[1],
                      n_boot, level, seed, keys)
