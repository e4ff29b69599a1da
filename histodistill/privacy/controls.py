"""Which sets the privacy audit compares, and how each row of its table is read.

    >>> sets = controls.audit_sets(up, dm_artifact, cfg)   # audited sets, positive and negative controls
    >>> table = controls.annotate(table, privacy_filter)    # why a row does not count in the verdict

Roles:
- audited: the distilled set, the whole pool, DM's set; they should pass.
- positive controls, which must fail: a random real train subset of the distilled set's
  size ("reference"), train images with light noise ("control"), and in `audit` the
  classifier trained on the real subset and a small denoiser overtrained on a few train
  images.
- negative controls, which must pass: val images no model saw, audited exactly as a
  synthetic set of the distilled set's size and class mix ("random unseen real"; its own
  images are left out of the holdout it is compared with), the generator's attack with val
  images on both sides, and the run's selection applied to val ("selected unseen real"):
  keeping the most central images biases any set towards the real data, and the distilled
  set's DCR share and C_T are read against this reference. A test that a negative control
  fails is *uncalibrated* and does not drive the verdict.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .. import cache
from ..classifiers import convnet, judge
from ..generate import stages
from ..select import distill, selection
from .config import PrivacyConfig
from ..evaluate import training_sets

AUDITED, REFERENCE, CONTROL, NEGATIVE = "audited", "reference", "control", "negative control"
DISTILLED = "distilled (InfoDist)"
RANDOM_UNSEEN, SELECTED_UNSEEN = "random unseen real (control)", "selected unseen real (control)"
GENERATOR, UNSEEN_GENERATOR = "the run's generator", "unseen vs unseen real (control)"
VERSUS_SELECTED = " vs selected unseen real"  # suffix of the tests reading a set against SELECTED_UNSEEN


@dataclasses.dataclass
class AuditSet:
    images: np.ndarray  # uint8 (N, S, S, C)
    labels: np.ndarray  # (N,)
    key: str  # the identity of what produced it (its cache key)
    role: str  # audited | reference | control | negative control
    members: np.ndarray | None = None  # indices into real train of the images it holds (reference, control)
    unseen: np.ndarray | None = None  # indices into val of the images it holds (negative controls)
    attacked: bool = True  # whether a classifier trained on it is attacked (the whole pool and copies are not)


def audit_sets(up, dm: cache.Artifact | None, cfg: PrivacyConfig) -> dict[str, AuditSet]:
    """The sets the audit compares, by name: notebook 04's distilled set, the whole pool,
    DM's set (run 0 of notebook 05; None leaves it out), a random real subset of the
    distilled set's size, the same number of train images with Gaussian noise of std
    `cfg.planted_noise` (in 0..255 units), and the two negative controls drawn from val
    (`unseen_sets`)."""
    chosen = training_sets.from_selection(up.select(), up.pool)
    pool_images, pool_labels, _ = stages.load_pool(up.pool)
    train = up.bundle.splits["train"]
    ipc = up.selection_cfg.ipc
    real = training_sets.random_real(up.bundle, ipc, cfg.seed)
    real_members = _indices_of(real.images, train.images)
    rng = np.random.default_rng(cfg.seed + 1)
    planted_idx = np.sort(rng.choice(len(train.images), size=len(chosen.labels), replace=False))
    noise = rng.normal(0.0, cfg.planted_noise, train.images[planted_idx].shape)
    planted = np.clip(train.images[planted_idx].astype(np.float64) + noise, 0, 255).round().astype(np.uint8)
    sets = {
        DISTILLED: AuditSet(chosen.images, chosen.labels, chosen.key, AUDITED),
        "whole pool": AuditSet(pool_images, pool_labels, up.pool.key, AUDITED, attacked=False),
    }
    if dm is not None:
        learnt = training_sets.from_dm(dm)
        sets["Distribution Matching"] = AuditSet(learnt.images, learnt.labels, learnt.key, AUDITED)
    sets["random real (reference)"] = AuditSet(real.images, real.labels, real.key, REFERENCE, real_members)
    sets["planted train copies (control)"] = AuditSet(planted, train.labels[planted_idx],
                                                      f"planted:{cfg.seed}:{cfg.planted_noise}", CONTROL, planted_idx,
                                                      attacked=False)
    sets.update(unseen_sets(up, np.bincount(chosen.labels, minlength=up.bundle.n_classes), cfg))
    return sets


def unseen_sets(up, counts: np.ndarray, cfg: PrivacyConfig) -> dict[str, AuditSet]:
    """The negative controls, made of val images (which no model trained on): `counts[c]`
    random images of each class c, and the run's selection (method, IPC, embedding, graph,
    seed of notebook 04) applied to val as its pool. Each leaves at least one val image of
    every class out, for the holdout it is compared with, so in a small val split a class
    may hold fewer images than the distilled set has (val is the unseen pool: 150 images in
    the demo, 10,004 in PathMNIST)."""
    val = up.bundle.splits["val"]
    available = np.bincount(val.labels, minlength=up.bundle.n_classes)
    rng = np.random.default_rng(cfg.seed + 5)
    picks = [rng.permutation(np.flatnonzero(val.labels == c))[:max(0, min(int(counts[c]), int(available[c]) - 1))]
             for c in range(up.bundle.n_classes)]
    random_idx = np.sort(np.concatenate(picks)).astype(np.int64)
    data = up.bundle.artifact.key
    sets = {RANDOM_UNSEEN: AuditSet(val.images[random_idx], val.labels[random_idx],
                                    cache.digest({"unseen": data, "counts": counts.tolist(), "seed": cfg.seed}),
                                    NEGATIVE, unseen=random_idx)}
    select_cfg = up.selection_cfg
    ipc = min(select_cfg.ipc, int(available.min()) - 1)
    if ipc < 1:
        print(f"[audit] no selected unseen control: val holds {int(available.min())} image(s) in its smallest class")
        return sets
    if select_cfg.embedding == "convnet":
        features = convnet.embed(judge.load_classifier(up.classifier), val.images)
    else:
        features = selection.umap_embedding(val.images, seed=select_cfg.seed)
    chosen = selection.select(select_cfg.method, features, val.labels.astype(np.int64), ipc, seed=select_cfg.seed,
                              **distill.method_params(select_cfg))
    selected_idx = np.sort(chosen.indices).astype(np.int64)
    key = cache.digest({"selected unseen": data, "classifier": up.classifier.key,
                        "selection": cache.to_dict(select_cfg), "ipc": ipc})
    sets[SELECTED_UNSEEN] = AuditSet(val.images[selected_idx], val.labels[selected_idx], key, NEGATIVE,
                                     unseen=selected_idx, attacked=False)
    return sets


def _indices_of(images: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Indices in `pool` of each of `images` (which are rows of it)."""
    lookup = {row.tobytes(): i for i, row in enumerate(pool)}
    return np.asarray([lookup[row.tobytes()] for row in images], dtype=np.int64)


UNCALIBRATED = "uncalibrated: a negative control (real images no model saw) fails it too"
UNCALIBRATED_SELECTED = "uncalibrated for a selected set: the same selection of unseen real images fails it too"
WITHIN_SELECTION = "within the selection's own bias: not detectably above the selected unseen real images"
BY_CONSTRUCTION = "passes by construction: notebook 04's privacy filter removed every image this test flags"


def annotate(table: pd.DataFrame, privacy_filter: bool = False) -> pd.DataFrame:
    """The ``reading`` of each row: why a row of an audited set does not count in the
    verdict, or "" when it does. A test (in a space) that the random unseen real images, or
    the generator scored on unseen images alone, fail is uncalibrated for every set; one
    that the selected unseen real images fail is uncalibrated for the distilled set, except
    DCR share and C_T, which are read against them instead: a failure there counts only when
    the distilled set lies detectably nearer train than that reference (its row
    "... vs selected unseen real"). With notebook 04's privacy filter on, the distilled
    set's near-copies in pixels pass by construction (the filter removed exactly what that
    test flags, at the same thresholds): evidence only comes from the other tests."""
    table = table.copy()
    negative = table[(table["role"] == NEGATIVE) & ~table["passed"].astype(bool)]
    broken = {(t, sp) for t, sp, name in negative[["test", "space", "set"]].itertuples(index=False)
              if name != SELECTED_UNSEEN}
    selection_bias = {(t, sp) for t, sp, name in negative[["test", "space", "set"]].itertuples(index=False)
                      if name == SELECTED_UNSEEN}
    versus = {(t[: -len(VERSUS_SELECTED)], sp): bool(ok) for t, sp, ok in
              table.loc[table["test"].str.endswith(VERSUS_SELECTED), ["test", "space", "passed"]].itertuples(index=False)}

    def reading(row) -> str:
        if row["role"] != AUDITED:
            return ""
        key = (row["test"], row["space"])
        if key in broken:
            return UNCALIBRATED
        if row["set"] != DISTILLED:
            return ""
        if privacy_filter and key == ("near-copies", "pixels"):
            return BY_CONSTRUCTION
        if row["test"].endswith(VERSUS_SELECTED):
            return "the reference of the plain test's row, which counts in the verdict through it"
        if key in versus:
            return "" if row["passed"] or not versus[key] else WITHIN_SELECTION
        if key in selection_bias:
            return UNCALIBRATED_SELECTED
        return ""

    table["reading"] = table.apply(reading, axis=1) if len(table) else []
    return table


def half_within_class(labels: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask picking half of each class's rows (rounded down), seeded."""
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        half[rows[: len(rows) // 2]] = True
    return half


def selection_note(pool_labels: np.ndarray, val_labels: np.ndarray, sets: dict[str, AuditSet]) -> str:
    """How strongly the distilled set and the selected unseen control were each selected
    (images kept per class out of the images offered): the reference measures the bias of
    a selection as strong as its own, so a weaker one (a small val split) understates the
    distilled set's."""
    if SELECTED_UNSEEN not in sets:
        return "no selected unseen control (val is too small)"

    def share(kept: np.ndarray, offered: np.ndarray) -> float:
        present = np.unique(kept)
        return float(np.mean(np.bincount(kept)[present] / np.bincount(offered)[present]))

    distilled, control = share(sets[DISTILLED].labels, pool_labels), share(sets[SELECTED_UNSEEN].labels, val_labels)
    text = (f"the distilled set keeps {distilled:.1%} of the pool per class, the selected unseen control "
            f"{control:.1%} of val")
    if control > 2 * distilled:
        text += (": a weaker selection, so the control understates the bias the distilled set's selection adds "
                 "and reading against it is conservative")
    return text


def member_sample(n_train: int, cfg: PrivacyConfig) -> np.ndarray:
    """Sorted indices of the train images the membership attacks score as members: all of
    them, or a seeded random `cfg.max_members` of them. Scoring all of PathMNIST's 89,996
    costs hours of denoiser passes on a CPU, and the interval of an attack's AUC is bounded
    by the smaller side, the 10,004 non-members (val), anyway."""
    if n_train <= cfg.max_members:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(cfg.seed + 4).choice(n_train, size=cfg.max_members, replace=False))


def test_row(test, name, role, space, result, n, expected, **extra) -> dict:
    """One row of the audit's table: a test's result on a set, and whether it should pass."""
    return {"test": test, "set": name, "role": role, "space": space, "statistic": result["statistic"],
            "threshold": result["threshold"], "p_value": result.get("p_value", np.nan),
            "ci_low": result.get("ci_low", np.nan), "ci_high": result.get("ci_high", np.nan),
            "tpr_at_1pct_fpr": result.get("tpr_at_1pct_fpr", np.nan), "n": n, "passed": result["passed"],
            "expected": expected, **extra}


def expected_outcome(role: str) -> str:
    """Audited sets and negative controls should pass a test; positive controls should fail it."""
    return "pass" if role in (AUDITED, NEGATIVE) else "fail"
