"""The privacy audit of notebook 07, as one cached stage: every test of `measures` on every
set `controls.audit_sets` makes (audited sets, positive controls that show each test can
fail, negative controls that show it can pass); the verdict and the data card: `report`.

    >>> sets = controls.audit_sets(up, dm_artifact, cfg)     # audited sets and every control
    >>> artifact = audit.run_audit(cfg, up, sets, recipe)    # cached: audit.csv and the curves behind the figures
    >>> table, by_class = audit.load_table(artifact), audit.load_by_class(artifact)

Members are the real train split (what the generator learnt from); non-members are the
real **val** split, which no audited model trained on: the classifiers trained here choose
their checkpoint on pool images, not on val, and the generator never trained on val. The
test split is not read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .. import cache, workers
from ..classifiers import convnet, training
from ..classifiers.config import DownstreamConfig
from ..generate import memorisation, stages
from . import copying, measures, membership
from .config import PrivacyConfig
from .controls import (AUDITED, CONTROL, DISTILLED, REFERENCE, SELECTED_UNSEEN, VERSUS_SELECTED, AuditSet, annotate,
                       expected_outcome, member_sample, test_row)
from . import generator_attack

VERSION = 6  # bump when what the audit writes changes: a new key, so a rebuild
TABLE = "audit.csv"
BY_CLASS = "by_class.csv"
CURVES = "curves.npz"
COLUMNS = ["test", "set", "role", "space", "statistic", "threshold", "p_value", "ci_low", "ci_high",
           "tpr_at_1pct_fpr", "n", "passed", "expected", "carlini_near_copies", "reading"]
BY_CLASS_COLUMNS = ["set", "role", "space", "class", "images", "dcr_share", "dcr_ci_low", "dcr_ci_high",
                    "dcr_p_value", "near_copies", "carlini_near_copies", "near_copy_threshold",
                    "unseen_under_carlini", "low_information", "c_t_z", "c_t_p_value"]


def run_audit(cfg: PrivacyConfig, up, sets: dict[str, AuditSet], recipe: DownstreamConfig,
              progress: bool = True, cache_root: Path | None = None) -> cache.Artifact:
    """Every test on every set (cached by the configuration, the sets, the data and the
    generator): ``audit.csv`` (one row per test, set and space), ``by_class.csv`` (the
    distance tests per class) and ``curves.npz`` (ROC curves and distances for the figures)."""
    privacy_filter = up.selection_cfg.privacy_filter
    inputs = {"data": up.bundle.artifact.key, "diffusion": up.diffusion.key, "classifier": up.classifier.key,
              "sets": {name: s.key for name, s in sets.items()}, "recipe": cache.digest(dataclasses.asdict(recipe)),
              "privacy_filter": privacy_filter}

    def build(folder: Path) -> None:
        rows, curves, breakdown = [], {}, []
        # The control denoiser, the audit's longest piece of work, trains in a worker
        # while the distances and classifiers are computed.
        encoded = generator_attack.encode(up, cfg)
        control = generator_attack.start_control(encoded, cfg, up, progress)
        rows += distance_tests(sets, up.bundle, cfg, curves, progress, breakdown)
        rows += classifier_attacks(sets, up, recipe, cfg, curves, progress)
        rows += generator_attack.generator_attacks(up, encoded, control, cfg, curves, progress)
        table = annotate(pd.DataFrame(rows, columns=COLUMNS), privacy_filter)
        table.to_csv(folder / TABLE, index=False)
        pd.DataFrame(breakdown, columns=BY_CLASS_COLUMNS).to_csv(folder / BY_CLASS, index=False)
        np.savez_compressed(folder / CURVES, **curves)

    return cache.cached("audit", cfg, build, inputs, VERSION, cache_root)


def load_table(artifact: cache.Artifact) -> pd.DataFrame:
    return pd.read_csv(artifact.file(TABLE))


def load_by_class(artifact: cache.Artifact) -> pd.DataFrame:
    return pd.read_csv(artifact.file(BY_CLASS))


def load_curves(artifact: cache.Artifact) -> dict[str, np.ndarray]:
    with np.load(artifact.file(CURVES), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --- 1-3: distances ------------------------------------------------------------------------


def distance_tests(sets: dict[str, AuditSet], bundle, cfg: PrivacyConfig, curves: dict, progress: bool,
                   breakdown: list | None = None) -> list[dict]:
    """DCR share, near-copies (calibrated on val, with Carlini et al.'s fixed count beside)
    and C_T for every set, in pixels and in random-network features, each against val less
    the set's own images; and the distilled set's DCR share and C_T against the selected
    unseen real images (`copying.versus_selected_unseen`). The nearest-train distances
    and copy ratios of each set and of val go into `curves`, the per-class breakdown
    (`measures.by_class`) into `breakdown`."""
    train, holdout = bundle.splits["train"].images, bundle.splits["val"].images
    holdout_labels = bundle.splits["val"].labels
    spaces = {"pixels": memorisation.pixel_vectors,
              "random features": lambda x: measures.random_features(x, train, seed=cfg.seed)}
    rows = []
    for space, embed in spaces.items():
        train_v, holdout_v = embed(train), embed(holdout)
        ref = copying.reference(train_v, holdout_v, cfg.cells, cfg.seed)  # once per space, not per set
        unseen_ratios = memorisation.copy_ratios(holdout_v, train_v, cfg.neighbours)["ratios"]
        curves[f"holdout__{space}"], curves[f"holdout_ratio__{space}"] = ref.holdout_distances, unseen_ratios
        vectors_of = {}
        for name, s in sets.items():
            if progress:
                print(f"[audit] distances: {name}, {space}")
            vectors, expected = embed(s.images), expected_outcome(s.role)
            vectors_of[name] = vectors
            own = s.unseen if s.unseen is not None else np.zeros(0, dtype=np.int64)
            keep = np.setdiff1d(np.arange(len(holdout_v)), own)
            thresholds = memorisation.copy_thresholds(unseen_ratios[keep], holdout_labels[keep], bundle.n_classes,
                                                  cfg.near_copy_quantile)
            dcr = measures.dcr_share(vectors, train_v, holdout_v[keep])
            carlini = measures.near_copies(vectors, train_v, cfg.neighbours, cfg.near_copy_threshold)
            copies = memorisation.calibrated_near_copies(carlini["ratios"], s.labels, thresholds)
            c_t = copying.copying_test(vectors, ref.without(own), synthetic_distances=dcr["to_train"])
            rows += [test_row("DCR share", name, s.role, space, dcr, dcr["n"], expected),
                     test_row("near-copies", name, s.role, space, copies, copies["n"], expected,
                          carlini_near_copies=carlini["statistic"]),
                     test_row("data-copying C_T", name, s.role, space, c_t, len(vectors), expected)]
            if breakdown is not None:
                unseen = {"labels": holdout_labels[keep], "ratios": unseen_ratios[keep], "thresholds": thresholds,
                          "distances": ref.holdout_distances[keep]}
                breakdown += [{"set": name, "role": s.role, "space": space, **row}
                              for row in measures.by_class(s.labels, dcr, copies, bundle.class_names, carlini, unseen)]
            tag = f"{name}__{space}"
            curves[f"nearest__{tag}"], curves[f"copy_nearest__{tag}"] = carlini["nearest"], carlini["nearest_index"]
            curves[f"copy_ratio__{tag}"] = carlini["ratios"]
        if DISTILLED in sets and SELECTED_UNSEEN in sets:
            control = sets[SELECTED_UNSEEN]
            if progress:
                print(f"[audit] the distilled set against the selected unseen real images, {space}")
            against = copying.versus_selected_unseen(vectors_of[DISTILLED], sets[DISTILLED].labels,
                                                      vectors_of[SELECTED_UNSEEN], control.labels,
                                                      ref.without(control.unseen), cfg.n_boot, cfg.seed)
            rows += [test_row(test + VERSUS_SELECTED, DISTILLED, AUDITED, space, result, result["n"], "pass")
                     for test, result in against.items()]
    return rows


# --- 4: the classifier trained on a set ------------------------------------------------------


def classifier_attacks(sets: dict[str, AuditSet], up, recipe: DownstreamConfig, cfg: PrivacyConfig,
                       curves: dict, progress: bool) -> list[dict]:
    """Membership inference against a classifier trained on each set (those `attacked`: not
    the whole pool, the planted copies or the selected unseen images): the loss attack and
    the reference-model attack, members = the real train images (for the random real
    reference, the ones it holds), non-members = val (less a negative control's own images:
    its classifier trained on them).
    Every model chooses its checkpoint on pool images, so val stays unseen; the reference
    models train on random pool subsets of the distilled set's size, so they saw no real
    image."""
    bundle = up.bundle
    train, holdout = bundle.splits["train"], bundle.splits["val"]
    pool_images, pool_labels, _ = stages.load_pool(up.pool)
    rng = np.random.default_rng(cfg.seed + 2)
    select = np.sort(rng.choice(len(pool_images), size=min(len(pool_images), cfg.selection_images), replace=False))
    select_images, select_labels = pool_images[select], pool_labels[select]
    size = len(sets[DISTILLED].labels)

    # The train images any attack scores: the member sample, and the images the real sets hold.
    sample = member_sample(len(train.labels), cfg)
    held = [s.members for s in sets.values() if s.members is not None]
    scored = np.union1d(sample, np.concatenate(held)) if held else sample
    scored_images, scored_labels = train.images[scored], train.labels[scored]

    def confidences(model):
        probs_train, probs_holdout = convnet.predict(model, scored_images), convnet.predict(model, holdout.images)
        return (membership.logit_confidence(probs_train, scored_labels),
                membership.logit_confidence(probs_holdout, holdout.labels), probs_train, probs_holdout)

    # Every classifier first (the reference models on random pool subsets, then one per attacked
    # set), side by side in the model workers: each trains on one thread wherever it runs.
    jobs = []
    for i in range(cfg.reference_models):
        pick = np.random.default_rng(cfg.seed + 100 + i).choice(len(pool_images), size=size, replace=False)
        jobs.append((f"reference model {i + 1} of {cfg.reference_models}", pool_images[pick], pool_labels[pick],
                     recipe.seed + 100 + i))
    attacked = [name for name, s in sets.items() if s.attacked]
    jobs += [(f"classifier trained on {name}", sets[name].images, sets[name].labels, recipe.seed) for name in attacked]
    models = _train_all(jobs, select_images, select_labels, bundle.n_classes, recipe, progress)
    references = [confidences(model)[:2] for model in models[:cfg.reference_models]]
    references_train, references_holdout = (np.stack(side) for side in zip(*references))

    rows = []
    for name, model in zip(attacked, models[cfg.reference_models:]):
        s = sets[name]
        conf_train, conf_holdout, probs_train, probs_holdout = confidences(model)
        members = np.searchsorted(scored, s.members if s.members is not None else sample)  # rows of `scored`
        # Non-members: val, less the images the model trained on (a negative control's).
        unseen = np.setdiff1d(np.arange(len(holdout.labels)), s.unseen if s.unseen is not None else [])
        role = CONTROL if s.role == REFERENCE else s.role  # the real subset's model is the attack's control
        attacks = {
            "MIA classifier: loss": (membership.loss_scores(probs_train, scored_labels)[members],
                                     membership.loss_scores(probs_holdout, holdout.labels)[unseen]),
            "MIA classifier: reference models": (
                membership.reference_scores(conf_train, references_train)[members],
                membership.reference_scores(conf_holdout, references_holdout)[unseen]),
        }
        for test, (member_scores, holdout_scores) in attacks.items():
            result = membership.membership_auc(member_scores, holdout_scores, cfg.n_boot, cfg.seed)
            rows.append(test_row(test, name, role, "model", result, len(member_scores), expected_outcome(role)))
            curves[f"roc__{test}__{name}__fpr"], curves[f"roc__{test}__{name}__tpr"] = result["fpr"], result["tpr"]
    return rows


def _fit(images, labels, select_images, select_labels, n_classes: int, recipe: DownstreamConfig):
    """One audit classifier, its checkpoint chosen on pool images (a model worker's task)."""
    with workers.one_thread_on_cpu():
        model, _ = training.train_on_set(images, labels, select_images, select_labels, n_classes, recipe,
                                         progress=False)
    return model


def _train_all(jobs: list[tuple], select_images, select_labels, n_classes: int, recipe: DownstreamConfig,
               progress: bool) -> list:
    """The classifier of each (label, images, labels, seed) job, in order: in the model workers
    when it pays (`workers.count`), else here; the same weights either way."""
    n = workers.count(len(jobs), recipe.steps * len(jobs))
    if progress:
        where = f"{n} worker processes" if n > 1 else "this process"
        print(f"[audit] {len(jobs)} classifiers in {where}: " + "; ".join(label for label, *_ in jobs))
    args = [(images, labels, select_images, select_labels, n_classes, dataclasses.replace(recipe, seed=seed))
            for _, images, labels, seed in jobs]
    if n == 1:
        return [_fit(*a) for a in args]
    futures = [workers.submit(n, _fit, *a) for a in args]
    return [future.result() for future in futures]
